"""SD UNet: parity with diffusers UNet2DConditionModel, strict interop, config handling, hooks, sharding."""

from __future__ import annotations

import functools
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from flax import traverse_util
from jax.sharding import PartitionSpec as P
from safetensors.numpy import save_file

from jaxtalk import cli, interop, parallel
from jaxtalk.backbones.sd_unet import (
    SD15_UNET_CONFIG,
    UNet2DConditionModel,
    UNetConfig,
    num_transformer_blocks,
)
from jaxtalk.backbones.unet_blocks import BasicTransformerBlock
from jaxtalk.config import ConfigError
from jaxtalk.interop.checkpoint import load_converted, read_meta
from tests.backbones.sd_reference import nchw, nhwc, rerandomise, state_numpy
from tests.parity import assert_close

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# SD1-style: conv projections, CrossAttn + plain blocks, 2 transformer layers per block, non-default time
# embedding (sin first, freq_shift 1, time_embedding_dim 96), mid-block resnet output scale 1.5.
CONFIG_SD1 = dict(
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, norm_num_groups=8,
    cross_attention_dim=16, attention_head_dim=2, transformer_layers_per_block=2, mid_block_scale_factor=1.5,
    flip_sin_to_cos=False, freq_shift=1, time_embedding_dim=96,
)
# SD2-style: linear projections, per-block head counts, upcast attention, per-block layers; plus asymmetric
# downsample padding, centred input and an odd latent size (10 -> 5 -> 3) that forces sized upsampling.
# diffusers does not pass resnet_out_scale_factor to these block types: it must have no effect.
CONFIG_SD2 = dict(
    block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=[1, 2, 1],
    norm_num_groups=16, cross_attention_dim=24, attention_head_dim=[1, 2, 4], use_linear_projection=True,
    upcast_attention=True, downsample_padding=0, center_input_sample=True, resnet_out_scale_factor=2.0,
)


@functools.cache
def _reference(name: str):
    torch.manual_seed(0)
    config = {"sd1": CONFIG_SD1, "sd2": CONFIG_SD2}[name]
    model = rerandomise(TorchUNet(**config), seed=1)
    return model, state_numpy(model)


@functools.cache
def _converted(name: str):
    model, sd = _reference(name)
    return interop.from_torch("sd_unet", sd, config=dict(model.config))


def _inputs(config, batch=2, size=16, tokens=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, size, size, 4)).astype(np.float32)
    ctx = rng.standard_normal((batch, tokens, config["cross_attention_dim"])).astype(np.float32)
    return x, ctx


def _torch_forward(model, x, t, ctx):
    with torch.no_grad():
        return nhwc(model(nchw(x), torch.as_tensor(t), encoder_hidden_states=torch.from_numpy(ctx)).sample)


@pytest.mark.parametrize("name,size,timesteps", [
    ("sd1", 16, np.array([10.5, 731.25], np.float32)),   # float timesteps, one per row
    ("sd2", 10, np.float32(37.5)),                        # scalar timestep broadcast over the batch
])
def test_parity_with_diffusers(name, size, timesteps):
    model, _ = _reference(name)
    module, params = _converted(name)
    if name == "sd2":  # 100 tokens in chunks of 32 queries: the memory-bounded attention path
        module = module.clone(query_chunk_size=32)
    x, ctx = _inputs(dict(model.config), size=size)
    out = jax.jit(module.apply)({"params": params}, x, timesteps, ctx)
    assert_close(out, _torch_forward(model, x, timesteps, ctx), name=f"sd_unet[{name}]")


def test_parity_with_diffusers_when_every_stride_one_conv_is_a_patch_matmul(monkeypatch):
    """The CPU patch-matmul route (taken at SD1.5's wide, small levels) carries the whole UNet: thresholds lowered so
    every stride-1 convolution takes it, only the strided downsampling stays a convolution."""
    from jaxtalk.nn import layers

    monkeypatch.setattr(layers, "PATCH_MATMUL_MIN_CHANNELS", 1)
    monkeypatch.setattr(layers, "PATCH_MATMUL_MAX_PIXELS", 10 ** 6)
    model, _ = _reference("sd1")
    module, params = _converted("sd1")
    x, ctx = _inputs(dict(model.config), size=16)
    t = np.array([10.5, 731.25], np.float32)
    jaxpr = str(jax.make_jaxpr(module.apply)({"params": params}, x, t, ctx))
    assert jaxpr.count("conv_general_dilated[") == 1  # the one downsampler of CONFIG_SD1
    out = jax.jit(module.apply)({"params": params}, x, t, ctx)
    assert_close(out, _torch_forward(model, x, t, ctx), name="sd_unet[sd1, patch matmul]")


