"""SVPUNet / VideoTransformerBlock: block math against numpy (all reference modes, style attention, weights),
the style layers as an exact no-op on an imported V-Express checkpoint, per-frame GroupNorm, concat mode, sharded
init + forward, config parsing, and the `vexpress_denoising_unet` kind (strictness, layouts, split files).

Golden parity with V-Express itself is in the fixture driver (tests/svp/test_fixtures.py, vx_denoising_unet).
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file
from scipy.special import erf

from jaxtalk import interop, parallel
from jaxtalk.backbones.sd_unet import UNetConfig
from jaxtalk.config import ConfigError
from jaxtalk.interop.kinds.vexpress import load_vexpress_unet
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.motion_module import sinusoidal_table
from jaxtalk.svp.reference_net import transformer_block_names
from jaxtalk.svp.video_unet import (
    MotionConfig,
    SVPUNet,
    SVPUNetConfig,
    VideoTransformerBlock,
    motion_config_from_vexpress,
)
from tests.parity import assert_close

KIND = "vexpress_denoising_unet"
B, F, H = 2, 3, 8
STYLE_RX = re.compile(r".*\.(attn_style|norm_style)\..*")


def rbg(seed: int) -> jax.Array:
    """rbg keys: XLA:CPU compiles threefry random bits very slowly."""
    return jax.random.key(seed, impl="rbg")


def flat(params) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(nn.meta.unbox(params)).items()}


def unflat(d: dict[str, np.ndarray]):
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in d.items()})


def perturbed(params, seed: int, keep_zero: str | None = None):
    """Every leaf + 0.1 N(0,1) so zero-initialised layers are live too; paths matching `keep_zero` are zeroed."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in flat(params).items():
        out[k] = np.zeros_like(v) if keep_zero and re.search(keep_zero, k) else (
            v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32)
    return unflat(out)


def random_params(init_fn, seed: int):
    """Params of the shapes `init_fn` declares (abstractly), drawn in numpy: kernels U(+-1/sqrt(fan_in)), norm
    scales 1 + 0.1 N, biases 0.1 N, the motion modules' sinusoid tables as they are. Far cheaper than compiling
    the init on CPU, and no layer starts at zero."""
    rng = np.random.default_rng(seed)
    out = {}
    abstract = traverse_util.flatten_dict(nn.meta.unbox(jax.eval_shape(init_fn)["params"]), sep="/")
    for k, spec in abstract.items():
        leaf, shape = k.rsplit("/", 1)[-1], spec.shape
        if leaf == "pe":
            v = sinusoidal_table(shape[1], shape[2])
        elif leaf == "scale":
            v = 1 + 0.1 * rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.1 * rng.standard_normal(shape)
        else:
            bound = 1 / np.sqrt(np.prod(shape[:-1]))
            v = rng.uniform(-bound, bound, shape)
        out[k] = np.asarray(v, np.float32)
    return unflat(out)


@functools.cache
def forward(module: SVPUNet):
    """One jitted forward per module config (the weights are traced, so they do not recompile)."""
    return jax.jit(lambda p, inputs: module.apply({"params": p}, **inputs))


def bank_shapes(config: SVPUNetConfig, size: int = H) -> list[tuple[int, int]]:
    """(tokens, channels) of each bank entry in block index order, from the block names."""
    cfg, n = config.unet, len(config.unet.block_out_channels)
    shapes = []
    for name in transformer_block_names(cfg):
        head, level = name.split(".")[0], int(name.split(".")[1]) if not name.startswith("mid") else n - 1
        if head == "up_blocks":
            level = n - 1 - level
        side = size // 2**level
        shapes.append((side * side, cfg.block_out_channels[level]))
    return shapes


