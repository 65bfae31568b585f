"""DualStyleGAN (Yang et al. 2022): a StyleGAN2 with an extrinsic style path, channels-last.

Layout (names = torch attributes, so the `dualstylegan` interop kind is the generic rule):
  `generator`  the StyleGAN2 `Generator` (intrinsic path; `generator.style` is its 8-layer mapping),
  `style`      the structure transform T_s: PixelNorm + (n_mlp - 6) EqualLinear(lr_mul 0.01, fused lrelu),
               applied to every W+ row of the extrinsic code -> "resstyles",
  `res_{i}`    i = 0 .. n_latent-1: AdaResBlock (ModRes, structure) for i <= res_index (after conv1 and the
               convs of the low resolutions), EqualLinear (colour transform T_c) above it; the T_c of row i
               maps the extrinsic code row i, then `w_i T_c(e_i) + (1 - w_i) w+_i` replaces the latent.
`res_index` is rounded down to even (res_index // 2 * 2) as in the original.

Style-A reuses the pieces: `resstyles(exstyle)`, `adastyles(exstyle)` (T_c applied to rows > res_index, the
rest unchanged), `res[i]`, and the generator's `convs[j]` / `to_rgbs[k]` via `self.generator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers
from jaxtalk.nn.equalized import ConvLayer, EqualLinear
from jaxtalk.style2talker.stylegan2 import MappingNetwork, Noise, StyleGAN2Config, log2_size, resolve_channels

Dtype = Any


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """InstanceNorm2d without affine: per-sample, per-channel over H, W; biased variance, float32 statistics."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _adain_bias_init(rng, shape, dtype):
    fin = shape[0] // 2
    return jnp.concatenate([jnp.ones((fin,), dtype), jnp.zeros((shape[0] - fin,), dtype)])


