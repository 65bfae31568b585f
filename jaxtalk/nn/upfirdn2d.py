"""upfirdn2d: upsample (zero insertion), FIR filter, downsample — the StyleGAN2 resampling primitive, NHWC.

Semantics match the reference `upfirdn2d_native` of StyleGAN2 exactly, per spatial axis of length n:
  1. zero insertion: each sample is followed by `up - 1` zeros (length `n * up`, trailing zeros included);
  2. padding by `(p0, p1)`; negative values crop;
  3. a true convolution (VALID) with the kernel, i.e. a correlation with the kernel flipped on both axes;
  4. every `down`-th sample is kept.
The output length is `(n * up + p0 + p1 - k) // down + 1`.

Two implementations of the same maths. "conv": one XLA convolution — `lhs_dilation=up` inserts `up - 1` zeros
*between* samples (length `(n - 1) * up + 1`), so `up - 1` is added to the trailing pad; the window stride does the
decimation; negative pads are native to XLA; the filter is depthwise (`feature_group_count = C`). "taps": the same
zero insertion and padding as one `lax.pad`, then the sum over the kernel's kh x kw taps of strided slices times
the tap's weight, which XLA fuses into one elementwise loop. XLA:CPU's depthwise convolution is slow — a 4x4 blur
of a 256x256x128 map took 284 ms against 37 ms as taps on 2 cores, an up-2 filter of 128x128x256 1207 ms against
37 — so "auto" takes the taps on CPU for kernels of up to TAPS_MAX_SIZE taps and the convolution elsewhere.

`Blur`, `Upsample` and `Downsample` are modules holding the 2-D kernel as a non-trainable `fir_kernel` param
(the PyTorch buffer `*.kernel`, kept so checkpoint round trips are exact); their forward uses that param, as
the original uses its buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn.layers import depthwise_conv_by_taps, partitioned

Dtype = Any
Pad = int | tuple[int, int]
TAPS_MAX_SIZE = 36  # kh * kw up to which "auto" filters by taps on CPU (StyleGAN2's blur is 4 x 4)


def make_kernel(taps: Sequence[float] | np.ndarray, factor: int = 1) -> np.ndarray:
    """2-D FIR kernel from 1-D taps (outer product) or a 2-D array, normalised to sum 1, times `factor**2`."""
    k = np.asarray(taps, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2:
        raise ValueError(f"make_kernel: taps must be 1-D or 2-D, got shape {k.shape}")
    return (k / k.sum() * factor**2).astype(np.float32)


def _pair(v: Pad, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ValueError(f"upfirdn2d: {what} must be an int or a (lo, hi) pair, got {v!r}")
    return int(v[0]), int(v[1])


def upfirdn2d(x: jax.Array, kernel: jax.Array | np.ndarray, up: int = 1, down: int = 1,
              pad: Pad = (0, 0), implementation: str = "auto") -> jax.Array:
    """Upsample by `up`, pad by `pad` (lo, hi) on both spatial axes, FIR-filter with `kernel`, keep every `down`-th.

    x: (B, H, W, C); kernel: (kh, kw). Same maths as StyleGAN2's `upfirdn2d(x, kernel, up, down, pad)` in NCHW.
    `implementation`: "auto", "taps" or "conv" (see the module docstring).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be (B, H, W, C), got shape {x.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d: kernel must be 2-D (kh, kw), got shape {kernel.shape}")
    if up < 1 or down < 1:
        raise ValueError(f"upfirdn2d: up and down must be >= 1, got up={up}, down={down}")
    if implementation not in ("auto", "taps", "conv"):
        raise ValueError(f"upfirdn2d: implementation must be 'auto', 'taps' or 'conv', got {implementation!r}")
    p0, p1 = _pair(pad, "pad")
    _, h, w, c = x.shape
    kh, kw = kernel.shape
    for n, k, axis in ((h, kh, "H"), (w, kw, "W")):
        if n * up + p0 + p1 - k < 0:
            raise ValueError(f"upfirdn2d: {axis}={n} with up={up}, pad={(p0, p1)} is shorter than the kernel ({k})")
    if implementation == "auto":
        taps = jax.default_backend() == "cpu" and kh * kw <= TAPS_MAX_SIZE
        implementation = "taps" if taps else "conv"
    # Correlation with the flipped kernel == the true convolution of the reference op.
    weight = jnp.asarray(kernel, x.dtype)[::-1, ::-1]
    if implementation == "taps":
        return _filter_by_taps(x, weight, up, down, p0, p1)
    weight = jnp.broadcast_to(weight[:, :, None, None], (kh, kw, 1, c))
    return jax.lax.conv_general_dilated(
        x, weight,
        window_strides=(down, down),
        padding=[(p0, p1 + up - 1), (p0, p1 + up - 1)],
        lhs_dilation=(up, up),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )


def _filter_by_taps(x: jax.Array, weight: jax.Array, up: int, down: int, p0: int, p1: int) -> jax.Array:
    """Zero insertion and padding by one `lax.pad`, then the correlation with `weight` (the same on every channel)
    as a depthwise sum over its taps, keeping every `down`-th sample."""
    axis = (p0, p1 + up - 1, up - 1)  # (lo, hi, interior): n * up samples, then the pad; negative pads crop
    xp = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), axis, axis, (0, 0, 0)])
    per_channel = jnp.broadcast_to(weight[:, :, None], (*weight.shape, x.shape[-1]))
    return depthwise_conv_by_taps(xp, per_channel, (down, down), "VALID")


