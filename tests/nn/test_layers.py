"""The CPU patch-matmul route of `layers.conv`: equal to lax's convolution (values and gradients), taken only
where it is meant to be."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.nn import layers
from tests.parity import assert_close


def _lax(x, w, padding, strides=(1, 1), groups=1):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups, precision="highest")


@pytest.mark.parametrize("kernel,padding", [((3, 3), [(1, 1), (1, 1)]), ((1, 1), [(0, 0), (0, 0)]),
                                            ((3, 2), [(0, 2), (1, 0)]), ((3, 3), [(0, 0), (0, 0)])])
def test_patch_matmul_equals_lax_convolution_and_its_gradients(kernel, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 6, 5, 7)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, 7, 3)), jnp.float32)
    assert_close(layers.patch_matmul_conv(x, w, padding, precision="highest"), _lax(x, w, padding),
                 name=f"patch_matmul{kernel}")
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    ours = jax.grad(loss(lambda x, w: layers.patch_matmul_conv(x, w, padding, precision="highest")), (0, 1))(x, w)
    ref = jax.grad(loss(lambda x, w: _lax(x, w, padding)), (0, 1))(x, w)
    for a, b, name in zip(ours, ref, ("dx", "dw")):
        assert_close(a, b, name=f"patch_matmul{kernel} {name}")


def _route(shape, features=8, kernel=(3, 3), padding=1, strides=1, groups=1):
    """'patch' or 'conv': what `layers.conv` lowers to for an input of `shape`; checks the value either way."""
    module = layers.conv(features, kernel, padding=padding, strides=strides, groups=groups)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
    variables = nn.unbox(module.init(jax.random.key(0), x))
    out = module.apply(variables, x)
    pad = [(padding, padding)] * 2
    ref = _lax(x, variables["params"]["kernel"], pad, (strides, strides), groups) + variables["params"]["bias"]
    assert_close(out, ref, name=f"conv{shape}")
    jaxpr = str(jax.make_jaxpr(lambda x: module.apply(variables, x))(x))
    return "conv" if "conv_general_dilated" in jaxpr else "patch"


def test_conv_takes_the_patch_route_only_for_small_wide_stride_one_maps():
    c = layers.PATCH_MATMUL_MIN_CHANNELS
    assert _route((1, 16, 16, c)) == "patch"                      # 256 output pixels, enough channels
    assert _route((2, 8, 8, c), kernel=(1, 1), padding=0) == "patch"
    assert _route((1, 17, 16, c)) == "conv"                       # one row too many
    assert _route((1, 8, 8, c - 1)) == "conv"                     # one channel too few
    assert _route((1, 16, 16, c), strides=2) == "conv"            # strided
    assert _route((1, 8, 8, c), groups=2) == "conv"               # grouped


@pytest.mark.parametrize("strides,padding,dilation", [((1, 1), "SAME", (1, 1)), ((2, 2), "SAME", (1, 1)),
                                                      ((1, 2), "VALID", (1, 1)), ((1, 1), "SAME", (2, 3)),
                                                      ((2, 1), [(0, 2), (1, 1)], (1, 1))])
def test_depthwise_conv_by_taps_equals_the_grouped_convolution(strides, padding, dilation):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 11, 9, 6)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 5, 6)), jnp.float32)
    ref = jax.lax.conv_general_dilated(x, kernel[:, :, None, :], strides, padding, rhs_dilation=dilation,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6,
                                       precision="highest")
    assert_close(layers.depthwise_conv_by_taps(x, kernel, strides, padding, dilation), ref,
                 name=f"depthwise taps {strides} {padding} {dilation}")
