"""Typed configs: presets load, overrides apply, and bad values name their key."""

import dataclasses

import pytest

from jaxtalk import config


def test_demo_preset_loads_with_overrides():
    cfg = config.load("demo", overrides=["data.resolution=64", "mesh.tensor=2", "num_clips=2"])
    assert isinstance(cfg, config.DemoConfig)
    assert cfg.data.resolution == 64 and cfg.mesh.tensor == 2 and cfg.num_clips == 2


def test_unknown_key_names_itself():
    with pytest.raises(config.ConfigError, match=r"data\.resolutoin: unknown config key"):
        config.load("demo", overrides=["data.resolutoin=64"])


def test_wrong_type_names_key():
    with pytest.raises(config.ConfigError, match=r"data\.fps: expected a number"):
        config.load("demo", overrides=["data.fps=fast"])


def test_exponent_without_a_dot_is_a_number():
    """YAML 1.1 reads 5e-4 as a string; a float key takes it as the number a user means, an int key does not."""
    cfg = config.load("train_svp_stage3_tiny", overrides=["optimizer.learning_rate=5e-4", "expression_loss=2E+0"])
    assert cfg.optimizer.learning_rate == 5e-4 and cfg.expression_loss == 2.0
    with pytest.raises(config.ConfigError, match=r"data\.fps: expected a number"):
        config.load("demo", overrides=["data.fps=5e-4x"])
    with pytest.raises(config.ConfigError, match=r"train\.steps: expected an integer"):
        config.load("train_svp_stage3_tiny", overrides=["train.steps=1e3"])


def test_out_of_range_names_key():
    with pytest.raises(config.ConfigError, match=r"data\.resolution: 4096 is above the maximum 512"):
        config.load("demo", overrides=["data.resolution=4096"])


def test_validate_hook():
    with pytest.raises(config.ConfigError, match="at most one"):
        config.load("demo", overrides=["mesh.data=-1"])


@dataclasses.dataclass(frozen=True)
class _Unet:
    block_out_channels: tuple[int, ...] = (32, 32)
    heads: int | tuple[int, ...] = 2
    act: str = config.field("silu", choices=("silu", "gelu"))


@dataclasses.dataclass(frozen=True)
class _Root:
    unet: _Unet = dataclasses.field(default_factory=_Unet)


def test_list_override_becomes_tuple(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("unet: {heads: [1, 2]}\n")
    cfg = config.load(p, overrides=["unet.block_out_channels=[32,64]"], cls=_Root)
    assert cfg.unet.block_out_channels == (32, 64) and cfg.unet.heads == (1, 2)
    with pytest.raises(config.ConfigError, match=r"unet\.block_out_channels\[1\]: expected an integer"):
        config.load(p, overrides=["unet.block_out_channels=[32,x]"], cls=_Root)
    with pytest.raises(config.ConfigError, match=r"unet\.act: 'relu' is not one of"):
        config.load(p, overrides=["unet.act=relu"], cls=_Root)


def test_base_inheritance_and_save_roundtrip(tmp_path):
    (tmp_path / "base.yaml").write_text("system: demo\nnum_clips: 5\ndata: {fps: 30.0}\n")
    (tmp_path / "top.yaml").write_text("base: base.yaml\ndata: {resolution: 256}\n")
    cfg = config.load(tmp_path / "top.yaml")
    assert (cfg.num_clips, cfg.data.fps, cfg.data.resolution) == (5, 30.0, 256)
    saved = config.save(cfg, tmp_path / "resolved.yaml")
    assert config.load(saved) == cfg