def make_inputs(config: SVPUNetConfig, frames: int = F, seed: int = 0, style: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    c = config.unet
    out = dict(sample=r(B, frames, H, H, c.in_channels), timesteps=np.array([17.0, 640.5], np.float32),
               audio_tokens=r(B, frames, 2, c.cross_attention_dim),
               kps_features=r(B, frames, H, H, c.block_out_channels[0]),
               reference_bank=tuple(r(B, t, ch) for t, ch in bank_shapes(config)),
               reference_weight=0.9, audio_weight=1.1)
    if style and config.use_style:
        out.update(style_tokens=r(B, 2, config.style_dim), style_weight=1.3)
    return out


@pytest.fixture(scope="module")
def imported():
    """A tiny V-Express-layout checkpoint (no style layers) and its import into an SVP UNet with style layers."""
    cfg_vx = SVPUNetConfig.tiny(use_style=False)
    vx = SVPUNet(cfg_vx)
    params = random_params(lambda: vx.init(rbg(0), **vx.init_inputs()), seed=1)
    state = interop.to_torch(KIND, params)
    svp, svp_params = interop.from_torch(KIND, state, config=SVPUNetConfig.tiny())
    return vx, params, state, svp, svp_params


# ---------------------------------------------------------------------------------------------- block vs numpy

def _ln(x, p, eps=1e-5):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * p["scale"] + p["bias"]


def _attn(x, ctx, p, heads):
    q, k, v = (t @ p[n]["kernel"] for t, n in ((x, "to_q"), (ctx, "to_k"), (ctx, "to_v")))
    split = lambda t: t.reshape(*t.shape[:2], heads, -1)
    q, k, v = split(q), split(k), split(v)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(*x.shape[:2], -1)
    return o @ p["to_out_0"]["kernel"] + p["to_out_0"]["bias"]


def _ff(x, p):
    h = x @ p["net_0"]["proj"]["kernel"] + p["net_0"]["proj"]["bias"]
    a, g = np.split(h, 2, axis=-1)
    return (a * 0.5 * g * (1 + erf(g / np.sqrt(2)))) @ p["net_2"]["kernel"] + p["net_2"]["bias"]


def numpy_block(p, x, ctx, *, mode, bank, style, frames, heads, rw, aw, sw):
    """The block from its published formulas (V-Express read hook, AnimateAnyone concat, SVP Eq. 5)."""
    rep = lambda a: np.repeat(a, frames, axis=0)
    h = _ln(x, p["norm1"])
    kv = np.concatenate([h, rep(bank)], axis=1) if mode == "concat" and bank is not None else h
    x = x + _attn(h, kv, p["attn1"], heads)
    if mode == "vexpress":
        b = rep(bank) if bank is not None else np.zeros((x.shape[0], 1, x.shape[-1]))
        x = x + rw * _attn(_ln(x, p["norm1_5"]), b, p["attn1_5"], heads)
    x = x + aw * _attn(_ln(x, p["norm2"]), ctx, p["attn2"], heads)
    if style is not None:
        x = x + sw * _attn(_ln(x, p["norm_style"]), rep(style), p["attn_style"], heads)
    return x + _ff(_ln(x, p["norm3"]), p["ff"])


@pytest.mark.parametrize("mode", ["vexpress", "concat", "none"])
@pytest.mark.parametrize("with_bank", [True, False])
def test_block_matches_numpy(mode, with_bank):
    heads, c, frames, videos = 2, 8, 3, 2
    rng = np.random.default_rng(3)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    x, ctx, style = r(videos * frames, 5, c), r(videos * frames, 3, 10), r(videos, 2, 6)
    bank = r(videos, 4, c) if with_bank and mode != "none" else None
    block = VideoTransformerBlock(heads=heads, dim_head=c // heads, index=1, reference_mode=mode, use_style=True,
                                  style_dim=6)
    kw = dict(num_frames=frames, reference_bank=None if bank is None else (r(videos, 4, c), bank),
              style_tokens=style)
    rw = 1.0 if mode == "concat" else 0.7
    params = random_params(lambda: block.init(rbg(0), x, ctx, **kw), seed=4)  # style to_out non-zero too
    out = jax.jit(lambda p: block.apply({"params": p}, x, ctx, reference_weight=rw, audio_weight=1.2,
                                        style_weight=0.8, **kw))(params)
    as64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    ref = numpy_block(as64, x.astype(np.float64), ctx.astype(np.float64), mode=mode, bank=bank, style=style,
                      frames=frames, heads=heads, rw=rw, aw=1.2, sw=0.8)
    assert_close(out, ref, name=f"block[{mode}, bank={with_bank}]")
    assert ("attn1_5" in params) == (mode == "vexpress")


def test_block_bfloat16_compute():
    """bf16 compute with float32 params and float32 weight arrays keeps a bf16 stream close to float32."""
    rng = np.random.default_rng(11)
    x, ctx, style = (rng.standard_normal(s).astype(np.float32) for s in ((4, 6, 8), (4, 3, 8), (2, 1, 6)))
    bank = (rng.standard_normal((2, 6, 8)).astype(np.float32),)
    kw = dict(num_frames=2, reference_bank=bank, style_tokens=style, reference_weight=jnp.float32(0.9),
              audio_weight=jnp.float32(1.1), style_weight=jnp.float32(0.7))
    make = lambda dtype: VideoTransformerBlock(heads=2, dim_head=4, use_style=True, style_dim=6, dtype=dtype)
    params = random_params(lambda: make(jnp.float32).init(rbg(0), x, ctx, **kw), seed=12)
    run = jax.jit(lambda p, x, dtype: make(dtype).apply({"params": p}, x, ctx, **kw), static_argnums=2)
    ref = run(params, x, jnp.float32)
    out = run(params, x.astype(jnp.bfloat16), jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    assert_close(out.astype(jnp.float32), ref, rtol=3e-2, name="bf16 block")


def test_block_zero_bank_is_the_unconditional_branch():
    """reference_bank=None equals an explicit all-zero bank (V-Express CFG's uncond rows) in vexpress mode."""
    block = VideoTransformerBlock(heads=2, dim_head=4, reference_mode="vexpress")
    rng = np.random.default_rng(5)
    x, ctx = rng.standard_normal((4, 6, 8)).astype(np.float32), rng.standard_normal((4, 3, 8)).astype(np.float32)
    zeros = (np.zeros((2, 6, 8), np.float32),)
    params = random_params(lambda: block.init(rbg(0), x, ctx, num_frames=2, reference_bank=zeros), seed=6)
    run = jax.jit(lambda bank: block.apply({"params": params}, x, ctx, num_frames=2, reference_bank=bank))
    np.testing.assert_allclose(np.asarray(run(None)), np.asarray(run(zeros)), rtol=0, atol=1e-6)


def test_block_input_errors():
    block = VideoTransformerBlock(heads=2, dim_head=4, index=0, reference_mode="concat")
    x, ctx = jnp.zeros((6, 4, 8)), jnp.zeros((6, 2, 8))
    with pytest.raises(ValueError, match="one per video"):
        jax.eval_shape(lambda: block.init(rbg(0), x, ctx, num_frames=3, reference_bank=(jnp.zeros((3, 4, 8)),)))
    with pytest.raises(ValueError, match="channels"):
        jax.eval_shape(lambda: block.init(rbg(0), x, ctx, num_frames=3, reference_bank=(jnp.zeros((2, 4, 6)),)))
    with pytest.raises(ValueError, match="reference_weight"):
        jax.eval_shape(lambda: block.init(rbg(0), x, ctx, num_frames=3, reference_weight=0.5))
    none = VideoTransformerBlock(heads=2, dim_head=4, reference_mode="none")
    with pytest.raises(ValueError, match="reference_mode='none'"):
        jax.eval_shape(lambda: none.init(rbg(0), x, ctx, num_frames=3, reference_bank=(jnp.zeros((2, 4, 8)),)))


# ---------------------------------------------------------------------------------------------- whole UNet

def test_style_layers_start_as_an_exact_noop(imported):
    """V-Express weights imported with use_style=True: bit-identical to use_style=False, whatever the tokens."""
    vx, params, state, svp, svp_params = imported
    p = flat(svp_params)
    style_out = [k for k in p if "attn_style/to_out_0" in k]
    assert len(style_out) == 2 * len(transformer_block_names(svp.config.unet))
    assert all(not p[k].any() for k in style_out), "imported style output projections must start at zero"
    x = make_inputs(svp.config)
    base = np.asarray(forward(vx)(params, make_inputs(vx.config)))
    with_style = np.asarray(forward(svp)(svp_params, x))
    other = np.asarray(forward(svp)(svp_params, {**x, "style_tokens": 5 * x["style_tokens"][::-1],
                                                 "style_weight": 4.0}))
    np.testing.assert_array_equal(with_style, base)
    np.testing.assert_array_equal(other, base)
    # The path is live: non-zero output projections change the output.
    live = unflat({k: (v + 0.1 if "attn_style/to_out_0" in k else v) for k, v in p.items()})
    moved = np.asarray(forward(svp)(live, x))
    assert np.abs(moved - base).max() > 1e-3


def test_style_standardisation_equals_standardised_tokens(imported):
    """style_mean / style_std in the config == feeding (s - mean) / std to a UNet without them; bad stats raise."""
    _, _, _, svp, svp_params = imported
    p = flat(svp_params)
    live = unflat({k: (v + 0.1 if "attn_style/to_out_0" in k else v) for k, v in p.items()})
    d = svp.config.style_dim
    rng = np.random.default_rng(3)
    mean, std = rng.standard_normal(d).astype(np.float32), rng.uniform(0.2, 2.0, d).astype(np.float32)
    std_cfg = SVPUNetConfig.tiny(style_mean=tuple(map(float, mean)), style_std=tuple(map(float, std)))
    x = make_inputs(svp.config)
    with_stats = np.asarray(forward(SVPUNet(std_cfg))(live, x))
    by_hand = np.asarray(forward(svp)(live, {**x, "style_tokens": (x["style_tokens"] - mean) / std}))
    plain = np.asarray(forward(svp)(live, x))
    assert_close(with_stats, by_hand, rtol=1e-5)
    assert np.abs(with_stats - plain).max() > 1e-3
    with pytest.raises(ConfigError, match="together"):
        SVPUNetConfig.tiny(style_mean=tuple(map(float, mean)))
    with pytest.raises(ConfigError, match="style_dim"):
        SVPUNetConfig.tiny(style_mean=(0.0,), style_std=(1.0,))
    with pytest.raises(ConfigError, match="> 0"):
        SVPUNetConfig.tiny(style_mean=tuple(map(float, mean)), style_std=(0.0,) * d)


def test_per_frame_groupnorm_flattened_equals_frame_loop(imported):
    """Without motion-module mixing (zero proj_out, as initialised), frame f of a clip == that frame run alone."""
    _, _, _, svp, svp_params = imported
    params = perturbed(svp_params, seed=7, keep_zero=r"motion_modules_\d+/temporal_transformer/proj_out/")
    x = make_inputs(svp.config)
    clip = np.asarray(forward(svp)(params, x))
    for f in range(F):
        one = {**x, "sample": x["sample"][:, f:f + 1], "audio_tokens": x["audio_tokens"][:, f:f + 1],
               "kps_features": x["kps_features"][:, f:f + 1]}
        assert_close(forward(svp)(params, one)[:, 0], clip[:, f], name=f"frame {f} alone vs in the clip")
    # With the motion modules live the frames do interact (so the comparison above can fail).
    mixed = np.asarray(forward(svp)(perturbed(svp_params, seed=7), x))
    single = np.asarray(forward(svp)(perturbed(svp_params, seed=7),
                                     {**x, "sample": x["sample"][:, :1], "audio_tokens": x["audio_tokens"][:, :1],
                                      "kps_features": x["kps_features"][:, :1]}))
    assert np.abs(mixed[:, 0] - single[:, 0]).max() > 1e-3


def test_concat_reference_mode_runs(imported):
    """AnimateAnyone / Hallo concat mode: the same weights without attn1_5; the bank changes the output."""
    _, _, _, svp, svp_params = imported
    cfg = SVPUNetConfig.tiny(reference_mode="concat")
    module = SVPUNet(cfg)
    params = unflat({k: v for k, v in flat(perturbed(svp_params, seed=8)).items()
                     if "attn1_5" not in k and "norm1_5" not in k})
    abstract = jax.eval_shape(lambda: module.init(rbg(0), **module.init_inputs()))["params"]
    assert set(traverse_util.flatten_dict(nn.meta.unbox(abstract), sep="/")) == set(flat(params))
    x = make_inputs(cfg)
    x.pop("reference_weight")
    out = np.asarray(forward(module)(params, x))
    assert out.shape == (B, F, H, H, 4) and np.isfinite(out).all()
    other_bank = np.asarray(forward(module)(params, {**x, "reference_bank": tuple(-b for b in x["reference_bank"])}))
    assert np.abs(out - other_bank).max() > 1e-3
    with pytest.raises(ValueError, match="reference_weight"):
        jax.eval_shape(lambda: module.apply({"params": params}, **{**x, "reference_weight": 0.5}))


def test_sharded_init_and_forward_match_unsharded():
    """parallel.init_sharded on a (1, 2, 4) mesh of 8 devices; the sharded forward equals the unsharded one.

    One UNet level (32 channels) keeps the CPU compile of the sharded init short."""
    unet = UNetConfig(block_out_channels=(32,), layers_per_block=1, num_attention_heads=4, cross_attention_dim=32,
                      norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D",),
                      up_block_types=("CrossAttnUpBlock2D",))
    cfg = SVPUNetConfig.tiny(unet=unet, motion=MotionConfig(resolutions=(1,), num_attention_heads=4, max_len=16,
                                                            norm_num_groups=8))
    module = SVPUNet(cfg)
    mesh = parallel.make_mesh(1, 2, 4)
    variables, shardings = parallel.init_sharded(lambda r: module.init(r, **module.init_inputs()), rbg(0), mesh)
    specs = [s.spec for s in jax.tree.leaves(shardings)]
    assert any(any(a is not None for a in spec) for spec in specs), "no param was sharded"
    kernel = variables["params"]["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["attn1"]["to_q"]["kernel"]
    assert len(kernel.sharding.device_set) == 8 and kernel.addressable_shards[0].data.shape == (16, 8)
    params = perturbed(jax.device_get(variables["params"]), seed=9)  # zero-initialised layers made live
    x = make_inputs(cfg)
    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.LOGICAL_RULES):
        sharded = jax.jit(lambda p, i: module.apply({"params": p}, **i))(
            parallel.shard_params(params, shardings["params"]), x)
    assert_close(sharded, forward(module)(params, x), name="sharded vs unsharded forward")


def test_unet_input_errors(imported):
    vx, _, _, svp, _ = imported
    x = make_inputs(svp.config)
    shape = lambda m, **kw: jax.eval_shape(lambda: m.init(rbg(0), **{**x, **kw}))
    with pytest.raises(ValueError, match="transformer blocks"):
        shape(svp, reference_bank=x["reference_bank"][:-1])
    with pytest.raises(ValueError, match="use_style=False"):
        jax.eval_shape(lambda: vx.init(rbg(0), **x))
    with pytest.raises(ValueError, match="position table"):
        shape(svp, sample=np.zeros((B, 17, H, H, 4), np.float32))
    with pytest.raises(ValueError, match="audio_tokens"):
        shape(svp, audio_tokens=x["audio_tokens"][:, :1])
    with pytest.raises(ValueError, match="style_tokens"):
        shape(svp, style_tokens=np.zeros((B, 2, 5), np.float32))


# ---------------------------------------------------------------------------------------------- config

def test_config_from_vexpress_inference_yaml():
    kwargs = {
        "use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False, "unet_use_temporal_attention": False,
        "use_motion_module": True, "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
        "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
        "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                                 "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                 "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
                                 "temporal_attention_dim_div": 1},
    }
    assert motion_config_from_vexpress(kwargs) == MotionConfig()
    assert SVPUNetConfig.from_vexpress({"cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock3D"] * 3
                                        + ["DownBlock3D"]}, kwargs) == SVPUNetConfig.vexpress()
    for bad in ({"use_inflated_groupnorm": False}, {"unet_use_temporal_attention": True}, {"motion_block": 1},
                {"use_motion_module": True, "motion_module_kwargs": {"attention_block_types": ["Temporal_Cross"]}}):
        with pytest.raises(ConfigError):
            motion_config_from_vexpress({**kwargs, **bad})
    with pytest.raises(ConfigError):
        SVPUNetConfig.tiny(reference_mode="mixed")
    with pytest.raises(ConfigError):
        SVPUNetConfig.tiny(style_heads=3)
    assert SVPUNetConfig.svp().use_style and not SVPUNetConfig.vexpress().use_style


