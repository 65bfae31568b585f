"""StyleGAN2 modulated convolution with weight demodulation (Karras et al. 2020, eqs. 1-3), channels-last.

    s = A(w)                                   affine style (EqualLinear, bias init 1)
    w'_{o,i,k}  = scale * w_{o,i,k} * s_i       modulation, scale = 1/sqrt(in * k * k)
    w''_{o,i,k} = w'_{o,i,k} / sqrt(sum_{i,k} w'^2 + 1e-8)    demodulation

Computed in the "unfused" form: scale the input by s, run ONE ordinary batched convolution with the shared
weight, scale the output by the demodulation coefficients. It is mathematically identical to the per-sample
(grouped) convolution and is what XLA compiles fastest: a plain conv with a batch dimension, no
batch-sized feature groups. The upsampling path is the transposed convolution (stride 2, no padding) followed
by a [1,3,3,1] blur with the kernel x4, exactly as the rosinality StyleGAN2 port; the downsampling path blurs
first and convolves with stride 2. The transposed convolution runs by output phase (`conv_transpose_stride2`):
four stride-1 convolutions with the taps of each parity, interleaved, instead of one convolution over the
zero-dilated input (4x the multiplications), on CPU where that was measured faster.

The weight is stored as `kernel` (1, k, k, in, out) — the torch `weight` (1, out, in, k, k) with the same
leading 1 — so checkpoint converters can tell it from an ordinary conv kernel by rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn.equalized import EqualLinear
from jaxtalk.nn.layers import conv_general_dilated, partitioned
from jaxtalk.nn.upfirdn2d import Blur

Dtype = Any
DEMOD_EPS = 1e-8
_DN = ("NHWC", "HWIO", "NHWC")


def demodulation(weight: jax.Array, s: jax.Array, eps: float = DEMOD_EPS) -> jax.Array:
    """(B, out) coefficients 1/sqrt(sum_{i,kh,kw} (weight * s_i)^2 + eps); weight (k, k, in, out), s (B, in)."""
    wsq = jnp.sum(jnp.square(weight.astype(jnp.float32)), axis=(0, 1))  # (in, out)
    return jax.lax.rsqrt(jnp.dot(jnp.square(s.astype(jnp.float32)), wsq) + eps)


def conv_transpose_stride2(x: jax.Array, weight: jax.Array, implementation: str = "auto") -> jax.Array:
    """torch `conv_transpose2d(x, weight, stride=2, padding=0)` for NHWC x and a (k, k, in, out) weight, output
    (2 (H - 1) + k, 2 (W - 1) + k).

    "phase" (the CPU default): output row 2m + p sums x[m - j] * weight[p + 2j], so per output parity (p, q) a
    stride-1 correlation with that parity's taps in reverse order, the four results interleaved. "dilated" (the
    default elsewhere, where it is not measured slower): one correlation of the zero-dilated input with the
    spatially flipped kernel."""
    if implementation == "auto":
        implementation = "phase" if jax.default_backend() == "cpu" else "dilated"
    if implementation == "dilated":
        k = weight.shape[:2]
        return jax.lax.conv_general_dilated(x, weight[::-1, ::-1], (1, 1), [(k[0] - 1,) * 2, (k[1] - 1,) * 2],
                                            lhs_dilation=(2, 2), dimension_numbers=_DN)
    if implementation != "phase":
        raise ValueError(f"conv_transpose_stride2: implementation must be 'auto', 'phase' or 'dilated', "
                         f"got {implementation!r}")
    k = weight.shape[0]
    b, h, w, _ = x.shape
    out_h, out_w = 2 * (h - 1) + k, 2 * (w - 1) + weight.shape[1]
    ny, nx = (out_h + 1) // 2, (out_w + 1) // 2
    rows = []
    for p in (0, 1):
        cols = []
        for q in (0, 1):
            ty, tx = list(range(p, k, 2))[::-1], list(range(q, weight.shape[1], 2))[::-1]
            if not ty or not tx:  # a 1-tap kernel leaves the odd phase empty
                cols.append(jnp.zeros((b, ny, nx, weight.shape[-1]), x.dtype))
                continue
            taps = weight[jnp.asarray(ty)][:, jnp.asarray(tx)]
            phase = conv_general_dilated(x, taps, (1, 1), [(len(ty) - 1,) * 2, (len(tx) - 1,) * 2],
                                         dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, taps.shape, _DN))
            cols.append(jnp.pad(phase, ((0, 0), (0, ny - phase.shape[1]), (0, nx - phase.shape[2]), (0, 0))))
        rows.append(jnp.stack(cols, axis=3))  # (B, ny, nx, 2, out)
    out = jnp.stack(rows, axis=2)  # (B, ny, 2, nx, 2, out)
    return out.reshape(b, 2 * ny, 2 * nx, -1)[:, :out_h, :out_w]


def modulated_conv2d(x: jax.Array, weight: jax.Array, s: jax.Array, *, demodulate: bool = True,
                     upsample: bool = False, downsample: bool = False,
                     blur_fn: Any = None) -> jax.Array:
    """Modulated conv of x (B, H, W, in) with weight (k, k, in, out) (already equal-lr scaled) and styles s (B, in).

    `blur_fn` is the FIR blur applied after the transposed conv (upsample) or before the strided conv
    (downsample). Returns (B, H', W', out).
    """
    k = weight.shape[0]
    w = weight.astype(x.dtype)
    h = x * s.astype(x.dtype)[:, None, None, :]
    if upsample:
        h = blur_fn(conv_transpose_stride2(h, w))
    elif downsample:
        h = blur_fn(h)
        h = jax.lax.conv_general_dilated(h, w, (2, 2), [(0, 0)] * 2, dimension_numbers=_DN)
    else:
        h = jax.lax.conv_general_dilated(h, w, (1, 1), [(k // 2, k // 2)] * 2, dimension_numbers=_DN)
    if demodulate:
        h = h * demodulation(weight, s).astype(h.dtype)[:, None, None, :]
    return h


class ModulatedConv2d(nn.Module):
    """torch `ModulatedConv2d(in, out, k, style_dim, demodulate, upsample, downsample, blur_kernel)`.

    Params: `kernel` (1, k, k, in, out) N(0, 1); `modulation` EqualLinear(style_dim -> in, bias init 1);
    `blur` (upsample / downsample only) holding the FIR kernel buffer. Call: (x (B,H,W,in), style (B,style_dim)).
    """

    features: int
    kernel_size: int
    demodulate: bool = True
    upsample: bool = False
    downsample: bool = False
    blur_kernel: Sequence[float] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
        if self.upsample and self.downsample:
            raise ValueError("ModulatedConv2d: upsample and downsample cannot both be set")
        k, in_ch = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", partitioned(nn.initializers.normal(1.0),
                                                  (None, "conv_kh", "conv_kw", "conv_in", "conv_out")),
                            (1, k, k, in_ch, self.features), self.param_dtype)
        s = EqualLinear(in_ch, bias_init=1.0, axes=("embed", "conv_in"), dtype=jnp.float32,
                        param_dtype=self.param_dtype, name="modulation")(style.astype(jnp.float32))
        blur_fn = None
        n_taps = len(self.blur_kernel)
        if self.upsample:
            p = (n_taps - 2) - (k - 1)
            blur_fn = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), taps=tuple(self.blur_kernel), upsample_factor=2,
                           dtype=self.dtype, param_dtype=self.param_dtype, name="blur")
        elif self.downsample:
            p = (n_taps - 2) + (k - 1)
            blur_fn = Blur(pad=((p + 1) // 2, p // 2), taps=tuple(self.blur_kernel), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="blur")
        weight = kernel[0] * (1.0 / math.sqrt(in_ch * k * k))
        return modulated_conv2d(x.astype(self.dtype), weight, s, demodulate=self.demodulate,
                                upsample=self.upsample, downsample=self.downsample, blur_fn=blur_fn)
