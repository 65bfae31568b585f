"""pSp `GradualStyleEncoder(50, 'ir_se')` (Richardson et al. 2021), as VToonify / DualStyleGAN / Style2Talker use it.

An IR-SE50 ResNet body (bottleneck units with squeeze-excitation and PReLU, eval-mode BatchNorm), taps after the
2nd, 3rd and 4th stages, an FPN top-down path (bilinear up, align_corners=True, + 1x1 lateral conv), and 18
GradualStyleBlocks (stride-2 convs down to 1x1, then an EqualLinear): styles 0-2 from the coarsest map, 3-6 from
the middle and 7-17 from the finest. VToonify's encoder outputs Z+ codes; `VToonify.zplus2wplus` maps them to W+
with the StyleGAN mapping network row by row. With `latent_avg` (stored in pSp checkpoints, added by
`load_psp_standalone`'s forward hook) the codes are offset by it.

Channels-last; BatchNorm running statistics live in the `batch_stats` collection.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers
from jaxtalk.nn.equalized import EqualLinear
from jaxtalk.nn.grid_warp import resize_bilinear

Dtype = Any


def batch_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.BatchNorm:
    """Eval-mode `nn.BatchNorm2d` (eps 1e-5): running statistics, float32 normalisation."""
    return nn.BatchNorm(use_running_average=True, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
                        scale_init=layers.partitioned(nn.initializers.ones_init(), ("norm",)),
                        bias_init=layers.partitioned(nn.initializers.zeros_init(), ("norm",)), name=name)


class PReLU(nn.Module):
    """`nn.PReLU(C)`: per-channel slope `weight` (init 0.25) on the negative part."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("weight", layers.partitioned(nn.initializers.constant(0.25), ("norm",)), (x.shape[-1],),
                       self.param_dtype)
        return jnp.where(x >= 0, x, w.astype(x.dtype) * x)


class SEModule(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))), 1x1 convs without bias."""

    reduction: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        s = nn.relu(layers.conv(c // self.reduction, (1, 1), name="fc1", **kw)(s))
        s = jax.nn.sigmoid(layers.conv(c, (1, 1), name="fc2", **kw)(s))
        return x * s


class BottleneckIRSE(nn.Module):
    """`bottleneck_IR_SE`: BN -> conv3 -> PReLU -> conv3(stride) -> BN -> SE, plus a max-pool(1, stride) or
    conv1x1(stride)+BN shortcut."""

    depth: int
    stride: int
    se_reduction: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if x.shape[-1] == self.depth:
            shortcut = x[:, ::self.stride, ::self.stride]
        else:
            shortcut = layers.conv(self.depth, (1, 1), strides=self.stride, use_bias=False, name="shortcut_layer_0", **kw)(x)
            shortcut = batch_norm("shortcut_layer_1", **kw)(shortcut)
        r = batch_norm("res_layer_0", **kw)(x)
        r = layers.conv(self.depth, (3, 3), padding=1, use_bias=False, name="res_layer_1", **kw)(r)
        r = PReLU(self.param_dtype, name="res_layer_2")(r)
        r = layers.conv(self.depth, (3, 3), strides=self.stride, padding=1, use_bias=False, name="res_layer_3", **kw)(r)
        r = batch_norm("res_layer_4", **kw)(r)
        r = SEModule(self.se_reduction, name="res_layer_5", **kw)(r)
        return r + shortcut


class GradualStyleBlock(nn.Module):
    """log2(spatial) x [conv3 stride 2 + LeakyReLU(0.01)] down to 1x1, then EqualLinear(out, out)."""

    features: int
    spatial: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(int(math.log2(self.spatial))):
            x = nn.leaky_relu(layers.conv(self.features, (3, 3), strides=2, padding=1, name=f"convs_{2 * j}", **kw)(x), 0.01)
        if x.shape[1:3] != (1, 1):
            raise ValueError(f"GradualStyleBlock: the map must reach 1x1 after {int(math.log2(self.spatial))} stride-2 "
                             f"convs, got {x.shape[1:3]}; the encoder input size does not match `input_size`")
        return EqualLinear(self.features, lr_mul=1.0, name="linear", **kw)(x.reshape(x.shape[0], self.features))


class GradualStyleEncoder(nn.Module):
    """image (B, input_size, input_size, input_nc) in [-1, 1] -> codes (B, n_styles, style_dim).

    Defaults are IR-SE50 at 256 px with 18 styles. `widths`/`units` describe the 4 stages (the first unit of each
    has stride 2); `widths[3]` must equal `style_dim` (the FPN adds the last stage to the laterals).
    `latent_avg_shape`: hold the pSp checkpoint's `latent_avg` ((n_styles, style_dim) or (style_dim,)) and add it
    to the codes, as `load_psp_standalone`'s hook does; None for a bare encoder.
    """

    input_nc: int = 3
    input_size: int = 256
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    units: tuple[int, int, int, int] = (3, 4, 14, 3)
    style_dim: int = 512
    n_styles: int = 18
    coarse_ind: int = 3
    middle_ind: int = 7
    se_reduction: int = 16
    latent_avg_shape: tuple[int, ...] | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        if self.widths[3] != self.style_dim:
            raise ValueError(f"GradualStyleEncoder: widths[3]={self.widths[3]} must equal style_dim={self.style_dim}")
        expect = (self.input_size, self.input_size, self.input_nc)
        if image.ndim != 4 or image.shape[1:] != expect:
            raise ValueError(f"GradualStyleEncoder: expected images (batch, {expect[0]}, {expect[1]}, {expect[2]}) "
                             f"(pSp pools its input to {self.input_size}), got {image.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.conv(self.widths[0], (3, 3), padding=1, use_bias=False, name="input_layer_0", **kw)(image.astype(self.dtype))
        x = batch_norm("input_layer_1", **kw)(x)
        x = PReLU(self.param_dtype, name="input_layer_2")(x)

        taps, idx = [], 0
        for stage, (depth, n) in enumerate(zip(self.widths, self.units)):
            for u in range(n):
                x = BottleneckIRSE(depth, 2 if u == 0 else 1, self.se_reduction, name=f"body_{idx}", **kw)(x)
                idx += 1
            if stage >= 1:
                taps.append(x)  # c1, c2, c3: ends of stages 2, 3, 4 (body[6], body[20], body[23] for IR-SE50)
        c1, c2, c3 = taps

        def upsample_add(top: jax.Array, lateral: jax.Array) -> jax.Array:
            return resize_bilinear(top, lateral.shape[1:3], align_corners=True) + lateral

        s = self.input_size
        sources = [(c3, s // 16)]
        p2 = upsample_add(c3, layers.conv(self.style_dim, (1, 1), name="latlayer1", **kw)(c2))
        sources.append((p2, s // 8))
        p1 = upsample_add(p2, layers.conv(self.style_dim, (1, 1), name="latlayer2", **kw)(c1))
        sources.append((p1, s // 4))

        codes = []
        for j in range(self.n_styles):
            src, spatial = sources[0 if j < self.coarse_ind else 1 if j < self.middle_ind else 2]
            codes.append(GradualStyleBlock(self.style_dim, spatial, name=f"styles_{j}", **kw)(src))
        codes = jnp.stack(codes, axis=1)
        if self.latent_avg_shape is not None:
            shape = tuple(self.latent_avg_shape)
            names = (None,) * (len(shape) - 1) + ("embed",)
            avg = self.param("latent_avg", layers.partitioned(nn.initializers.zeros_init(), names), shape,
                             self.param_dtype)
            codes = codes + avg.astype(codes.dtype)
        return codes

