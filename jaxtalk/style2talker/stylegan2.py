"""StyleGAN2 generator (Karras et al. 2020) in the layout of the rosinality PyTorch port, channels-last.

Submodules are named as the torch attributes so checkpoints convert with the generic key rule:
`style` (mapping: PixelNorm + n_mlp EqualLinear, children "1".."n_mlp"), `input` (ConstantInput), `conv1`,
`to_rgb1`, `convs_{j}` (j = 0 .. 2*(log_size-2)-1; even j upsample), `to_rgbs_{k}`, `noises` (the fixed noise
buffers `noise_{i}`, kept as params so round trips are exact; they are constants, never train them).

Addressing pieces by index (Style-A runs the decoder from 32 px up itself): inside a bound parent,
`gen.convs[j](x, w[:, j + 1], noise)` and `gen.to_rgbs[k](x, w[:, 2 * k + 3], skip)`; `convs[2k]` is the
upsampling conv to resolution 2**(k + 3). Latent index of `convs[j]` is j + 1, of `to_rgbs[k]` is 2k + 3.

Noise, per layer: an array (B or 1, H, W, 1); None or "random" draws N(0, 1) from the `noise` rng (the
original's `noise=None`); "zero" skips the injection (what Style2Talker does); "const" (generator level)
uses the stored buffers (the original's `randomize_noise=False`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn.equalized import EqualLinear, FusedLeakyReLU, pixel_norm
from jaxtalk.nn.layers import constrain, partitioned
from jaxtalk.nn.modulated_conv import ModulatedConv2d
from jaxtalk.nn.upfirdn2d import Upsample

Dtype = Any
Noise = jax.Array | str | None
ACT = ("act_batch", "act_height", "act_width", "act_channels")
NOISE_MODES = ("random", "const", "zero")


def channel_table(channel_multiplier: int = 2, scale: float = 1.0) -> dict[int, int]:
    """The StyleGAN2 channel count per resolution, each multiplied by `scale` and truncated (fixtures use 1/32)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {r: int(c * scale) for r, c in base.items()}


def log2_size(size: int) -> int:
    log = int(math.log2(size)) if size > 0 else 0
    if size < 8 or 2**log != size:
        raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
    return log


def resolve_channels(size: int, channel_multiplier: int = 2, channel_scale: float = 1.0,
                     channels: Sequence[int] | Mapping[int, int] | None = None) -> tuple[int, ...]:
    """Channels for resolutions 4, 8, ..., size. `channels` overrides the table (sequence or {res: ch})."""
    n = log2_size(size) - 1
    if channels is None:
        table = channel_table(channel_multiplier, channel_scale)
        if size not in table:
            raise ValueError(f"no default channel count for size {size}; pass channels=(c4, c8, ..., c{size})")
        out = tuple(table[2**r] for r in range(2, 2 + n))
    elif isinstance(channels, Mapping):
        missing = [2**r for r in range(2, 2 + n) if 2**r not in channels]
        if missing:
            raise ValueError(f"channels mapping lacks resolutions {missing}")
        out = tuple(int(channels[2**r]) for r in range(2, 2 + n))
    else:
        out = tuple(int(c) for c in channels)
        if len(out) != n:
            raise ValueError(f"channels needs {n} entries (resolutions 4..{size}), got {len(out)}")
    if any(c < 1 for c in out):
        raise ValueError(f"channel counts must be >= 1, got {out} (channel_scale too small?)")
    return out


class MappingNetwork(nn.Module):
    """PixelNorm then `n_layers` EqualLinear(lr_mul, fused lrelu), children "1".."n" (torch `style.{i}`)."""

    n_layers: int
    style_dim: int
    lr_mul: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = pixel_norm(z.astype(jnp.float32))
        for i in range(1, self.n_layers + 1):
            x = EqualLinear(self.style_dim, lr_mul=self.lr_mul, activation="fused_lrelu", dtype=jnp.float32,
                            param_dtype=self.param_dtype, name=str(i))(x)
        return x