class AdaptiveInstanceNorm(nn.Module):
    """gamma * IN(x) + beta with (gamma, beta) = Linear(style) (torch `nn.Linear`, bias init [1.., 0..])."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
        fin = x.shape[-1]
        gb = layers.dense(2 * fin, name="style", axes=("embed", "mlp"), bias_init=_adain_bias_init,
                          dtype=jnp.float32, param_dtype=self.param_dtype)(style.astype(jnp.float32))
        gamma, beta = gb[:, None, None, :fin], gb[:, None, None, fin:]
        return (gamma * instance_norm(x).astype(jnp.float32) + beta).astype(self.dtype)


def _small_normal(rng, shape, dtype):
    return 0.01 * jax.random.normal(rng, shape, dtype)  # near-zero residual at init, as the original


class AdaResBlock(nn.Module):
    """ModRes: out = conv2(AdaIN2(conv(AdaIN(x, s)), s)); return out * w + x (w == 0 returns x unchanged).

    `dilation` is the VToonify variant's (padding k//2 + d - 1).
    """

    dilation: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, s: jax.Array, w: float | jax.Array = 1.0) -> jax.Array:
        if isinstance(w, (int, float)) and w == 0 and not self.is_initializing():
            return x
        fin = x.shape[-1]
        kw = dict(dilation=self.dilation, kernel_init=_small_normal, dtype=self.dtype, param_dtype=self.param_dtype)
        out = AdaptiveInstanceNorm(self.dtype, self.param_dtype, name="norm")(x, s)
        out = ConvLayer(fin, 3, name="conv", **kw)(out)
        out = AdaptiveInstanceNorm(self.dtype, self.param_dtype, name="norm2")(out, s)
        out = ConvLayer(fin, 3, name="conv2", **kw)(out)
        return out * jnp.asarray(w, out.dtype) + x.astype(out.dtype)


def _tc_init(rng, shape, dtype):
    """T_c starts near the identity after the equal-lr scale: eye * sqrt(D) + 0.01 N(0, 1)."""
    return jnp.eye(*shape, dtype=dtype) * math.sqrt(shape[0]) + 0.01 * jax.random.normal(rng, shape, dtype)


class DualStyleGAN(nn.Module):
    """williamyang1991 `DualStyleGAN(size, style_dim, n_mlp, channel_multiplier, res_index)`, NHWC: the
    generator's sizes are one `StyleGAN2Config`, plus `res_index`.

    Call: `apply(v, styles, exstyles, ...)` -> image (B, size, size, 3), `(image, latent)` with return_latents,
    or `(feature, skip)` with return_feat. `styles` as for `Generator`; `exstyles` the extrinsic code, W (B, D)
    or W+ (B, n_latent, D). `interp_weights` (len >= n_latent, Python floats or an array) weighs the extrinsic
    path per layer; `fuse_index` disables it above that layer; `use_res=False` is the plain generator.
    """

    stylegan2: StyleGAN2Config
    res_index: int = 6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def size(self) -> int:
        return self.stylegan2.size

    @property
    def style_dim(self) -> int:
        return self.stylegan2.style_dim

    @property
    def n_latent(self) -> int:
        return 2 * log2_size(self.size) - 2

    @property
    def channel_list(self) -> tuple[int, ...]:
        g = self.stylegan2
        return resolve_channels(g.size, g.channel_multiplier, g.channel_scale, g.channels)

    @property
    def structure_index(self) -> int:
        """Rows 0..structure_index use ModRes blocks (the original's `self.res_index`)."""
        return self.res_index // 2 * 2

    def setup(self) -> None:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        g = self.stylegan2
        self.style = MappingNetwork(max(g.n_mlp - 6, 0), g.style_dim, g.lr_mlp, param_dtype=self.param_dtype)
        self.generator = g.generator(**kw)
        res: list[nn.Module] = [AdaResBlock(**kw)]
        for level in range(3, log2_size(self.size) + 1):
            for _ in range(2):
                if level < 3 + self.structure_index // 2:
                    res.append(AdaResBlock(**kw))
                else:
                    res.append(EqualLinear(self.style_dim, kernel_init=_tc_init, axes=("embed", "mlp"),
                                           param_dtype=self.param_dtype))
        res.append(EqualLinear(self.style_dim, kernel_init=_tc_init, axes=("embed", "mlp"),
                               param_dtype=self.param_dtype))
        self.res = res

    def _plus(self, exstyle: jax.Array) -> jax.Array:
        if exstyle.ndim == 2:
            return jnp.broadcast_to(exstyle[:, None], (exstyle.shape[0], self.n_latent, exstyle.shape[1]))
        if exstyle.ndim != 3 or exstyle.shape[1] != self.n_latent:
            raise ValueError(f"exstyle must be (B, D) or (B, {self.n_latent}, D), got {exstyle.shape}")
        return exstyle

    def resstyles(self, exstyle: jax.Array) -> jax.Array:
        """T_s applied to every row of the extrinsic code: (B, n_latent, D) styles of the ModRes blocks."""
        return self.style(self._plus(exstyle).astype(jnp.float32))

    def adastyles(self, exstyle: jax.Array, start: int | None = None) -> jax.Array:
        """The extrinsic code with rows >= start (default structure_index + 1) passed through their T_c `res[i]`."""
        plus = self._plus(exstyle).astype(jnp.float32)
        start = self.structure_index + 1 if start is None else start
        rows = [plus[:, i] if i < start else self.res[i](plus[:, i]) for i in range(self.n_latent)]
        return jnp.stack(rows, axis=1)

    def __call__(self, styles: jax.Array | Sequence[jax.Array], exstyles: jax.Array | None, *,
                 return_latents: bool = False, return_feat: bool = False, inject_index: Any = None,
                 truncation: float = 1.0, truncation_latent: jax.Array | None = None, input_is_latent: bool = False,
                 noise: str | Sequence[Noise] | None = None, randomize_noise: bool = True,
                 z_plus_latent: bool = False, use_res: bool = True, fuse_index: int = 18,
                 interp_weights: Sequence[float] | jax.Array | None = None) -> Any:
        del z_plus_latent  # the mapping acts per row, so Z+ (B, n_latent, D) needs no flag here
        g = self.generator
        if self.is_initializing():  # create every param whatever the call path
            g.mapping(jnp.zeros((1, self.style_dim), jnp.float32))
        latent = g.make_latents(styles, input_is_latent=input_is_latent, truncation=truncation,
                                truncation_latent=truncation_latent, inject_index=inject_index)
        noise = g.noise_inputs(noise, randomize_noise)
        if use_res and exstyles is None:
            raise ValueError("use_res=True needs exstyles (the extrinsic W / W+ code)")
        n, r = self.n_latent, self.structure_index
        iw = [1.0] * 18 if interp_weights is None else interp_weights
        if len(iw) < n:
            raise ValueError(f"interp_weights needs at least n_latent={n} entries, got {len(iw)}")
        if use_res:
            resstyles = self.resstyles(exstyles)
            adastyles = self._plus(exstyles).astype(jnp.float32)

        def colour(i):  # the latent of layer i, mixed with the colour-transformed extrinsic code
            return iw[i] * self.res[i](adastyles[:, i]) + (1 - iw[i]) * latent[:, i]

        out = g.input(latent.shape[0]).astype(self.dtype)
        out = g.conv1(out, latent[:, 0], noise[0])
        if use_res and fuse_index > 0:
            out = self.res[0](out, resstyles[:, 0], iw[0])
        skip = g.to_rgb1(out, latent[:, 1])
        for k, to_rgb in enumerate(g.to_rgbs):
            i = 2 * k + 1
            structure = i <= r
            fused = [use_res and fuse_index >= i + j for j in range(3)]
            out = g.convs[2 * k](out, colour(i) if fused[0] and not structure else latent[:, i], noise[i])
            if fused[0] and structure:
                out = self.res[i](out, resstyles[:, i], iw[i])
            out = g.convs[2 * k + 1](out, colour(i + 1) if fused[1] and not structure else latent[:, i + 1],
                                     noise[i + 1])
            if fused[1] and structure:
                out = self.res[i + 1](out, resstyles[:, i + 1], iw[i + 1])
            skip = to_rgb(out, colour(i + 2) if fused[2] and i >= r - 1 else latent[:, i + 2], skip)
            if return_feat and i + 2 > r:
                return out, skip
        return (skip, latent) if return_latents else skip
