"""Equalized-learning-rate layers of StyleGAN2 (Karras et al. 2020), channels-last.

Weights are stored N(0, 1) (divided by `lr_mul` for linear layers) and scaled at run time by
`1/sqrt(fan_in)` (times `lr_mul`), so every layer learns at the same rate under Adam. Param names follow the
PyTorch modules (`kernel` <-> `weight`, `bias`); `ConvLayer` children are named "0", "1", "2" like the
torch `nn.Sequential`, so the generic interop key rule gives `conv.0.weight`, `conv.1.bias`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn.layers import partitioned
from jaxtalk.nn.upfirdn2d import Blur

Dtype = Any
Initializer = Callable[..., jax.Array]
SQRT2 = math.sqrt(2.0)


def pixel_norm(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) over `axis` (the mapping network's input normalisation), float32 statistics."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=axis, keepdims=True) + eps)).astype(x.dtype)


def fused_leaky_relu(x: jax.Array, bias: jax.Array | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> jax.Array:
    """leaky_relu(x + bias, 0.2) * sqrt(2); `bias` broadcasts over the last (channel) axis."""
    if bias is not None:
        x = x + bias.astype(x.dtype)
    return jax.nn.leaky_relu(x, negative_slope) * jnp.asarray(scale, x.dtype)


class FusedLeakyReLU(nn.Module):
    """Bias add + leaky ReLU(0.2) x sqrt(2) (torch `FusedLeakyReLU(C)`, param `bias` zeros)."""

    use_bias: bool = True
    negative_slope: float = 0.2
    scale: float = SQRT2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros_init(), ("conv_out",)),
                              (x.shape[-1],), self.param_dtype)
        return fused_leaky_relu(x, bias, self.negative_slope, self.scale)


class EqualLinear(nn.Module):
    """y = x (W * lr_mul/sqrt(in)) + b * lr_mul, optionally followed by the fused leaky ReLU.

    `kernel` (in, out) is initialised N(0, 1)/lr_mul and `bias` to `bias_init` (torch stores `bias_init` too,
    the runtime bias is `bias * lr_mul`). `activation`: None or "fused_lrelu".
    """

    features: int
    use_bias: bool = True
    bias_init: float = 0.0
    lr_mul: float = 1.0
    activation: str | None = None
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    kernel_init: Initializer | None = None  # default N(0, 1) / lr_mul
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear: activation must be None or 'fused_lrelu', got {self.activation!r}")
        fan_in = x.shape[-1]
        kernel_init = self.kernel_init or (lambda rng, shape, dtype: jax.random.normal(rng, shape, dtype) / self.lr_mul)
        kernel = self.param("kernel", partitioned(kernel_init, self.axes), (fan_in, self.features), self.param_dtype)
        scale = self.lr_mul / math.sqrt(fan_in)
        y = jnp.dot(x.astype(self.dtype), (kernel * scale).astype(self.dtype))
        bias = None
        if self.use_bias:
            bias_init = nn.initializers.constant(self.bias_init)
            bias = self.param("bias", partitioned(bias_init, (self.axes[-1],)), (self.features,), self.param_dtype)
            bias = bias * self.lr_mul
        if self.activation == "fused_lrelu":
            return fused_leaky_relu(y, bias)
        return y if bias is None else y + bias.astype(y.dtype)


class EqualConv2d(nn.Module):
    """Conv with run-time scale 1/sqrt(in * k * k); `kernel` (k, k, in, out) N(0, 1), `bias` zeros."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int | Sequence[tuple[int, int]] = 0
    dilation: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.normal(1.0)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, fan_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", partitioned(self.kernel_init, ("conv_kh", "conv_kw", "conv_in", "conv_out")),
                            (k, k, fan_in, self.features), self.param_dtype)
        scale = 1.0 / math.sqrt(fan_in * k * k)
        pad = [(self.padding, self.padding)] * 2 if isinstance(self.padding, int) else list(self.padding)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), (kernel * scale).astype(self.dtype), (self.stride, self.stride), pad,
            rhs_dilation=(self.dilation, self.dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros_init(), ("conv_out",)),
                              (self.features,), self.param_dtype)
            y = y + bias.astype(y.dtype)
        return y


class ConvLayer(nn.Module):
    """StyleGAN2 `ConvLayer`: [Blur if downsample] -> EqualConv2d -> [FusedLeakyReLU].

    Children are "0", "1"(, "2") as in the torch `nn.Sequential`. The conv has its own bias only when not
    activated (the activation carries it). `dilation` follows the VToonify variant (padding k//2 + d - 1).
    """

    features: int
    kernel_size: int
    downsample: bool = False
    blur_kernel: Sequence[float] = (1, 3, 3, 1)
    use_bias: bool = True
    activate: bool = True
    dilation: int = 1
    kernel_init: Initializer = nn.initializers.normal(1.0)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        idx = 0
        k = self.kernel_size
        if self.downsample:
            p = (len(self.blur_kernel) - 2) + (k - 1)
            x = Blur(pad=((p + 1) // 2, p // 2), taps=tuple(self.blur_kernel), dtype=self.dtype,
                     param_dtype=self.param_dtype, name=str(idx))(x)
            idx += 1
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2 + self.dilation - 1
        x = EqualConv2d(self.features, k, stride=stride, padding=padding, dilation=self.dilation,
                        use_bias=self.use_bias and not self.activate, kernel_init=self.kernel_init, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=str(idx))(x)
        idx += 1
        if self.activate:
            x = FusedLeakyReLU(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                               name=str(idx))(x)
        return x