class NoiseInjection(nn.Module):
    """x + weight * noise; `weight` (1,) zeros. See the module docstring for the noise forms."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, noise: Noise = None) -> jax.Array:
        weight = self.param("weight", partitioned(nn.initializers.zeros_init(), (None,)), (1,), self.param_dtype)
        if isinstance(noise, str) and noise == "zero":
            return x
        if noise is None or (isinstance(noise, str) and noise == "random"):
            if not self.has_rng("noise"):
                raise ValueError(f"{self.name}: random noise needs rngs={{'noise': key}} in apply; or pass explicit "
                                 "noise arrays, noise='zero' or noise='const'")
            noise = jax.random.normal(self.make_rng("noise"), (*x.shape[:-1], 1), jnp.float32)
        elif isinstance(noise, str):
            raise ValueError(f"{self.name}: noise must be an array, None, 'random' or 'zero', got {noise!r}")
        if noise.ndim != 4 or noise.shape[-1] != 1 or noise.shape[1:3] != x.shape[1:3]:
            raise ValueError(f"{self.name}: noise must be (B, {x.shape[1]}, {x.shape[2]}, 1), got {noise.shape}")
        return x + weight.astype(x.dtype) * noise.astype(x.dtype)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU (torch keys conv.*, noise.weight, activate.bias)."""

    features: int
    kernel_size: int = 3
    upsample: bool = False
    demodulate: bool = True
    blur_kernel: Sequence[float] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, style: jax.Array, noise: Noise = None) -> jax.Array:
        x = ModulatedConv2d(self.features, self.kernel_size, demodulate=self.demodulate, upsample=self.upsample,
                            blur_kernel=self.blur_kernel, dtype=self.dtype, param_dtype=self.param_dtype,
                            name="conv")(x, style)
        x = NoiseInjection(param_dtype=self.param_dtype, name="noise")(x, noise)
        x = FusedLeakyReLU(dtype=self.dtype, param_dtype=self.param_dtype, name="activate")(x)
        return constrain(x, ACT)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB without demodulation, + bias (1,1,1,3), + upsampled skip (torch `ToRGB`)."""

    upsample: bool = True
    blur_kernel: Sequence[float] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, style: jax.Array, skip: jax.Array | None = None) -> jax.Array:
        out = ModulatedConv2d(3, 1, demodulate=False, dtype=self.dtype, param_dtype=self.param_dtype,
                              name="conv")(x, style)
        bias = self.param("bias", partitioned(nn.initializers.zeros_init(), (None, None, None, None)),
                          (1, 1, 1, 3), self.param_dtype)
        out = out + bias.astype(out.dtype)
        if self.upsample:
            up = Upsample(taps=tuple(self.blur_kernel), dtype=self.dtype, param_dtype=self.param_dtype,
                          name="upsample")
            if skip is not None:
                out = out + up(skip)
            elif self.is_initializing():
                up(jnp.zeros((1, 2, 2, 3), self.dtype))
        elif skip is not None:
            raise ValueError(f"{self.name}: this ToRGB has no upsampler (the first one), so it takes no skip")
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 input `input` (1, 4, 4, C), repeated over the batch."""

    channels: int
    size: int = 4
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, batch: int) -> jax.Array:
        const = self.param("input", partitioned(nn.initializers.normal(1.0), (None, None, None, "conv_out")),
                           (1, self.size, self.size, self.channels), self.param_dtype)
        return jnp.broadcast_to(const, (batch, *const.shape[1:]))


class NoiseBuffers(nn.Module):
    """The fixed per-layer noise maps `noise_{i}` (1, r, r, 1) (torch buffers `noises.noise_{i}`)."""

    resolutions: tuple[int, ...]
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self) -> list[jax.Array]:
        return [self.param(f"noise_{i}", partitioned(nn.initializers.normal(1.0), (None, None, None, None)),
                           (1, r, r, 1), self.param_dtype) for i, r in enumerate(self.resolutions)]


def _mix_latents(styles: Sequence[jax.Array], n_latent: int, inject_index: Any) -> jax.Array:
    """W+ (B, n_latent, D) from one style (W or W+) or two (rows < inject_index from the first)."""
    def plus(s):
        if s.ndim == 2:
            return jnp.broadcast_to(s[:, None, :], (s.shape[0], n_latent, s.shape[1]))
        if s.ndim != 3 or s.shape[1] != n_latent:
            raise ValueError(f"a W+ style must be (B, {n_latent}, D), got {s.shape}")
        return s

    if len(styles) == 1:
        return plus(styles[0])
    a, b = plus(styles[0]), plus(styles[1])
    rows = jnp.arange(n_latent)[None, :, None]
    return jnp.where(rows < inject_index, a, b)


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    """The sizes of a StyleGAN2 generator: `Generator`'s constructor fields, and the generator part of a
    `DualStyleGAN`. A `channels` mapping {res: ch} is stored as the tuple for resolutions 4..size."""

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    lr_mlp: float = 0.01
    channels: tuple[int, ...] | None = None
    channel_scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "blur_kernel", tuple(self.blur_kernel))
        if self.channels is not None:
            object.__setattr__(self, "channels", resolve_channels(self.size, channels=self.channels))

    def generator(self, **kw: Any) -> Generator:
        """The `Generator` of these sizes (`kw`: dtype, param_dtype, name)."""
        return Generator(**dataclasses.asdict(self), **kw)