def test_bfloat16_compute_with_integer_timesteps():
    model, _ = _reference("sd1")
    module, params = _converted("sd1")
    x, ctx = _inputs(CONFIG_SD1, size=8)
    t = np.array([3, 999], np.int32)
    ref = _torch_forward(model, x, torch.tensor(t, dtype=torch.int64), ctx)
    half = module.clone(dtype=jnp.bfloat16)
    out = jax.jit(half.apply)({"params": params}, x, t, ctx)
    assert out.dtype == jnp.bfloat16
    err = np.max(np.abs(np.asarray(out, np.float32) - ref)) / np.max(np.abs(ref))
    assert err < 0.05, f"bfloat16 compute drifts too far from float32: {err:.3g}"


def test_roundtrip_is_exact():
    _, sd = _reference("sd2")
    _, params = _converted("sd2")
    back = interop.to_torch("sd_unet", params)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


def test_strict_conversion_errors():
    model, sd = _reference("sd1")
    config = dict(model.config)
    truncated = {k: v for k, v in sd.items()
                 if k not in ("mid_block.attentions.0.proj_in.weight", "up_blocks.1.resnets.0.conv1.bias")}
    with pytest.raises(interop.ConversionError) as e:
        interop.from_torch("sd_unet", truncated, config=config)
    msg = str(e.value)
    assert "2 missing" in msg and "mid_block.attentions.0.proj_in.weight" in msg
    assert "up_blocks.1.resnets.0.conv1.bias" in msg
    bad = dict(sd)
    bad["conv_in.weight"] = np.zeros((32, 4, 5, 5), np.float32)
    with pytest.raises(interop.ConversionError, match=r"1 mis-shaped: conv_in.weight \(32, 4, 5, 5\)"):
        interop.from_torch("sd_unet", bad, config=config)
    extra = {**sd, "down_blocks.0.attentions.0.transformer_blocks.0.attn1_5.to_q.weight": np.zeros((32, 32))}
    with pytest.raises(interop.ConversionError, match="1 unexpected: .*attn1_5.to_q.weight"):
        interop.from_torch("sd_unet", extra, config=config)


@pytest.mark.parametrize("key,value,match", [
    ("class_embed_type", "timestep", "class_embed_type='timestep' is not supported"),
    ("addition_embed_type", "text_time", "addition_embed_type='text_time' is not supported"),
    ("attention_type", "gated", "attention_type='gated' is not supported"),
    ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift='scale_shift' is not supported"),
    ("mid_block_type", "UNetMidBlock2D", "mid_block_type"),
    ("no_such_key", 1, "no_such_key: unknown config key"),
    ("attention_head_dim", [1, 2, 3], "num_attention_heads: 3 entries for 2 blocks"),
    ("norm_num_groups", 7, "not divisible by norm_num_groups=7"),
])
def test_config_rejects_unsupported(key, value, match):
    with pytest.raises(ConfigError, match=match):
        UNetConfig.from_diffusers({**CONFIG_SD1, key: value})


def test_config_roundtrip_through_diffusers_format():
    cfg = UNetConfig.from_diffusers(dict(_reference("sd2")[0].config))
    assert cfg.num_attention_heads == (1, 2, 4) and cfg.layers_per_block == (1, 2, 1)
    again = UNetConfig.from_diffusers(cfg.to_diffusers())
    assert again == cfg
    TorchUNet(**cfg.to_diffusers())  # diffusers accepts what we write
    sd15 = UNetConfig.from_diffusers(SD15_UNET_CONFIG)
    assert num_transformer_blocks(sd15) == 16 and sd15.num_attention_heads == (8, 8, 8, 8)