# ---------------------------------------------------------------------------------------------- interop

def test_kind_layouts_and_round_trips(imported):
    vx, params, state, svp, svp_params = imported
    assert not any(STYLE_RX.fullmatch(k) for k in state)
    n_blocks = len(transformer_block_names(vx.config.unet))
    assert sum(".attn1_5." in k or ".norm1_5." in k for k in state) == 7 * n_blocks
    # V-Express layout by default: exactly the source back, without the style keys.
    back = interop.to_torch(KIND, svp_params)
    assert set(back) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    # The svp layout adds them, and an SVP checkpoint round-trips through it.
    svp_state = interop.to_torch(KIND, perturbed(svp_params, seed=10), layout="svp")
    style_keys = {k for k in svp_state if STYLE_RX.fullmatch(k)}
    assert len(style_keys) == 7 * n_blocks and set(svp_state) - style_keys == set(state)
    module, again = interop.from_torch(KIND, svp_state)  # use_style / style_dim inferred from the keys
    assert module.config.use_style and module.config.style_dim == svp.config.style_dim
    again_state = interop.to_torch(KIND, again, layout="svp")
    assert set(again_state) == set(svp_state)
    for k, v in svp_state.items():
        np.testing.assert_array_equal(again_state[k], v, err_msg=k)
    with pytest.raises(interop.ConversionError, match="layout"):
        interop.to_torch(KIND, svp_params, layout="diffusers")


