"""diffusers `AutoencoderKL` (the SD VAE), channels-last.

    vae = AutoencoderKL(VAEConfig.from_diffusers(config_dict))
    mean, logvar = vae.apply(v, images[N,H,W,3], method='encode')     # images in [-1, 1]
    images = vae.apply(v, latents[N,h,w,4], method='decode')          # latents = z / scaling_factor
    frames = vae.decode_frames(params, latents[N,h,w,4], chunk=8)     # many frames, bounded memory

All GroupNorms use eps 1e-6; `logvar` is clamped to [-30, 20]; the stride-2 downsample pads (0, 1, 0, 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.backbones.unet_blocks import IMAGE_AXES, Downsample2D, ResnetBlock2D, Upsample2D
from jaxtalk.config import ConfigError, field, from_dict, to_dict
from jaxtalk.nn import layers
from jaxtalk.nn.attention import Attention

Dtype = Any
VAE_EPS = 1e-6

# diffusers keys with no effect on the computation here (a tiling default and a pipeline dtype hint).
_IGNORED = frozenset({"sample_size", "force_upcast"})
_REQUIRED = {"act_fn": "silu", "norm_type": "group"}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """A diffusers `AutoencoderKL` config (down blocks DownEncoderBlock2D, up blocks UpDecoderBlock2D)."""

    in_channels: int = field(3, min=1)
    out_channels: int = field(3, min=1)
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = field(1, min=1)
    latent_channels: int = field(4, min=1)
    norm_num_groups: int = field(32, min=1)
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("down_block_types", "up_block_types", "block_out_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        n = len(self.block_out_channels)
        if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ConfigError("VAEConfig: block_out_channels, down_block_types and up_block_types must have the "
                              "same non-zero length")
        for name, allowed in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            bad = [t for t in getattr(self, name) if t != allowed]
            if bad:
                raise ConfigError(f"VAEConfig.{name}: {bad[0]!r} is not supported; only {allowed!r}")
        for i, c in enumerate(self.block_out_channels):
            if c % self.norm_num_groups:
                raise ConfigError(f"VAEConfig: block_out_channels[{i}]={c} is not divisible by "
                                  f"norm_num_groups={self.norm_num_groups}")

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> VAEConfig:
        """From a diffusers `AutoencoderKL` config dict; unknown keys and unsupported settings are errors."""
        cfg = {k: v for k, v in dict(config).items() if not k.startswith("_") and k not in _IGNORED}
        for key, want in _REQUIRED.items():
            value = cfg.pop(key, want)
            if value != want:
                raise ConfigError(f"VAE config {key}={value!r} is not supported (only {want!r})")
        return from_dict(cls, cfg, "vae")

    def to_diffusers(self) -> dict[str, Any]:
        return to_dict(self)


# stabilityai/sd-vae-ft-mse, the SD1.x VAE (248 tensors, 83,653,863 parameters).
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2, "norm_num_groups": 32, "scaling_factor": 0.18215, "act_fn": "silu", "sample_size": 512,
}


class SpatialSelfAttention(Attention):
    """The VAE mid-block attention: GroupNorm, single-head self-attention over H*W (biased q/k/v), residual."""

    groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # type: ignore[override]
        n, h, w, c = x.shape
        y = layers.group_norm(self.groups, epsilon=VAE_EPS, name="group_norm", dtype=self.dtype,
                              param_dtype=self.param_dtype)(x)
        y = super().__call__(y.reshape(n, h * w, c)).reshape(n, h, w, c)
        return layers.constrain(y + x.astype(y.dtype), IMAGE_AXES)


class VAEMidBlock(nn.Module):
    """UNetMidBlock2D without time embedding: resnet, [attention], resnet."""

    groups: int
    add_attention: bool = True
    implementation: str = "auto"
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        x = ResnetBlock2D(c, groups=self.groups, eps=VAE_EPS, name="resnets_0", **kw)(x)
        if self.add_attention:
            x = SpatialSelfAttention(heads=1, dim_head=c, qkv_bias=True, groups=self.groups,
                                     implementation=self.implementation, query_chunk_size=self.query_chunk_size,
                                     name="attentions_0", **kw)(x)
        return ResnetBlock2D(c, groups=self.groups, eps=VAE_EPS, name="resnets_1", **kw)(x)


class _Coder(nn.Module):
    config: VAEConfig
    implementation: str = "auto"
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _kw(self) -> dict[str, Any]:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def mid(self) -> VAEMidBlock:
        return VAEMidBlock(self.config.norm_num_groups, self.config.mid_block_add_attention,
                           self.implementation, self.query_chunk_size, name="mid_block", **self._kw())

    def head(self, x: jax.Array, out_channels: int) -> jax.Array:
        x = nn.silu(layers.group_norm(self.config.norm_num_groups, epsilon=VAE_EPS, name="conv_norm_out",
                                      **self._kw())(x))
        return layers.conv(out_channels, (3, 3), padding=1, name="conv_out", **self._kw())(x)


class Encoder(_Coder):
    """conv_in, DownEncoderBlock2D x n (resnets; stride-2 downsample except the last), mid block, head -> 2*latent."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, kw = self.config, self._kw()
        x = layers.conv(cfg.block_out_channels[0], (3, 3), padding=1, name="conv_in", **kw)(x)
        for i, c in enumerate(cfg.block_out_channels):
            x = _EncoderBlock(c, cfg.layers_per_block, cfg.norm_num_groups, i < len(cfg.block_out_channels) - 1,
                              name=f"down_blocks_{i}", **kw)(x)
        return self.head(self.mid()(x), 2 * cfg.latent_channels)