def test_config_inferred_from_shapes():
    torch.manual_seed(0)
    config = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, cross_attention_dim=16,
                  transformer_layers_per_block=2)
    model = TorchUNet(**config)
    module, _ = interop.from_torch("sd_unet", state_numpy(model), config=None)
    assert module.config == UNetConfig.from_diffusers(dict(model.config))
    _, linear = _reference("sd2")
    with pytest.raises(interop.ConversionError, match="head count cannot be\\s+inferred|linear projections"):
        interop.from_torch("sd_unet", linear, config=None)


def test_reference_net_variant_with_added_features():
    """V-Express's ReferenceNet sets conv_norm_out = None: out = conv_out(up output), no norm, no SiLU.

    `added_features` (e.g. V-Kps guider features) must act as a hook adding them to conv_in's output.
    """
    torch.manual_seed(0)
    model = rerandomise(TorchUNet(**CONFIG_SD1), seed=2)
    model.conv_norm_out = None
    model.conv_act = None
    sd = state_numpy(model)
    assert not any(k.startswith("conv_norm_out") for k in sd)
    x, ctx = _inputs(CONFIG_SD1, size=8)
    added = np.random.default_rng(5).standard_normal((2, 8, 8, 32)).astype(np.float32)
    hook = model.conv_in.register_forward_hook(lambda m, i, o: o + nchw(added))
    try:
        ref = _torch_forward(model, x, np.float32(500), ctx)
    finally:
        hook.remove()
    module, params = interop.from_torch("sd_unet", sd, config={**dict(model.config), "use_conv_norm_out": False})
    out = jax.jit(module.apply)({"params": params}, x, 500, ctx, added_features=added)
    assert_close(out, ref, name="sd_unet[no conv_norm_out, added_features]")
    inferred, _ = interop.from_torch("sd_unet", sd, config=None)
    assert inferred.config.use_conv_norm_out is False
    with pytest.raises(interop.ConversionError, match="2 missing: conv_norm_out.bias, conv_norm_out.weight"):
        interop.from_torch("sd_unet", sd, config=dict(model.config))


class _FrameMixer(nn.Module):
    """A stand-in temporal module: adds a learned multiple of the per-video frame mean (shows its placement)."""

    dtype: object = jnp.float32
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, h, num_frames):
        n, hh, ww, c = h.shape
        scale = self.param("scale", nn.initializers.constant(0.5), (c,), self.param_dtype)
        video = h.reshape(n // num_frames, num_frames, hh, ww, c)
        mix = jnp.broadcast_to(video.mean(axis=1, keepdims=True), video.shape).reshape(h.shape)
        return h + scale * mix


_SEEN: list[tuple[str, int]] = []


class _IndexedBlock(BasicTransformerBlock):
    """A video-style block: records (path, index) while tracing and adds its own entry of a per-block list."""

    @nn.compact
    def __call__(self, x, context, *, num_frames=1, offsets=None):
        _SEEN.append(("/".join(self.path), self.index))
        y = super().__call__(x, context, num_frames=num_frames)
        return y + offsets[self.index]


def test_composition_hooks_structure():
    """Placement of temporal modules, global block indices and block_kwargs plumbing (traced, not compiled)."""
    cfg = UNetConfig.from_diffusers(CONFIG_SD1)
    total = num_transformer_blocks(cfg)
    assert total == 2 + 2 + 4  # down0: 1 layer x 2, mid: 2, up1: 2 layers x 2
    unet = UNet2DConditionModel(cfg, transformer_block=_IndexedBlock, temporal_module=_FrameMixer)
    b, f = 2, 3
    x, ctx = jnp.zeros((b * f, 8, 8, 4)), jnp.zeros((b * f, 5, 16))
    offsets = [jnp.full((32 if i < 2 or i >= 4 else 64,), 0.01 * i) for i in range(total)]
    kwargs = dict(block_kwargs={"offsets": offsets}, num_frames=f)
    _SEEN.clear()
    variables = jax.eval_shape(lambda: unet.init(jax.random.key(0), x, jnp.array([7.0, 9.0]), ctx, **kwargs))
    flat = traverse_util.flatten_dict(nn.meta.unbox(variables["params"]), sep="/")
    motion = sorted({"/".join(k.split("/")[:2]) for k in flat if "motion_modules" in k})
    assert motion == ["down_blocks_0/motion_modules_0", "down_blocks_1/motion_modules_0",
                      "mid_block/motion_modules_0", "up_blocks_0/motion_modules_0", "up_blocks_0/motion_modules_1",
                      "up_blocks_1/motion_modules_0", "up_blocks_1/motion_modules_1"]
    expected = [
        "down_blocks_0/attentions_0/transformer_blocks_0", "down_blocks_0/attentions_0/transformer_blocks_1",
        "mid_block/attentions_0/transformer_blocks_0", "mid_block/attentions_0/transformer_blocks_1",
        "up_blocks_1/attentions_0/transformer_blocks_0", "up_blocks_1/attentions_0/transformer_blocks_1",
        "up_blocks_1/attentions_1/transformer_blocks_0", "up_blocks_1/attentions_1/transformer_blocks_1",
    ]
    assert _SEEN == [(path, i) for i, path in enumerate(expected)]
    low = unet.clone(temporal_resolutions=(1,), temporal_mid_block=False)
    params = jax.eval_shape(lambda: low.init(jax.random.key(0), x, 1.0, ctx, **kwargs))["params"]
    names = {k for k in traverse_util.flatten_dict(nn.meta.unbox(params), sep="/") if "motion_modules" in k}
    assert {n.split("/")[0] for n in names} == {"down_blocks_0", "up_blocks_1"}


def test_video_rows_are_grouped_per_clip():
    """B*F rows with per-clip timesteps / per-frame context equal running each clip on its own."""
    cfg = UNetConfig.from_diffusers(dict(
        block_out_channels=(16,), down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
        layers_per_block=1, norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2))
    unet = UNet2DConditionModel(cfg, temporal_module=_FrameMixer)
    b, f = 2, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b * f, 4, 4, 4)).astype(np.float32)
    ctx = rng.standard_normal((b * f, 3, 8)).astype(np.float32)
    t = np.array([7.0, 900.0], np.float32)
    apply = jax.jit(unet.apply, static_argnames="num_frames")
    init = jax.jit(functools.partial(unet.init, num_frames=f))
    variables = init(jax.random.key(0, impl="unsafe_rbg"), x[:f], t[:1], ctx[:f])
    both = apply(variables, x, t, ctx, num_frames=f)
    for i in range(b):
        one = apply(variables, x[i * f:(i + 1) * f], t[i:i + 1], ctx[i * f:(i + 1) * f], num_frames=f)
        np.testing.assert_allclose(np.asarray(both[i * f:(i + 1) * f]), np.asarray(one), rtol=1e-5, atol=1e-5)


