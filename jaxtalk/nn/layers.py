"""Layer factories that carry logical partitioning names, so every model is shard-ready.

Each factory returns a configured flax module; call it inside a parent's `@nn.compact` (or `setup`) with the
PyTorch submodule name, e.g. `layers.dense(c, name="to_q")(x)`, so param paths mirror torch state-dict keys.

The logical vocabulary (mapped to mesh axes by `jaxtalk.parallel.LOGICAL_RULES`):
  params:      embed, mlp, heads, vocab, norm, conv_kh, conv_kw, conv_in, conv_out
  activations: act_batch, act_length, act_embed, act_heads, act_mlp, act_height, act_width, act_channels,
               act_frames

Norms use float32 statistics and the exact two-pass variance, as PyTorch does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]

# PyTorch's default init for Linear / Conv weights: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
torch_default_init: Initializer = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
zeros_init: Initializer = nn.initializers.zeros_init()


def partitioned(init: Initializer, names: Sequence[str | None]) -> Initializer:
    """Attach logical axis names to an initializer."""
    return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh / rules context)."""
    return nn.with_logical_constraint(x, tuple(names))


def dense(
    features: int,
    *,
    name: str | None = None,
    use_bias: bool = True,
    axes: tuple[str | None, str | None] = ("embed", "mlp"),
    kernel_init: Initializer = torch_default_init,
    bias_init: Initializer = zeros_init,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    precision: Any = None,
) -> nn.Dense:
    """Linear layer; kernel (in, out) with logical names `axes`, bias named after the output axis."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=partitioned(kernel_init, axes),
        bias_init=partitioned(bias_init, (axes[-1],)),
        name=name,
    )


# XLA:CPU's convolution runs at a third to a half of its matmul rate where the image is small and the channels
# many (SD's 16x16 to 4x4 levels: 26-75 GFLOP/s against torch's 61-162 at batch 1). There a stride-1 convolution
# runs as one matmul over the concatenated k*k shifted copies of the input (im2col), 1.3-1.7x faster on 2 cores;
# everywhere else, and on every other backend, it is lax's convolution (bench/unet_parts.py measures both).
PATCH_MATMUL_MIN_CHANNELS, PATCH_MATMUL_MAX_PIXELS = 640, 256
_NHWC_HWIO = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _patch_matmul_applies(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                          groups) -> bool:
    """True for a CPU 2-D, stride-1, undilated, ungrouped NHWC/HWIO convolution over small, wide feature maps."""
    ones = lambda v: v is None or all(int(d) == 1 for d in v)  # noqa: E731
    if (jax.default_backend() != "cpu" or lhs.ndim != 4 or groups != 1 or not ones(strides)
            or not ones(lhs_dilation) or not ones(rhs_dilation) or isinstance(padding, str)
            or tuple(tuple(d) for d in dimension_numbers) != _NHWC_HWIO):
        return False
    out_pixels = ((lhs.shape[1] + sum(padding[0]) - rhs.shape[0] + 1)
                  * (lhs.shape[2] + sum(padding[1]) - rhs.shape[1] + 1))
    return lhs.shape[-1] >= PATCH_MATMUL_MIN_CHANNELS and out_pixels <= PATCH_MATMUL_MAX_PIXELS


def patch_matmul_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]],
                      precision: Any = None) -> jax.Array:
    """Stride-1 NHWC convolution with an HWIO kernel as (B*H*W, kh*kw*C_in) @ (kh*kw*C_in, C_out)."""
    kh, kw, cin, cout = kernel.shape
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    b, hp, wp, _ = x.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    taps = [x[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    out = jnp.matmul(patches.reshape(b * ho * wo, kh * kw * cin), kernel.reshape(kh * kw * cin, cout),
                     precision=precision)
    return out.reshape(b, ho, wo, cout)


def depthwise_conv_by_taps(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
                           padding: str | Sequence[tuple[int, int]] = "VALID",
                           dilation: Sequence[int] = (1, 1)) -> jax.Array:
    """Depthwise NHWC convolution (one filter per channel, `kernel` (kh, kw, C)) as the sum over the kernel's taps of
    strided slices times that tap's per-channel weights. Equal to lax's convolution with `feature_group_count=C`,
    which XLA:CPU runs an order of magnitude slower (bench/faces.py)."""
    kh, kw, _ = kernel.shape
    sh, sw = strides
    dh, dw = dilation
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], ((kh - 1) * dh + 1, (kw - 1) * dw + 1), strides, padding)
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    b, hp, wp, c = x.shape
    ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            end = (b, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c)
            shifted = jax.lax.slice(x, (0, i * dh, j * dw, 0), end, (1, sh, sw, 1))
            term = shifted * kernel[i, j].astype(x.dtype)
            out = term if out is None else out + term
    return out


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None) -> jax.Array:
    """`lax.conv_general_dilated`, taking the patch-matmul route where XLA:CPU's convolution is slow."""
    if (dimension_numbers is not None and batch_group_count == 1 and preferred_element_type is None
            and _patch_matmul_applies(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                      dimension_numbers, feature_group_count)):
        return patch_matmul_conv(lhs, rhs, padding, precision)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)


def conv(
    features: int,
    kernel_size: Sequence[int] = (3, 3),
    *,
    name: str | None = None,
    strides: int | Sequence[int] = 1,
    padding: Any = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    use_bias: bool = True,
    kernel_init: Initializer = torch_default_init,
    bias_init: Initializer = zeros_init,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    precision: Any = None,
) -> nn.Conv:
    """Channels-last N-d convolution with PyTorch-style padding; kernel (*k, in/groups, out).

    `padding`: an int (the same on every side of every spatial dim, like torch), a sequence of (lo, hi) pairs,
    or a flax padding string.
    """
    nd = len(kernel_size)
    if isinstance(padding, int):
        padding = [(padding, padding)] * nd
    spatial = ("conv_kh", "conv_kw") if nd == 2 else ("conv_kh",) * nd
    return nn.Conv(
        features,
        kernel_size=tuple(kernel_size),
        strides=strides,
        padding=padding,
        kernel_dilation=dilation,
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        conv_general_dilated=conv_general_dilated,
        kernel_init=partitioned(kernel_init, (*spatial, "conv_in", "conv_out")),
        bias_init=partitioned(bias_init, ("conv_out",)),
        name=name,
    )


def group_norm(
    num_groups: int = 32,
    *,
    name: str | None = None,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.GroupNorm:
    """GroupNorm over the channel (last) axis, float32 statistics; scale/bias <-> torch weight/bias."""
    return nn.GroupNorm(
        num_groups=num_groups,
        epsilon=epsilon,
        use_scale=use_scale,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        scale_init=partitioned(nn.initializers.ones_init(), ("norm",)),
        bias_init=partitioned(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


def layer_norm(
    *,
    name: str | None = None,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.LayerNorm:
    """LayerNorm over the last axis, float32 statistics (torch `nn.LayerNorm`)."""
    return nn.LayerNorm(
        epsilon=epsilon,
        use_scale=use_scale,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        scale_init=partitioned(nn.initializers.ones_init(), ("norm",)),
        bias_init=partitioned(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


def per_frame(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Apply an image op to video (B, F, H, W, C) frame by frame (V-Express inflated conv / group norm)."""
    b, f = x.shape[:2]
    y = fn(x.reshape(b * f, *x.shape[2:]))
    return y.reshape(b, f, *y.shape[1:])


def gelu_exact(x: jax.Array) -> jax.Array:
    """torch.nn.functional.gelu default (erf form)."""
    return jax.nn.gelu(x, approximate=False)