def test_kind_is_strict(imported):
    _, _, state, _, _ = imported
    cfg = SVPUNetConfig.tiny(use_style=False)
    some = sorted(k for k in state if ".attn1_5.to_q." in k)[0]
    with pytest.raises(interop.ConversionError, match=re.escape(some)):
        interop.from_torch(KIND, {k: v for k, v in state.items() if k != some}, config=cfg)
    with pytest.raises(interop.ConversionError, match="unexpected.*extra.weight"):
        interop.from_torch(KIND, {**state, "extra.weight": np.zeros(3, np.float32)}, config=cfg)
    with pytest.raises(interop.ConversionError, match="mis-shaped"):
        interop.from_torch(KIND, {**state, some: np.zeros((3, 3), np.float32)}, config=cfg)
    # Some style keys but not all: they are required as a group.
    style_key = "down_blocks.0.attentions.0.transformer_blocks.0.attn_style.to_k.weight"
    partial = {**state, style_key: np.zeros((32, 16), np.float32)}
    with pytest.raises(interop.ConversionError, match="missing.*attn_style"):
        interop.from_torch(KIND, partial, config=SVPUNetConfig.tiny())


def test_load_vexpress_unet_from_split_files(imported, tmp_path):
    """V-Express ships the UNet and the motion modules as two files; both routes give the same params."""
    _, params, state, _, _ = imported
    motion = {k: v for k, v in state.items() if ".motion_modules." in k}
    unet = {k: v for k, v in state.items() if k not in motion}
    save_file(unet, str(tmp_path / "denoising_unet.safetensors"))
    save_file(motion, str(tmp_path / "motion_module.safetensors"))
    cfg = SVPUNetConfig.tiny(use_style=False)
    module, loaded = load_vexpress_unet(tmp_path / "denoising_unet.safetensors",
                                        tmp_path / "motion_module.safetensors", cfg)
    assert module.config == cfg
    ours, theirs = flat(loaded), flat(params)
    assert set(ours) == set(theirs)
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    # Without the motion file: the motion keys are missing for a config that has motion modules ...
    with pytest.raises(interop.ConversionError, match="missing.*motion_modules"):
        load_vexpress_unet(tmp_path / "denoising_unet.safetensors", None, cfg)
    # ... and config=None infers a motion-free (stage-1) UNet from them.
    module, _ = load_vexpress_unet(read_state_dict(tmp_path / "denoising_unet.safetensors"), None,
                                   cfg.unet.to_diffusers())
    assert not module.config.motion.enabled
    with pytest.raises(interop.ConversionError, match="outside"):
        load_vexpress_unet(unet, {**motion, "conv_in.weight": unet["conv_in.weight"]}, cfg)