def test_plain_block_rejects_block_kwargs_and_bad_inputs():
    module, params = _converted("sd1")
    x, ctx = _inputs(CONFIG_SD1, size=8)
    trace = lambda *a, **k: jax.eval_shape(lambda: module.apply({"params": params}, *a, **k))
    with pytest.raises(TypeError, match="takes no block_kwargs"):
        trace(x, 1, ctx, block_kwargs={"reference_bank": []})
    with pytest.raises(ValueError, match="NHWC"):
        trace(np.transpose(x, (0, 3, 1, 2)), 1, ctx)
    with pytest.raises(ValueError, match="timesteps has 3 rows"):
        trace(x, np.ones(3, np.float32), ctx)
    with pytest.raises(ValueError, match="not a multiple of num_frames=3"):
        trace(x, 1, ctx, num_frames=3)
    with pytest.raises(ValueError, match="added_features must match"):
        trace(x, 1, ctx, added_features=np.zeros((2, 8, 8, 4), np.float32))


def test_sharded_init_and_forward():
    """Init directly into fsdp (1,8,1) and tensor (1,2,4) layouts; the sharded jitted forward equals the plain one."""
    assert jax.device_count() >= 8, "conftest must provide 8 simulated devices"
    unet = UNet2DConditionModel(UNetConfig.from_diffusers(dict(
        block_out_channels=(32,), down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
        layers_per_block=1, norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 8, 4)).astype(np.float32)
    ctx = rng.standard_normal((8, 5, 16)).astype(np.float32)
    t = np.linspace(0, 900, 8).astype(np.float32)
    key = jax.random.key(0, impl="unsafe_rbg")  # compiles far faster than threefry on CPU
    block = ("down_blocks_0", "attentions_0", "transformer_blocks_0")
    cases = [
        ((1, 8, 1), P(None, None, None, "fsdp"), P("fsdp", None), P(None, "fsdp")),
        ((1, 2, 4), P(None, None, None, ("fsdp", "tensor")), P("fsdp", "tensor"), P("tensor", "fsdp")),
    ]
    reference = None
    for mesh_shape, conv_spec, q_spec, out_spec in cases:
        mesh = parallel.make_mesh(*mesh_shape)
        variables, shardings = parallel.init_sharded(lambda r: unet.init(r, x, t, ctx), key, mesh)
        params = shardings["params"]
        assert _get(params, ("down_blocks_0", "resnets_0", "conv1", "kernel")).spec == conv_spec
        assert _get(params, (*block, "attn1", "to_q", "kernel")).spec == q_spec
        assert _get(params, (*block, "attn1", "to_out_0", "kernel")).spec == out_spec
        assert _get(variables["params"], (*block, "attn1", "to_q", "kernel")).sharding.spec == q_spec
        if reference is None:  # the same key gives the same params on every mesh
            reference = np.asarray(jax.jit(unet.apply)(jax.device_get(variables), x, t, ctx))
        batch = parallel.batch_sharding(mesh, 4)
        with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
            fwd = jax.jit(unet.apply, in_shardings=(shardings, batch, parallel.batch_sharding(mesh, 1),
                                                    parallel.batch_sharding(mesh, 3)), out_shardings=batch)
            out = fwd(variables, jax.device_put(x, batch), t, ctx)
        assert out.sharding.spec == batch.spec
        np.testing.assert_allclose(np.asarray(out), reference, rtol=1e-5, atol=1e-5)


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def test_convert_command_and_orbax_roundtrip(tmp_path, capsys):
    """`jaxtalk convert` writes orbax params + jaxtalk_kind.json; load_converted rebuilds them, also sharded."""
    model, sd = _reference("sd1")
    weights = tmp_path / "unet"
    weights.mkdir()
    save_file(sd, weights / "diffusion_pytorch_model.safetensors")
    (weights / "config.json").write_text(json.dumps(dict(model.config)))
    out = tmp_path / "ckpt"
    assert cli.main(["convert", "--kind", "sd_unet", "--weights",
                     str(weights / "diffusion_pytorch_model.safetensors"), "--out", str(out)]) == 0
    meta = read_meta(out)
    assert meta["kind"] == "sd_unet" and meta["config"]["attention_head_dim"] == [2, 2]
    assert cli.main(["convert", "--kind", "sd_unet", "--weights", str(weights), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    module, params = load_converted(out)
    expected_module, expected = _converted("sd1")
    assert module == expected_module
    flat, flat_expected = traverse_util.flatten_dict(params), traverse_util.flatten_dict(expected)
    assert set(flat) == set(flat_expected)
    assert all(np.array_equal(np.asarray(flat[k]), v) for k, v in flat_expected.items())
    # straight into an fsdp layout
    mesh = parallel.make_mesh(1, 8, 1)
    kind = interop.get_kind("sd_unet")
    with nn.logical_axis_rules(parallel.LOGICAL_RULES):
        abstract = jax.eval_shape(lambda: kind.init(module, jax.random.key(0)))
        shardings = parallel.logical_to_shardings(abstract, mesh)["params"]
    _, sharded = load_converted(out, shardings=shardings)
    kernel = sharded["down_blocks_0"]["resnets_0"]["conv1"]["kernel"]
    assert kernel.sharding.spec == P(None, None, None, "fsdp")
    np.testing.assert_array_equal(np.asarray(kernel), expected["down_blocks_0"]["resnets_0"]["conv1"]["kernel"])


@pytest.mark.slow
def test_sd15_full_config_against_diffusers():
    torch.manual_seed(0)
    model = TorchUNet(**SD15_UNET_CONFIG).eval()
    sd = state_numpy(model)
    assert len(sd) == 686 and sum(v.size for v in sd.values()) == 859_520_964
    module, params = interop.from_torch("sd_unet", sd, config=dict(model.config))
    assert sum(np.size(v) for v in jax.tree.leaves(params)) == 859_520_964
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    ctx = rng.standard_normal((1, 77, 768)).astype(np.float32)
    ref = _torch_forward(model, x, np.array([801.0], np.float32), ctx)
    del model
    out = jax.jit(module.apply)({"params": params}, x, np.array([801.0], np.float32), ctx)
    assert_close(out, ref, name="sd_unet[SD1.5]")