def upsample_pad(kernel_size: int, factor: int = 2) -> tuple[int, int]:
    """Pad of the StyleGAN2 `Upsample`: output is exactly `factor` times the input."""
    p = kernel_size - factor
    return (p + 1) // 2 + factor - 1, p // 2


def downsample_pad(kernel_size: int, factor: int = 2) -> tuple[int, int]:
    """Pad of the StyleGAN2 `Downsample`: output is exactly the input over `factor`."""
    p = kernel_size - factor
    return (p + 1) // 2, p // 2


def blur(x: jax.Array, taps: Sequence[float] = (1, 3, 3, 1), pad: Pad = (1, 1), upsample_factor: int = 1) -> jax.Array:
    """FIR blur with the normalised kernel (times `upsample_factor**2`, as after a stride-2 transposed conv)."""
    return upfirdn2d(x, make_kernel(taps, upsample_factor), pad=pad)


def upsample(x: jax.Array, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """Resolution x`factor` with the FIR kernel scaled by `factor**2` (keeps the mean)."""
    return upfirdn2d(x, make_kernel(taps, factor), up=factor, pad=upsample_pad(len(taps), factor))


def downsample(x: jax.Array, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """Resolution /`factor` after FIR low-pass filtering."""
    return upfirdn2d(x, make_kernel(taps), down=factor, pad=downsample_pad(len(taps), factor))


def _kernel_param(module: nn.Module, kernel: np.ndarray, dtype: Dtype) -> jax.Array:
    init = lambda rng, shape, dtype: jnp.asarray(kernel, dtype)
    return module.param("fir_kernel", partitioned(init, (None, None)), kernel.shape, dtype)


class Blur(nn.Module):
    """upfirdn2d(x, kernel, pad) with the kernel held as the `fir_kernel` param (torch buffer `blur.kernel`)."""

    pad: tuple[int, int]
    taps: Sequence[float] = (1, 3, 3, 1)
    upsample_factor: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = _kernel_param(self, make_kernel(self.taps, self.upsample_factor), self.param_dtype)
        return upfirdn2d(x.astype(self.dtype), kernel, pad=self.pad)


class Upsample(nn.Module):
    """x`factor` resampling (torch `Upsample`, buffer `upsample.kernel`)."""

    taps: Sequence[float] = (1, 3, 3, 1)
    factor: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = _kernel_param(self, make_kernel(self.taps, self.factor), self.param_dtype)
        return upfirdn2d(x.astype(self.dtype), kernel, up=self.factor, pad=upsample_pad(len(self.taps), self.factor))


class Downsample(nn.Module):
    """/`factor` resampling (torch `Downsample`, buffer `downsample.kernel`)."""

    taps: Sequence[float] = (1, 3, 3, 1)
    factor: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = _kernel_param(self, make_kernel(self.taps), self.param_dtype)
        return upfirdn2d(x.astype(self.dtype), kernel, down=self.factor,
                         pad=downsample_pad(len(self.taps), self.factor))