def test_config_inferred_from_the_fixture_keys(fixtures_dir):
    """config=None: sizes, motion modules, max_len and reference mode from the tensors (heads as given)."""
    state = read_state_dict(fixtures_dir / "svp" / "vx_denoising_unet.safetensors")
    from jaxtalk.interop.kinds.vexpress import resolve_denoising_config

    cfg = resolve_denoising_config(None, state)
    assert cfg.unet.block_out_channels == (32, 32, 32, 32) and cfg.unet.layers_per_block == (1, 1, 1, 1)
    assert cfg.motion == MotionConfig(resolutions=(1, 2, 4, 8), mid_block=True, max_len=16)
    assert cfg.reference_mode == "vexpress" and not cfg.use_style


@pytest.mark.slow
def test_full_size_vexpress_key_count():
    """V-Express size (abstract): 1386 tensors / 1,363,537,604 elements incl. pe; SVP adds 16 x 7 style keys."""
    kind = interop.get_kind(KIND)
    for cfg, layout_keys in ((SVPUNetConfig.vexpress(), 1386), (SVPUNetConfig.svp(), 1386 + 112)):
        module = SVPUNet(cfg)
        shapes = traverse_util.flatten_dict(
            nn.meta.unbox(jax.eval_shape(lambda m=module: m.init(rbg(0), **m.init_inputs()))["params"]))
        keys = {kind.torch_key(k): v for k, v in shapes.items()}
        assert len(keys) == layout_keys
        vx_keys = {k: v for k, v in keys.items() if not STYLE_RX.fullmatch(k)}
        assert len(vx_keys) == 1386
        assert sum(int(np.prod(v.shape)) for v in vx_keys.values()) == 1_363_537_604
        assert sum(".motion_modules." in k for k in vx_keys) == 588
