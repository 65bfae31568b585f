"""ReferenceNet: bank order and shapes, the block-name map to V-Express's pairing order, and the
`vexpress_reference_net` kind (strictness, config inference). Golden parity of `out` and every bank entry is in
the fixture driver (tests/svp/test_fixtures.py, vx_reference_net)."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk import interop
from jaxtalk.backbones.sd_unet import SD15_UNET_CONFIG, UNetConfig, num_transformer_blocks
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.reference_net import BankCollector, ReferenceNet, transformer_block_names

KIND = "vexpress_reference_net"


def _abstract(net: ReferenceNet, size: int | tuple[int, int], batch: int = 2):
    c = net.config
    h, w = (size, size) if isinstance(size, int) else size
    args = (jnp.zeros((batch, h, w, c.in_channels)), jnp.zeros((batch,)),
            jnp.zeros((batch, 1, c.cross_attention_dim)))
    variables = jax.eval_shape(lambda: net.init(jax.random.key(0, impl="rbg"), *args))
    out, bank = jax.eval_shape(lambda v: net.apply(v, *args), variables)
    return nn.meta.unbox(variables["params"]), out, bank


def _expected_bank_shapes(config: UNetConfig, size: int) -> list[tuple[int, int]]:
    n = len(config.block_out_channels)
    shapes = []
    for name in transformer_block_names(config):
        part = name.split(".")
        level = n - 1 if part[0] == "mid_block" else int(part[1])
        if part[0] == "up_blocks":
            level = n - 1 - level
        side = size // 2**level
        shapes.append((side * side, config.block_out_channels[level]))
    return shapes


def test_sd15_block_names_in_index_order():
    names = transformer_block_names(UNetConfig.from_diffusers(SD15_UNET_CONFIG))
    assert len(names) == 16
    assert names[:2] == ("down_blocks.0.attentions.0.transformer_blocks.0",
                         "down_blocks.0.attentions.1.transformer_blocks.0")
    assert names[6] == "mid_block.attentions.0.transformer_blocks.0"
    assert names[-1] == "up_blocks.3.attentions.2.transformer_blocks.0"


def test_bank_order_and_shapes_with_deep_transformers():
    """Two transformer layers per attention and uneven levels: one entry per block, in index order."""
    cfg = UNetConfig(block_out_channels=(16, 32, 32), layers_per_block=(1, 2, 1), transformer_layers_per_block=2,
                     num_attention_heads=2, cross_attention_dim=8, norm_num_groups=4,
                     down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    net = ReferenceNet(cfg)
    params, out, bank = _abstract(net, size=8)
    assert out.shape == (2, 8, 8, 4)
    names = transformer_block_names(cfg)
    assert len(bank) == len(names) == num_transformer_blocks(cfg)
    assert [b.shape for b in bank] == [(2, t, c) for t, c in _expected_bank_shapes(cfg, 8)]
    assert "mid_block.attentions.0.transformer_blocks.1" in names
    for name in names:  # every named block is a param subtree (torch name -> flax path)
        parts = name.split(".")
        path = [parts[0]] if parts[0] == "mid_block" else [f"{parts[0]}_{parts[1]}"]
        rest = parts[1:] if parts[0] == "mid_block" else parts[2:]
        node = params
        for seg in path + [f"{a}_{b}" for a, b in zip(rest[0::2], rest[1::2])]:
            node = node[seg]
        assert {"norm1", "attn1", "norm2", "attn2", "norm3", "ff"} <= set(node)
    assert "conv_norm_out" not in params


def test_fixture_bank_order_is_a_permutation_of_our_blocks(fixtures_dir):
    entry = json.loads((fixtures_dir / "svp" / "manifest.json").read_text())["vx_reference_net"]
    cfg = UNetConfig.from_diffusers(entry["constructor"])
    assert sorted(entry["bank_order"]) == sorted(transformer_block_names(cfg))
    z = np.load(fixtures_dir / "svp" / "vx_reference_net.npz")
    _, _, bank = _abstract(ReferenceNet(cfg), size=tuple(z["sample"].shape[2:]))
    names = transformer_block_names(cfg)
    for i, name in enumerate(entry["bank_order"]):
        assert bank[names.index(name)].shape == z[f"bank_{i:02d}"].shape, name


def test_kind_is_strict_and_infers_its_config(fixtures_dir):
    path = fixtures_dir / "svp" / "vx_reference_net.safetensors"
    state = read_state_dict(path)
    assert not any(k.startswith("conv_norm_out") for k in state)
    module, params = interop.from_torch(KIND, state)  # config inferred from shapes
    assert module.config.block_out_channels == (32, 32, 32, 32) and not module.config.use_conv_norm_out
    flat = traverse_util.flatten_dict(params)
    assert len(flat) == len(state) == 436
    with pytest.raises(interop.ConversionError, match="unexpected.*conv_norm_out"):
        interop.from_torch(KIND, {**state, "conv_norm_out.weight": np.ones(32, np.float32),
                                  "conv_norm_out.bias": np.zeros(32, np.float32)})
    with pytest.raises(interop.ConversionError, match="missing.*conv_in.bias"):
        interop.from_torch(KIND, {k: v for k, v in state.items() if k != "conv_in.bias"})
    with pytest.raises(interop.ConversionError, match="mis-shaped"):
        interop.from_torch(KIND, {**state, "conv_in.bias": np.zeros(5, np.float32)})


def test_bank_collector_is_strict():
    c = BankCollector(2)
    c.put(0, jnp.zeros(1))
    with pytest.raises(ValueError, match="written twice"):
        c.put(0, jnp.zeros(1))
    with pytest.raises(ValueError, match=r"\[1\] were never written"):
        c.bank()


@pytest.mark.slow
def test_full_size_reference_net():
    """SD1.5 size (abstract): 684 state-dict keys, 16 bank entries of a 64x64 latent."""
    cfg = UNetConfig.from_diffusers(SD15_UNET_CONFIG)
    params, out, bank = _abstract(ReferenceNet(cfg), size=64, batch=1)
    kind = interop.get_kind(KIND)
    keys = {kind.torch_key(k) for k in traverse_util.flatten_dict(params)}
    assert len(keys) == 684 and "conv_norm_out.weight" not in keys
    assert [b.shape for b in bank] == [(1, t, c) for t, c in _expected_bank_shapes(cfg, 64)]
    assert bank[0].shape == (1, 4096, 320) and bank[6].shape == (1, 64, 1280)