class Decoder(_Coder):
    """conv_in, mid block, UpDecoderBlock2D x n (layers_per_block + 1 resnets; nearest-2x upsample), head."""

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg, kw = self.config, self._kw()
        x = layers.conv(cfg.block_out_channels[-1], (3, 3), padding=1, name="conv_in", **kw)(z)
        x = self.mid()(x)
        channels = cfg.block_out_channels[::-1]
        for i, c in enumerate(channels):
            x = _DecoderBlock(c, cfg.layers_per_block + 1, cfg.norm_num_groups, i < len(channels) - 1,
                              name=f"up_blocks_{i}", **kw)(x)
        return self.head(x, cfg.out_channels)


class _EncoderBlock(nn.Module):
    channels: int
    num_layers: int
    groups: int
    downsample: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(self.num_layers):
            x = ResnetBlock2D(self.channels, groups=self.groups, eps=VAE_EPS, name=f"resnets_{j}", **kw)(x)
        if self.downsample:
            x = Downsample2D(self.channels, padding=0, name="downsamplers_0", **kw)(x)
        return x


class _DecoderBlock(_EncoderBlock):
    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(self.num_layers):
            x = ResnetBlock2D(self.channels, groups=self.groups, eps=VAE_EPS, name=f"resnets_{j}", **kw)(x)
        if self.downsample:
            x = Upsample2D(self.channels, name="upsamplers_0", **kw)(x)
        return x


class AutoencoderKL(nn.Module):
    """The KL autoencoder. `__call__(x)` reconstructs from the posterior mean (used for init)."""

    config: VAEConfig
    implementation: str = "auto"
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        cfg = self.config
        kw = dict(config=cfg, implementation=self.implementation, query_chunk_size=self.query_chunk_size,
                  dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = Encoder(**kw)
        self.decoder = Decoder(**kw)
        ckw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.quant_conv = layers.conv(2 * cfg.latent_channels, (1, 1), **ckw) if cfg.use_quant_conv else None
        self.post_quant_conv = layers.conv(cfg.latent_channels, (1, 1), **ckw) if cfg.use_post_quant_conv else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images [N,H,W,in] in [-1, 1] -> (mean, logvar) [N,H/f,W/f,latent], logvar clamped to [-30, 20]."""
        if x.ndim != 4 or x.shape[-1] != self.config.in_channels:
            raise ValueError(f"encode expects images [N, H, W, {self.config.in_channels}] (NHWC), got {x.shape}")
        h = self.encoder(x.astype(self.dtype))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents [N,h,w,latent] (already divided by `scaling_factor`) -> images [N,H,W,out]."""
        if z.ndim != 4 or z.shape[-1] != self.config.latent_channels:
            raise ValueError(f"decode expects latents [N, h, w, {self.config.latent_channels}] (NHWC), got {z.shape}")
        z = z.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x: jax.Array) -> jax.Array:
        mean, _ = self.encode(x)
        return self.decode(mean)

    @nn.nowrap
    def decode_frames(self, params: Any, latents: jax.Array, chunk: int = 8) -> jax.Array:
        """Decode many frames [N,h,w,latent] `chunk` at a time under `lax.map` (peak memory of one chunk).

        Same contract as `decode` (latents already divided by `scaling_factor`); jit-compatible. The last chunk
        is zero-padded and the padding dropped.
        """
        if chunk < 1:
            raise ValueError(f"decode_frames: chunk must be >= 1, got {chunk}")
        n = latents.shape[0]
        steps = -(-n // chunk)
        padded = jnp.pad(latents, ((0, steps * chunk - n),) + ((0, 0),) * (latents.ndim - 1))
        batches = padded.reshape(steps, chunk, *latents.shape[1:])
        out = jax.lax.map(lambda z: self.apply({"params": params}, z, method=AutoencoderKL.decode), batches)
        return out.reshape(steps * chunk, *out.shape[2:])[:n]
