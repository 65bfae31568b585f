"""Style-E: the AGRoL-derived MLP diffusion over 3DMM expression windows (Style2Talker §"Style-E").

Denoiser (tanshuai0219/style2talker `MetaModel` + `DiffMLP`; research/style2talker_architecture.md §0.1), for a
window of T = 32 frames, frames first (B, T, feat):

    emb = pe[t]                                   (B, 1, D)   fixed sinusoidal table, no MLP
    h   = [sparse_process(s), input_process(x_t), text]       (B, T, 2D + text_dim)
    block l:  h = (conct(h) if l == 0 else h) + emb_fc(SiLU(emb))
              h = h + SiLU(fc0(LayerNorm(h)))     fc0: Conv1d(T, T, 1) — mixes FRAMES (time is the channel axis)
              h = h + SiLU(fc1(LayerNorm(h)))     fc1: per-frame Linear(D, D)
    x0_hat = output_process(h)                    (B, T, nfeats)   the network predicts x_0 (START_X)

Conditions: `sparse` is SadTalker audio2exp's 64-d expression per frame (the identity enters through its `ref`),
`text` the CLIP ViT-B/32 `encode_text` feature (512, projected, NOT normalised), repeated over the frames.

Sampling (`sample_windows`): the 1000-step cosine schedule respaced to 5 steps ("ddim5": t = 800, 600, 400,
200, 0) and run with improved-diffusion's ANCESTRAL `p_sample_loop` (FIXED_SMALL posterior variance, the network
called with the original timesteps), as the released inference does; `method="ddim"` runs true DDIM (eta = 0) on
the same respaced steps instead. The step maths lives in `jaxtalk.diffusion.respaced` / `jaxtalk.diffusion.ddim`;
the loop here is one `lax.scan` that also returns every x_0 prediction.

Sequences of any length (`window_plan`, `generate_expression`), exactly as the released `non_overlapping_test`:
  * F >= T: windows start at 0, T, 2T, ...; when the next window would run past the end it is re-taken as the
    LAST T frames [F - T, F) and only its frames not already covered (the last F mod T) are kept;
  * F < T: one window, the first frame repeated T - F times in FRONT, and those padded frames dropped.
All windows of a clip go through the sampler as one batch (the original batches 256 windows at a time and, through
a bug, keeps only the last batch; the two agree for clips up to 256 windows = 8192 frames).
`expression_from_audio` chains SadTalker audio2exp (mel windows + identity expression as `ref`) into
`generate_expression`: the whole Style-E inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.compile_cache import CompileCache, compiled, memoized
from jaxtalk.diffusion.ddim import DDIMCoefficients, ddim_step
from jaxtalk.diffusion.respaced import (
    RespacedCoefficients,
    respaced_predict_x0,
    respaced_setup,
    respaced_step,
    respaced_tables,
    space_timesteps,
)
from jaxtalk.diffusion.schedules import NoiseSchedule, ScheduleConfig
from jaxtalk.nn import layers
from jaxtalk.style2talker.audio2exp import SimpleWrapperV2, audio2exp

Dtype = Any
SAMPLING_METHODS = ("ancestral", "ddim")


@dataclasses.dataclass(frozen=True)
class StyleEConfig:
    """Style-E denoiser sizes. Official: latent 512, 8 blocks, window 32, nfeats 64, sparse 64, text 512."""

    nfeats: int = 64  # expression coefficients per frame (`motion_nfeat`)
    latent_dim: int = 512
    num_layers: int = 8  # MLP blocks (`args.layers`; AGRoL's published model uses 12)
    sparse_dim: int = 64  # audio2exp expression per frame
    text_dim: int = 512  # CLIP text feature (`style_code_dim`)
    window: int = 32  # frames per window (`input_motion_length`)
    max_timesteps: int = 5000  # rows of the sinusoidal table `embed_timestep.pe`

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"StyleEConfig.{f.name} must be a positive int, got {value!r}")
        if self.latent_dim % 2:
            raise ValueError(f"StyleEConfig.latent_dim must be even (sin/cos table), got {self.latent_dim}")

    @classmethod
    def from_torch_kwargs(cls, kwargs: Mapping[str, Any]) -> StyleEConfig:
        """From `MetaModel(...)` constructor kwargs or the training `args.json` (`motion_nfeat`, `layers`,
        `style_code_dim`, `input_motion_length`, ...). Keys that do not shape the network (arch, dropout, dataset,
        cond_mask_prob, lr, ...) are ignored."""
        names = {
            "nfeats": "nfeats", "motion_nfeat": "nfeats", "latent_dim": "latent_dim", "num_layers": "num_layers",
            "layers": "num_layers", "sparse_dim": "sparse_dim", "style_code_dim": "text_dim",
            "emotion_style_code_dim": "text_dim", "text_dim": "text_dim", "input_motion_length": "window",
            "window": "window", "max_timesteps": "max_timesteps",
        }
        out: dict[str, int] = {}
        for key, value in kwargs.items():
            if key in names and value is not None:
                target = names[key]
                if target in out and out[target] != int(value):
                    raise ValueError(f"Style-E config gives {target} twice with different values "
                                     f"({out[target]} and {key}={value})")
                out[target] = int(value)
        return cls(**out)


@dataclasses.dataclass(frozen=True)
class StyleESamplerConfig:
    """How Style-E is sampled. Defaults are what the released inference runs."""

    diffusion_steps: int = 1000
    noise_schedule: str = "cosine"  # improved-diffusion cosine (float64 ᾱ), as AGRoL / Style-E
    respacing: str = "ddim5"  # improved-diffusion `space_timesteps` spec: "ddimK" or "a,b,c" section counts
    method: str = "ancestral"  # "ancestral": p_sample_loop (the original); "ddim": DDIM with eta = 0
    variance_type: str = "fixed_small"  # ancestral only (sigma_small=True)

    def __post_init__(self) -> None:
        if self.method not in SAMPLING_METHODS:
            raise ValueError(f"StyleESamplerConfig.method={self.method!r}; use one of {SAMPLING_METHODS}")


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """The (length, 1, dim) float32 table pe[p, 0, 2i] = sin(p·w_i), pe[p, 0, 2i+1] = cos(p·w_i),
    w_i = exp(-2i·ln(10^4)/dim), computed in float32 as the original buffer is."""
    # float32 arguments as torch forms them; exp / sin / cos evaluated in float64 and rounded once, which is what
    # torch's CPU kernels return (numpy's float32 exp can be one ulp off, and position · w amplifies that).
    position = np.arange(length, dtype=np.float32)[:, None]
    exponent = np.arange(0, dim, 2, dtype=np.float32) * np.float32(-np.log(10000.0) / dim)
    div = np.exp(exponent.astype(np.float64)).astype(np.float32)
    angle = (position * div).astype(np.float32).astype(np.float64)
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return pe[:, None, :]


class TimestepTable(nn.Module):
    """`embed_timestep`: a row lookup in the fixed sinusoidal table, kept as the param `pe` so checkpoints round
    trip exactly. It is a constant of the method: mask it out of the optimizer when training."""

    max_timesteps: int
    dim: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, timesteps: jax.Array) -> jax.Array:
        table = self.param(
            "pe",
            layers.partitioned(
                lambda rng, shape, dtype: jnp.asarray(sinusoidal_table(shape[0], shape[-1]), dtype),
                (None, None, "embed"),
            ),
            (self.max_timesteps, 1, self.dim),
            self.param_dtype,
        )
        return jnp.take(jnp.asarray(table), timesteps, axis=0)  # (B, 1, dim)


class FrameMix(nn.Module):
    """`fc0` = Conv1d(T, T, 1) over (B, T, D): frames are the channels, the feature axis is the length. Written as
    a batched matrix product over the frame axis (the params are the Conv1d's, kernel (1, T, T), bias (T,)): the
    same sums as the transposed 1x1 convolution, without XLA:CPU's transposes and small-channel convolution."""

    window: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        t = self.window
        kernel = self.param("kernel", layers.partitioned(layers.torch_default_init, ("conv_kh", "conv_in", "conv_out")),
                            (1, t, t), self.param_dtype)
        bias = self.param("bias", layers.partitioned(layers.zeros_init, ("conv_out",)), (t,), self.param_dtype)
        h, kernel, bias = nn.dtypes.promote_dtype(h, kernel, bias, dtype=self.dtype)
        # out[b] = W^T h[b]: a batched (T, T) @ (T, D) product keeps h in its (B, T, D) layout (an einsum over the
        # middle axis made XLA:CPU transpose h and the result around one (T, B·D) matmul: 15 % of the sampler).
        weight = jnp.broadcast_to(kernel[0].T, (h.shape[0], t, t))
        return jax.lax.dot_general(weight, h, (((2,), (1,)), ((0,), (0,)))) + bias[None, :, None]


class Conct(nn.Module):
    """`conct`: Linear(2D + text_dim, D) over [sparse_process(s), input_process(x_t), text]. The sampler does not
    call it: `fold_for_sampling` splits its kernel into the per-clip part and the x_t part."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", layers.partitioned(layers.torch_default_init, ("mlp", "embed")),
                            (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", layers.partitioned(layers.zeros_init, ("embed",)), (self.features,),
                          self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return jnp.dot(x, kernel) + bias


class MLPBlock(nn.Module):
    """One `MLPblock` (torch names: conct, emb_fc, norm0, fc0, norm1, fc1)."""

    latent_dim: int
    window: int
    first: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.first:
            x = Conct(self.latent_dim, name="conct", **kw)(x)
        x = x + layers.dense(self.latent_dim, name="emb_fc", axes=("embed", "mlp"), **kw)(nn.silu(emb))
        h = layers.layer_norm(name="norm0", **kw)(x)
        x = x + nn.silu(FrameMix(self.window, name="fc0", **kw)(h))
        h = layers.layer_norm(name="norm1", **kw)(x)
        x = x + nn.silu(layers.dense(self.latent_dim, name="fc1", axes=("embed", "mlp"), **kw)(h))
        return layers.constrain(x, ("act_batch", "act_frames", "act_embed"))


class _Stack(nn.Module):
    """`mlp.motion_mlp.mlps.{l}`: the block stack under the torch module path."""

    config: StyleEConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        c = self.config
        for i in range(c.num_layers):
            x = MLPBlock(c.latent_dim, c.window, first=i == 0, dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f"mlps_{i}")(x, emb)
        return x


class _DiffMLP(nn.Module):
    config: StyleEConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        return _Stack(self.config, self.dtype, self.param_dtype, name="motion_mlp")(x, emb)


class StyleE(nn.Module):
    """The Style-E denoiser: `apply(v, x_t[B,T,nfeats], timesteps[B], sparse[B,T,sparse_dim], text)` → x̂_0.

    `text` is (B, text_dim) — repeated over the T frames, as the original does — or already (B, T, text_dim).
    `timesteps` are ORIGINAL diffusion timesteps (0 … 999), int, shape (B,) or scalar. The sampler runs the same
    network through `fold_for_sampling` / `folded_denoise` (the step-independent work done once per clip).
    """

    config: StyleEConfig = StyleEConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_t: jax.Array, timesteps: jax.Array, sparse: jax.Array, text: jax.Array) -> jax.Array:
        c = self.config
        b = x_t.shape[0]
        expected = {"x_t": (x_t, c.nfeats), "sparse": (sparse, c.sparse_dim)}
        for name, (arr, feat) in expected.items():
            if arr.ndim != 3 or arr.shape[1] != c.window or arr.shape[2] != feat or arr.shape[0] != b:
                raise ValueError(f"StyleE: {name} must be (batch={b}, window={c.window}, {feat}), got {arr.shape}")
        if text.ndim == 2:
            text = jnp.broadcast_to(text[:, None, :], (text.shape[0], c.window, text.shape[-1]))
        if text.ndim != 3 or text.shape[0] != b or text.shape[1:] != (c.window, c.text_dim):
            raise ValueError(f"StyleE: text must be (batch={b}, {c.text_dim}) or (batch, {c.window}, {c.text_dim}), "
                             f"got {text.shape}")
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps, jnp.int32), (b,))
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        emb = TimestepTable(c.max_timesteps, c.latent_dim, self.param_dtype, name="embed_timestep")(timesteps)
        s = layers.dense(c.latent_dim, name="sparse_process", axes=(None, "embed"), **kw)(sparse)
        h = layers.dense(c.latent_dim, name="input_process", axes=(None, "embed"), **kw)(x_t)
        h = jnp.concatenate([s, h.astype(s.dtype), text.astype(s.dtype)], axis=-1)
        h = _DiffMLP(c, **kw, name="mlp")(h, emb.astype(h.dtype))
        return layers.dense(c.nfeats, name="output_process", axes=("embed", None), **kw)(h)


class FoldedStyleE(NamedTuple):
    """Style-E's step-independent work for one clip, done once before the sampling loop (`fold_for_sampling`).

    `x_kernel` (nfeats, D): input_process followed by the x_t third of `conct` (two linear maps, one matrix);
    `constant` (N, T, D): everything else `conct` adds (sparse_process(s) and text through their thirds, the
    three biases); `step_bias` (K, L, D): emb_fc_l(SiLU(pe[t_k])) for every sampling step k and block l — the
    timestep is the same for the whole batch, so one row per step instead of one per window."""

    x_kernel: jax.Array
    constant: jax.Array
    step_bias: jax.Array


def fold_for_sampling(module: StyleE, params: Any, sparse: jax.Array, text: jax.Array,
                      timesteps: jax.Array) -> FoldedStyleE:
    """Fold the per-clip conditions and the K sampling `timesteps` (original timesteps, in sampling order) into
    `FoldedStyleE`. `sparse` (N, T, sparse_dim); `text` (N, text_dim) or (N, 1 | T, text_dim).

    The first block's `conct` multiplies [sparse_process(s), input_process(x_t), text]; only the x_t third changes
    between steps, and input_process(x_t) W_x = x_t (W_in W_x) + b_in W_x, so one step costs a (nfeats, D) matrix
    instead of (nfeats, D) + (D, D), and the (D, D) sparse / text products run once per clip. Same sums as the
    network up to float rounding (tests/style2talker/test_speed_paths.py)."""
    c, dt = module.config, module.dtype
    p = nn.unbox(params)
    d = c.latent_dim
    sp, ip = p["sparse_process"], p["input_process"]
    blocks = p["mlp"]["motion_mlp"]
    ct = blocks["mlps_0"]["conct"]
    kernel = ct["kernel"].astype(dt)
    k_s, k_x, k_t = kernel[:d], kernel[d:2 * d], kernel[2 * d:]
    sparse = jnp.asarray(sparse).astype(dt)
    text = jnp.asarray(text).astype(dt)
    if text.ndim == 2:
        text = text[:, None, :]
    bias = jnp.dot(sp["bias"].astype(dt), k_s) + jnp.dot(ip["bias"].astype(dt), k_x) + ct["bias"].astype(dt)
    constant = (jnp.dot(sparse, jnp.dot(sp["kernel"].astype(dt), k_s)) + jnp.dot(text, k_t)) + bias
    x_kernel = jnp.dot(ip["kernel"].astype(dt), k_x)
    emb = jnp.take(jnp.asarray(p["embed_timestep"]["pe"]), jnp.asarray(timesteps, jnp.int32), axis=0)[:, 0]
    emb = nn.silu(emb.astype(dt))  # (K, D)
    step_bias = jnp.stack([jnp.dot(emb, blocks[f"mlps_{i}"]["emb_fc"]["kernel"].astype(dt))
                           + blocks[f"mlps_{i}"]["emb_fc"]["bias"].astype(dt) for i in range(c.num_layers)], axis=1)
    return FoldedStyleE(x_kernel, constant, step_bias)


def folded_denoise(module: StyleE, params: Any, folded: FoldedStyleE, x_t: jax.Array, step: jax.Array | int
                   ) -> jax.Array:
    """x̂_0 for x_t (N, T, nfeats) at sampling step `step` (an index into `folded.step_bias`): the network of
    `StyleE.__call__` with its step-independent work taken from `folded` (`fold_for_sampling`)."""
    c, dt = module.config, module.dtype
    p = nn.unbox(params)
    blocks = p["mlp"]["motion_mlp"]
    kw = dict(dtype=dt, param_dtype=module.param_dtype)
    norm = layers.layer_norm(**kw)
    mix = FrameMix(c.window, **kw)
    fc = nn.Dense(c.latent_dim, **kw)
    h = jnp.dot(x_t.astype(dt), folded.x_kernel) + folded.constant
    for i in range(c.num_layers):
        b = blocks[f"mlps_{i}"]
        h = h + folded.step_bias[step, i].astype(dt)
        h = h + nn.silu(mix.apply({"params": b["fc0"]}, norm.apply({"params": b["norm0"]}, h)))
        h = h + nn.silu(fc.apply({"params": b["fc1"]}, norm.apply({"params": b["norm1"]}, h)))
        h = layers.constrain(h, ("act_batch", "act_frames", "act_embed"))
    return nn.Dense(c.nfeats, **kw).apply({"params": p["output_process"]}, h)


# ----------------------------------------------------------------------------------------------------------------
# Sampling


@memoized("style2talker.style_e.sampler_coefficients", maxsize=16)
def sampler_coefficients(sampling: StyleESamplerConfig) -> RespacedCoefficients | DDIMCoefficients:
    """Per-step coefficients (host side, cached) in sampling order, noisiest step first."""
    with jax.ensure_compile_time_eval():  # concrete arrays even when first called under a trace (cached)
        return _coefficients(sampling)


def _coefficients(sampling: StyleESamplerConfig) -> RespacedCoefficients | DDIMCoefficients:
    schedule = ScheduleConfig(num_train_timesteps=sampling.diffusion_steps, beta_schedule=sampling.noise_schedule,
                              prediction_type="sample")
    if sampling.method == "ancestral":
        return respaced_setup(schedule, sampling.respacing, variance_type=sampling.variance_type)
    # improved-diffusion `ddim_sample_loop` on the respaced steps: ᾱ at the kept steps, ᾱ_prev at the previous kept
    # step (1 before the first), eta = 0, network called with the original timestep.
    abar = NoiseSchedule.from_config(schedule).alphas_cumprod_f64()
    tables = respaced_tables(abar, space_timesteps(sampling.diffusion_steps, sampling.respacing))
    kept_abar = tables["alphas_cumprod"]
    prev = np.append(1.0, kept_abar[:-1])
    rev = lambda a, dt=jnp.float32: jnp.asarray(np.asarray(a)[::-1].copy(), dt)
    return DDIMCoefficients(timesteps=rev(tables["timestep_map"], jnp.int32), alphas_cumprod=rev(kept_abar),
                            alphas_cumprod_prev=rev(prev), prediction_type="sample", eta=0.0)


def _text_condition(text: jax.Array, n: int, window: int, text_dim: int) -> jax.Array:
    """`text` checked and shaped (1 | n, 1 | window, text_dim); left unbroadcast so that its product with `conct`
    runs once per distinct row."""
    text = jnp.asarray(text)
    if text.ndim == 1:
        text = text[None]
    if text.ndim == 2:
        text = text[:, None, :]
    if text.ndim != 3 or text.shape[-1] != text_dim or text.shape[0] not in (1, n) or text.shape[1] not in (1, window):
        raise ValueError(f"Style-E text condition must be ({text_dim},), (1 or {n}, {text_dim}) or "
                         f"(1 or {n}, {window}, {text_dim}); got {text.shape}")
    return text


def sample_windows(
    module: StyleE,
    params: Any,
    sparse: jax.Array,
    text: jax.Array,
    key: jax.Array | None = None,
    *,
    sampling: StyleESamplerConfig = StyleESamplerConfig(),
    x_T: jax.Array | None = None,
    noises: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Sample x_0 for N windows: `sparse` (N, T, sparse_dim), `text` (text_dim,) / (1|N, text_dim) /
    (1|N, T, text_dim) → (N, T, nfeats) float32. Traceable (one `lax.scan`); wrap in `jax.jit`.

    Randomness: `key` is split into (x_T key, step key); x_T ~ N(0, I) unless given, and the ancestral step noises
    come from the step key (split per step) unless `noises` (K, N, T, nfeats) is given — noises[n] is what
    improved-diffusion's `randn_like` returns at the n-th call. DDIM (eta = 0) draws no step noise.
    With `return_trajectory`: `(x_0, xs, x0_preds)`, xs (K+1, N, T, nfeats) with xs[0] = x_T and xs[n+1] the sample
    after step n, x0_preds (K, N, T, nfeats) the network's x̂_0 at step n.
    """
    c = module.config
    sparse = jnp.asarray(sparse, jnp.float32)
    if sparse.ndim != 3 or sparse.shape[1:] != (c.window, c.sparse_dim):
        raise ValueError(f"sample_windows: sparse must be (num_windows, {c.window}, {c.sparse_dim}), got {sparse.shape}")
    n = sparse.shape[0]
    text = _text_condition(text, n, c.window, c.text_dim)
    coeffs = sampler_coefficients(sampling)
    steps = coeffs.num_steps
    shape = (n, c.window, c.nfeats)
    ancestral = isinstance(coeffs, RespacedCoefficients)
    if (x_T is None or (ancestral and noises is None)) and key is None:
        raise ValueError("sample_windows: give `key` (or both `x_T` and, for ancestral sampling, `noises`)")
    key_T, key_steps = jax.random.split(key) if key is not None else (None, None)
    x_T = jax.random.normal(key_T, shape, jnp.float32) if x_T is None else jnp.asarray(x_T, jnp.float32)
    if x_T.shape != shape:
        raise ValueError(f"sample_windows: x_T must have shape {shape}, got {x_T.shape}")
    if ancestral:
        if noises is None:
            noises = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(jax.random.split(key_steps, steps))
        noises = jnp.asarray(noises, jnp.float32)
        if noises.shape != (steps, *shape):
            raise ValueError(f"sample_windows: noises must have shape {(steps, *shape)}, got {noises.shape}")
        model_t = coeffs.model_timesteps
    else:
        noises = jnp.zeros((steps, 1), jnp.float32)  # unused placeholder scanned alongside the steps
        model_t = coeffs.timesteps

    folded = fold_for_sampling(module, params, sparse, text, model_t)  # once per clip, not per step

    def body(x, inputs):
        i, noise = inputs
        out = folded_denoise(module, params, folded, x, i).astype(jnp.float32)
        if ancestral:
            x0 = respaced_predict_x0(coeffs, i, x, out)
            x_next = respaced_step(coeffs, i, x, out, noise=noise)
        else:
            x0 = out
            x_next = ddim_step(coeffs, i, x, out)
        return x_next, (x_next, x0) if return_trajectory else None

    x_final, traj = jax.lax.scan(body, x_T, (jnp.arange(steps), noises))
    if not return_trajectory:
        return x_final
    xs, x0s = traj
    return x_final, jnp.concatenate([x_T[None], xs], axis=0), x0s


# ----------------------------------------------------------------------------------------------------------------
# Sequences of any length


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """How a sequence of `num_frames` is cut into windows and put back together (static, host side).

    `gather` (N, T): the source frame of every window position; `scatter` (F,): for every output frame, its
    position in the flattened (N·T) window outputs.
    """

    num_frames: int
    window: int
    gather: np.ndarray
    scatter: np.ndarray

    @property
    def num_windows(self) -> int:
        return int(self.gather.shape[0])


def window_plan(num_frames: int, window: int = 32) -> WindowPlan:
    """The released `non_overlapping_test` tiling (see the module docstring)."""
    if num_frames < 1 or window < 1:
        raise ValueError(f"window_plan: need num_frames >= 1 and window >= 1, got {num_frames}, {window}")
    F, T = int(num_frames), int(window)
    if F < T:
        pad = T - F
        gather = np.concatenate([np.zeros(pad, np.int64), np.arange(F)])[None]
        scatter = pad + np.arange(F)
        return WindowPlan(F, T, gather, scatter)
    starts, keep_from = [], []
    count = 0
    while count < F:
        if count + T > F:  # re-take the last T frames; keep only the frames not covered yet
            starts.append(F - T)
            keep_from.append(count - (F - T))
        else:
            starts.append(count)
            keep_from.append(0)
        count += T
    gather = np.asarray(starts)[:, None] + np.arange(T)[None]
    scatter = np.concatenate([k * T + np.arange(kf, T) for k, kf in enumerate(keep_from)])
    assert scatter.shape == (F,)
    return WindowPlan(F, T, gather, scatter)


# The public entry points below compile through `compile_cache.compiled`, like both pipelines: one program per
# (entry, modules, sampler config, argument shapes and shardings) in this bounded cache. Called inside a trace (a
# pipeline stage or a bench's jit), they run as plain traceable code and the caller's compile covers them.
_COMPILED = CompileCache("style2talker.style_e", maxsize=16)


def _sample_clips(module: StyleE, params: Any, sparse: jax.Array, text: jax.Array, key: jax.Array,
                  sampling: StyleESamplerConfig) -> jax.Array:
    """(B, F, sparse_dim) conditions and (B, text_dim) features -> (B, F, nfeats): every window of every clip
    sampled as one batch, then reassembled per clip (traceable)."""
    c = module.config
    plan = window_plan(int(sparse.shape[1]), c.window)
    b = sparse.shape[0]
    windows = sparse[:, plan.gather]  # (B, N, T, S)
    flat = windows.reshape(b * plan.num_windows, c.window, c.sparse_dim)
    text = jnp.repeat(text, plan.num_windows, axis=0)  # (B·N, text_dim), window-major per clip
    out = sample_windows(module, params, flat, text, key, sampling=sampling)
    out = out.reshape(b, plan.num_windows * c.window, c.nfeats)
    return out[:, plan.scatter]


def _clip_texts(c: StyleEConfig, text: Any, batch: int, where: str) -> jax.Array:
    """The text feature(s) (text_dim,) or (batch, text_dim) as (batch, text_dim) float32."""
    text = jnp.asarray(text, jnp.float32)
    text = text[None] if text.ndim == 1 else text
    if text.ndim != 2 or text.shape[-1] != c.text_dim or text.shape[0] not in (1, batch):
        raise ValueError(f"{where}: text must be ({c.text_dim},) or (batch, {c.text_dim}), got {text.shape}")
    return jnp.broadcast_to(text, (batch, c.text_dim))


def _run(key: Any, fn: Callable, args: tuple) -> Any:
    """`fn(*args)`: traced inline under a caller's trace, else compiled once per (`key`, shapes, shardings)."""
    leaves = jax.tree.leaves(args)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return fn(*args)
    shardings = tuple(getattr(leaf, "sharding", None) for leaf in leaves)
    return compiled(_COMPILED, (key, shardings), fn, args)(*args)


def generate_expression(
    module: StyleE,
    params: Any,
    sparse: jax.Array,
    text: jax.Array,
    key: jax.Array,
    *,
    sampling: StyleESamplerConfig = StyleESamplerConfig(),
) -> jax.Array:
    """Stylised expression for whole clips: `sparse` (F, sparse_dim) or (B, F, sparse_dim) — audio2exp's
    output — and `text` (text_dim,) or (B, text_dim) → (F, nfeats) / (B, F, nfeats) float32.

    Compiled once per (module, sampling, argument shapes) through `compile_cache.compiled` (traced inline when
    called inside a jit); the same `key` gives the same result.
    """
    c = module.config
    sparse = jnp.asarray(sparse, jnp.float32)
    single = sparse.ndim == 2
    if single:
        sparse = sparse[None]
    if sparse.ndim != 3 or sparse.shape[-1] != c.sparse_dim:
        raise ValueError(f"generate_expression: sparse must be (frames, {c.sparse_dim}) or "
                         f"(batch, frames, {c.sparse_dim}), got {sparse.shape}")
    text = _clip_texts(c, text, sparse.shape[0], "generate_expression")
    out = _run(("generate_expression", module, sampling),
               lambda p, s, t, k: _sample_clips(module, p, s, t, k, sampling), (params, sparse, text, key))
    return out[0] if single else out


def expression_from_audio(
    module: StyleE,
    params: Any,
    a2e_module: SimpleWrapperV2,
    a2e_variables: Any,
    mel_windows: np.ndarray | jax.Array,
    identity_expression: np.ndarray | jax.Array,
    text: jax.Array,
    key: jax.Array,
    *,
    blink: np.ndarray | jax.Array | None = None,
    sampling: StyleESamplerConfig = StyleESamplerConfig(),
) -> jax.Array:
    """Style2Talker's Style-E inference: audio2exp(mel windows, identity expression as `ref`, blink) gives the
    per-frame condition, then `generate_expression` samples the stylised expression.

    `mel_windows` (F, 80, 16) or (B, F, 80, 16) (`audio2exp.audio_to_mel_windows`); `identity_expression` (64,) or
    (B, 64) — the identity image's 3DMM expression (Deep3DFaceRecon coeff[80:144]); `text` (512,) / (B, 512) the CLIP
    `encode_text` feature; `blink` (F,) / (B, F) the eye-blink ratio — the original draws a random pulse train
    (`audio2exp.blink_ratio`), None gives zeros (SadTalker's `still` mode). Returns (F, 64) / (B, F, 64).
    """
    mels = jnp.asarray(mel_windows, jnp.float32)
    single = mels.ndim == 3
    if single:
        mels = mels[None]
    if mels.ndim != 4:
        raise ValueError(f"expression_from_audio: mel_windows must be (frames, 80, 16) or (batch, frames, 80, 16), "
                         f"got {mels.shape}")
    b, f = mels.shape[:2]
    ref = jnp.asarray(identity_expression, jnp.float32)
    ref = jnp.broadcast_to(ref, (b, ref.shape[-1])) if ref.ndim == 1 else ref
    blink = jnp.zeros((b, f), jnp.float32) if blink is None else jnp.asarray(blink, jnp.float32).reshape(b, f)
    text = _clip_texts(module.config, text, b, "expression_from_audio")

    def chain(p, av, m, r, bl, t, k):
        return _sample_clips(module, p, audio2exp(a2e_module, av, m, r, bl), t, k, sampling)

    out = _run(("expression_from_audio", module, a2e_module, sampling), chain,
               (params, a2e_variables, mels, ref, blink, text, key))
    return out[0] if single else out