class Generator(nn.Module):
    """rosinality `Generator(size, style_dim, n_mlp, channel_multiplier, blur_kernel, lr_mlp)`, NHWC.

    `channels` (per resolution 4..size, or {res: ch}) overrides the table; `channel_scale` multiplies it.
    Call: `apply(v, styles, ...)` -> image (B, size, size, 3) (or `(image, latent)` with return_latents);
    `styles` is one array (z / W (B, D), or W+ (B, n_latent, D)) or a list of two for style mixing.
    """

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    blur_kernel: Sequence[float] = (1, 3, 3, 1)
    lr_mlp: float = 0.01
    channels: Sequence[int] | None = None
    channel_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def log_size(self) -> int:
        return log2_size(self.size)

    @property
    def n_latent(self) -> int:
        return 2 * self.log_size - 2

    @property
    def num_layers(self) -> int:
        return 2 * (self.log_size - 2) + 1

    @property
    def channel_list(self) -> tuple[int, ...]:
        return resolve_channels(self.size, self.channel_multiplier, self.channel_scale, self.channels)

    def setup(self) -> None:
        ch = self.channel_list
        kw = dict(blur_kernel=tuple(self.blur_kernel), dtype=self.dtype, param_dtype=self.param_dtype)
        self.style = MappingNetwork(self.n_mlp, self.style_dim, self.lr_mlp, param_dtype=self.param_dtype)
        self.input = ConstantInput(ch[0], param_dtype=self.param_dtype)
        self.conv1 = StyledConv(ch[0], 3, **kw)
        self.to_rgb1 = ToRGB(upsample=False, **kw)
        convs, to_rgbs = [], []
        for c in ch[1:]:
            convs += [StyledConv(c, 3, upsample=True, **kw), StyledConv(c, 3, **kw)]
            to_rgbs.append(ToRGB(**kw))
        self.convs = convs
        self.to_rgbs = to_rgbs
        self.noises = NoiseBuffers(tuple(2 ** ((i + 5) // 2) for i in range(self.num_layers)),
                                   param_dtype=self.param_dtype)

    def mapping(self, z: jax.Array) -> jax.Array:
        """z (..., D) -> w (..., D); works per row on Z+ (B, n_latent, D)."""
        return self.style(z)

    get_latent = mapping

    def mean_latent(self, n: int, rng: jax.Array) -> jax.Array:
        """(1, D) mean of `n` mapped N(0, 1) codes (the truncation centre)."""
        return jnp.mean(self.mapping(jax.random.normal(rng, (n, self.style_dim))), axis=0, keepdims=True)

    def make_latents(self, styles: jax.Array | Sequence[jax.Array], *, input_is_latent: bool = False,
                     truncation: float = 1.0, truncation_latent: jax.Array | None = None,
                     inject_index: Any = None) -> jax.Array:
        """The W+ code (B, n_latent, D): mapping (unless input_is_latent), truncation, style mixing."""
        styles = [styles] if not isinstance(styles, (list, tuple)) else list(styles)
        if len(styles) not in (1, 2):
            raise ValueError(f"styles: one or two codes, got {len(styles)}")
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if not (isinstance(truncation, (int, float)) and truncation >= 1):
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. mean_latent)")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) == 2 and inject_index is None:
            inject_index = jax.random.randint(self.make_rng("mixing"), (), 1, self.n_latent)
        return _mix_latents(styles, self.n_latent, inject_index)

    def noise_inputs(self, noise: str | Sequence[Noise] | None = None, randomize_noise: bool = True) -> list[Noise]:
        """Per-layer noise (length num_layers) from the generator-level `noise` argument."""
        buffers = self.noises()
        if noise is None:
            noise = "random" if randomize_noise else "const"
        if isinstance(noise, str):
            if noise not in NOISE_MODES:
                raise ValueError(f"noise must be a list of arrays or one of {NOISE_MODES}, got {noise!r}")
            return list(buffers) if noise == "const" else [noise] * self.num_layers
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"noise list needs {self.num_layers} entries (one per conv layer), got {len(noise)}")
        return noise

    def synthesis(self, latent: jax.Array, noise: Sequence[Noise]) -> jax.Array:
        """W+ (B, n_latent, D) and per-layer noise -> image (B, size, size, 3)."""
        latent = latent.astype(jnp.float32)
        out = self.input(latent.shape[0]).astype(self.dtype)
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for k, to_rgb in enumerate(self.to_rgbs):
            i = 2 * k + 1
            out = self.convs[2 * k](out, latent[:, i], noise[i])
            out = self.convs[2 * k + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip

    def __call__(self, styles: jax.Array | Sequence[jax.Array], *, return_latents: bool = False,
                 inject_index: Any = None, truncation: float = 1.0, truncation_latent: jax.Array | None = None,
                 input_is_latent: bool = False, noise: str | Sequence[Noise] | None = None,
                 randomize_noise: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
        if input_is_latent and self.is_initializing():  # create the mapping params too
            self.mapping(jnp.zeros((1, self.style_dim), jnp.float32))
        latent = self.make_latents(styles, input_is_latent=input_is_latent, truncation=truncation,
                                   truncation_latent=truncation_latent, inject_index=inject_index)
        image = self.synthesis(latent, self.noise_inputs(noise, randomize_noise))
        return (image, latent) if return_latents else image
