"""AnimateDiff motion modules: diffusers MotionAdapter parity and layout, exact round trips, errors, hook use."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.unets.unet_motion_model import MotionAdapter

from jaxtalk import interop
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.motion_module import (
    MotionModules,
    VanillaTemporalModule,
    add_position_tables,
    sinusoidal_table,
)
from tests.parity import assert_close


def _key(seed: int) -> jax.Array:
    """An rbg key: XLA:CPU compiles threefry (partitionable) random bits very slowly, rbg in well under a second."""
    return jax.random.key(seed, impl="rbg")


KIND = "animatediff_motion_module"


@pytest.fixture(scope="module")
def adapter():
    """A tiny MotionAdapter with every weight re-randomised (proj_out and norms included)."""
    torch.manual_seed(0)
    a = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                      motion_norm_num_groups=8, motion_max_seq_length=12).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in a.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1] if p.ndim > 1 else p.shape[0]
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / fan_in ** 0.5)
    return a


@pytest.fixture(scope="module")
def converted(adapter):
    return interop.from_torch(KIND, adapter.state_dict(), config=dict(adapter.config))


@pytest.mark.parametrize("block,index,torch_path", [
    ("down_blocks_1", 0, "down_blocks.1.motion_modules.0"),
    ("mid_block", 0, "mid_block.motion_modules.0"),
    ("up_blocks_1", 1, "up_blocks.1.motion_modules.1"),
])
def test_matches_diffusers_animatediff_transformer3d(adapter, converted, block, index, torch_path):
    module, params = converted
    assert module.norm_over_frames, "a MotionAdapter config selects diffusers' clip-wide GroupNorm"
    ref_module = adapter.get_submodule(torch_path)
    c = ref_module.in_channels
    b, f, h, w = 2, 5, 3, 4
    x = np.random.default_rng(2).standard_normal((b * f, c, h, w)).astype(np.float32)
    with torch.no_grad():
        ref = ref_module(torch.from_numpy(x), num_frames=f).numpy()
    out = jax.jit(lambda p, x: module.apply({"params": p}, x, f, block, index))(params, x.transpose(0, 2, 3, 1))
    assert_close(np.asarray(out).transpose(0, 3, 1, 2), ref, name=f"diffusers {torch_path}")


def test_diffusers_layout_round_trip_is_exact(adapter, converted):
    _, params = converted
    sd = {k: v.numpy() for k, v in adapter.state_dict().items()}
    back = interop.to_torch(KIND, params, layout="diffusers")
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # the canonical (AnimateDiff) names: one pe table per attention block, temporal_transformer prefix
    canonical = interop.to_torch(KIND, params)
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe" \
        in canonical
    assert "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.ff_norm.weight" in canonical
    _, again = interop.from_torch(KIND, canonical, config={"num_attention_heads": 4, "norm_num_groups": 8})
    for k, v in interop.to_torch(KIND, again).items():
        np.testing.assert_array_equal(v, canonical[k], err_msg=k)


def test_container_layout_and_unet_hook_subtrees_agree(converted):
    module, params = converted
    assert module.block_out_channels == (32, 64) and module.down_layers == (1, 1) and module.up_layers == (2, 2)
    assert module.mid_layers == 1 and module.temporal_position_encoding_max_len == 12
    assert sorted(params) == ["down_blocks_0", "down_blocks_1", "mid_block", "up_blocks_0", "up_blocks_1"]
    # the SD UNet hook builds VanillaTemporalModule(name="motion_modules_j") with channels from the input
    hook = functools.partial(VanillaTemporalModule, num_attention_heads=4, norm_num_groups=8,
                             temporal_position_encoding_max_len=12, norm_over_frames=True)
    x = np.random.default_rng(3).standard_normal((6, 2, 2, 64)).astype(np.float32)
    sub = params["up_blocks_0"]["motion_modules_1"]
    fresh = jax.eval_shape(lambda: hook().init(_key(0), x, 3))["params"]
    assert jax.tree.structure(nn.meta.unbox(fresh)) == jax.tree.structure(sub)
    got = jax.jit(lambda p: hook().apply({"params": p}, x, 3))(sub)
    want = jax.jit(lambda p: module.apply({"params": p}, x, 3, "up_blocks_0", 1))(params)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_fixture_checkpoint_round_trip_and_missing_pe(fixtures_dir):
    sd = read_state_dict(fixtures_dir / "svp" / "ad_vanilla_temporal_module.safetensors")
    module, params = interop.from_torch("animatediff_temporal_module", sd)
    back = interop.to_torch("animatediff_temporal_module", params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)

    no_pe = {k: v for k, v in sd.items() if not k.endswith("pos_encoder.pe")}
    with pytest.raises(interop.ConversionError, match="add_position_tables"):
        interop.from_torch("animatediff_temporal_module", no_pe, config={"temporal_position_encoding": True})
    with pytest.raises(interop.ConversionError, match="2 unexpected: .*pos_encoder.pe"):
        interop.from_torch("animatediff_temporal_module", sd, config={"temporal_position_encoding": False})
    filled = add_position_tables(no_pe, max_len=24)
    _, p2 = interop.from_torch("animatediff_temporal_module", filled)
    pe = p2["temporal_transformer"]["transformer_blocks_0"]["attention_blocks_0"]["pos_encoder"]["pe"]
    ref = sd["temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"]
    np.testing.assert_allclose(pe, ref, atol=2e-6, rtol=0)


def test_strict_errors_for_foreign_keys(adapter):
    sd = {k: v.numpy() for k, v in adapter.state_dict().items()}
    sd["down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.scale"] = np.zeros(1, np.float32)
    with pytest.raises(interop.ConversionError, match="1 unexpected: .*attention_blocks.0.processor.scale"):
        interop.from_torch(KIND, sd, config=dict(adapter.config))
    with pytest.raises(interop.ConversionError, match="not under down_blocks"):
        interop.from_torch(KIND, {"conv_in.weight": np.zeros((4, 4, 3, 3), np.float32)})


def test_zero_init_is_identity_and_input_checks():
    m = VanillaTemporalModule(32, num_attention_heads=4, norm_num_groups=8, temporal_position_encoding_max_len=6)
    x = np.random.default_rng(4).standard_normal((2 * 4, 3, 3, 32)).astype(np.float32)
    v = jax.jit(m.init, static_argnums=2)(_key(0), x, 4)
    apply = jax.jit(m.apply, static_argnums=2)
    np.testing.assert_array_equal(np.asarray(apply(v, x, 4)), x)  # proj_out starts at zero
    with pytest.raises(ValueError, match="exceed the temporal position table"):
        apply(v, np.zeros((7, 3, 3, 32), np.float32), 7)
    with pytest.raises(ValueError, match="not batch x num_frames"):
        apply(v, x, 3)
    with pytest.raises(ValueError, match=r"\(B\*F, H, W, C\)"):
        apply(v, x.reshape(2, 4, 3, 3, 32), 4)


def test_bf16_compute_runs_close_to_float32():
    kw = dict(in_channels=32, num_attention_heads=4, norm_num_groups=8, zero_initialize=False)
    x = np.random.default_rng(5).standard_normal((6, 2, 2, 32)).astype(np.float32) * np.arange(1, 7)[:, None, None, None]
    frame = VanillaTemporalModule(**kw)
    v = jax.jit(frame.init, static_argnums=2)(_key(1), x, 3)
    run = lambda m, x: jax.jit(m.apply, static_argnums=2)(v, x, 3)
    a = np.asarray(run(frame, x))
    y = run(VanillaTemporalModule(**kw, dtype=jnp.bfloat16), x.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and np.isfinite(np.asarray(y, np.float32)).all()
    assert np.abs(np.asarray(y, np.float32) - a).max() < 0.1 * np.abs(a).max()


def test_sinusoidal_table_formula():
    t = sinusoidal_table(5, 8)
    p, i = 3, 2  # channel 2i = 4 is sin, 2i+1 = 5 is cos
    angle = p / 10000 ** (2 * i / 8)
    np.testing.assert_allclose(t[0, p, 4], np.sin(angle), rtol=1e-6)
    np.testing.assert_allclose(t[0, p, 5], np.cos(angle), rtol=1e-6)


def test_motion_modules_for_unet_layout():
    m = MotionModules.for_unet((32, 64, 64), layers_per_block=2, mid_block=False, num_attention_heads=4,
                               norm_num_groups=8)
    shapes = jax.eval_shape(lambda: m.init(_key(0), method=MotionModules.init_all))["params"]
    assert sorted(shapes) == [f"down_blocks_{i}" for i in range(3)] + [f"up_blocks_{i}" for i in range(3)]
    assert sorted(shapes["up_blocks_0"]) == ["motion_modules_0", "motion_modules_1", "motion_modules_2"]
    k = shapes["up_blocks_2"]["motion_modules_0"]["temporal_transformer"]["proj_in"]["kernel"]
    assert nn.meta.unbox(k).shape == (32, 32)
    with pytest.raises(ValueError, match="no motion modules in block 'mid_block'"):
        jax.eval_shape(lambda p: m.apply({"params": p}, np.zeros((1, 1, 1, 64), np.float32), 1, "mid_block", 0),
                       nn.meta.unbox(shapes))
