"""Modulated convolution (plain, upsample, downsample; demod on/off) vs the independent per-sample reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxtalk.nn.equalized import ConvLayer, EqualLinear
from jaxtalk.nn.modulated_conv import ModulatedConv2d
from tests.parity import assert_close
from tests.reference.stylegan_ops import equal_linear_ref, fir_kernel, modulated_conv_ref, upfirdn2d_ref


def _t(x):
    return torch.from_numpy(np.asarray(x))


def _init(module, *args):
    """Unboxed float32 numpy params (mutable copies); jitted rbg init compiles far faster on CPU than eager threefry."""
    return jax.tree.map(np.array, nn.meta.unbox(jax.jit(module.init)(jax.random.key(0, impl="rbg"), *args)["params"]))


@pytest.mark.parametrize("k,demodulate,upsample,downsample", [
    (3, True, False, False),
    (3, False, False, False),
    (1, False, False, False),
    (3, True, True, False),
    (3, False, True, False),
    (3, True, False, True),
])
def test_modulated_conv_matches_reference(k, demodulate, upsample, downsample):
    rng = np.random.default_rng(1)
    b, cin, cout, d, hw = 2, 6, 5, 8, 8
    x = rng.standard_normal((b, hw, hw, cin)).astype(np.float32)
    style = rng.standard_normal((b, d)).astype(np.float32)
    mod = ModulatedConv2d(cout, k, demodulate=demodulate, upsample=upsample, downsample=downsample)
    params = _init(mod, x, style)
    params["modulation"]["bias"] = params["modulation"]["bias"] + 0.3 * rng.standard_normal(cin).astype(np.float32)
    out = jax.jit(mod.apply)({"params": params}, x, style)
    weight = np.transpose(params["kernel"][0], (3, 2, 0, 1))  # (out, in, k, k)
    ref = modulated_conv_ref(_t(x).permute(0, 3, 1, 2), _t(weight), _t(style),
                             _t(params["modulation"]["kernel"].T), _t(params["modulation"]["bias"]),
                             demodulate=demodulate, upsample=upsample, downsample=downsample)
    expected_hw = hw * 2 if upsample else hw // 2 if downsample else hw
    assert out.shape == (b, expected_hw, expected_hw, cout)
    assert_close(out, ref.permute(0, 2, 3, 1).numpy(), name=f"modconv k={k} demod={demodulate} up={upsample} "
                                                            f"down={downsample}")
    if upsample or downsample:
        np.testing.assert_array_equal(params["blur"]["fir_kernel"], fir_kernel((1, 3, 3, 1), 2 if upsample else 1))


def test_demodulated_output_is_style_scale_invariant():
    # Demodulation (eq. 3) removes any per-sample scale of s: scaling the modulation by c changes nothing.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 6, 6, 4)).astype(np.float32)
    style = rng.standard_normal((1, 8)).astype(np.float32)
    mod = ModulatedConv2d(3, 3)
    params = _init(mod, x, style)
    scaled = jax.tree.map(lambda a: a, params)
    scaled["modulation"] = {k: v * 5.0 for k, v in params["modulation"].items()}
    run = jax.jit(lambda p: mod.apply({"params": p}, x, style))
    np.testing.assert_allclose(run(scaled), run(params), rtol=1e-4, atol=1e-5)


def test_equal_linear_and_conv_layer_match_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    lin = EqualLinear(5, lr_mul=0.01, bias_init=0.5, activation="fused_lrelu")
    p = _init(lin, x)
    ref = equal_linear_ref(_t(x), _t(p["kernel"].T), _t(p["bias"]), lr_mul=0.01, activation=True)
    assert_close(lin.apply({"params": p}, x), ref.numpy(), name="EqualLinear fused_lrelu")

    img = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    layer = ConvLayer(6, 3, downsample=True)
    p = _init(layer, img)
    assert set(p) == {"0", "1", "2"}  # torch Sequential: Blur, EqualConv2d, FusedLeakyReLU
    p["2"]["bias"] = rng.standard_normal(6).astype(np.float32)
    w = _t(np.transpose(p["1"]["kernel"], (3, 2, 0, 1))) / np.sqrt(4 * 9)
    xb = upfirdn2d_ref(_t(img).permute(0, 3, 1, 2), fir_kernel((1, 3, 3, 1)), pad=(2, 2))
    ref = torch.nn.functional.conv2d(xb, w, stride=2)
    ref = torch.nn.functional.leaky_relu(ref + _t(p["2"]["bias"])[None, :, None, None], 0.2) * np.sqrt(2)
    assert_close(jax.jit(layer.apply)({"params": p}, img), ref.permute(0, 2, 3, 1).numpy(), name="ConvLayer downsample")


def test_bf16_compute_runs():
    x = jnp.ones((1, 8, 8, 4), jnp.bfloat16)
    mod = ModulatedConv2d(4, 3, upsample=True, dtype=jnp.bfloat16)
    v = jax.jit(mod.init)(jax.random.key(0, impl="rbg"), x, jnp.ones((1, 8)))
    out = jax.jit(mod.apply)(v, x, jnp.ones((1, 8)))
    assert out.dtype == jnp.bfloat16 and out.shape == (1, 16, 16, 4) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("implementation", ["phase", "dilated"])
@pytest.mark.parametrize("kernel", [(3, 3), (4, 4), (1, 1), (3, 2)])
def test_conv_transpose_equals_torch(kernel, implementation):
    from jaxtalk.nn.modulated_conv import conv_transpose_stride2

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    w = rng.standard_normal((*kernel, 3, 6)).astype(np.float32)
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                               torch.from_numpy(w.transpose(2, 3, 0, 1).copy()), stride=2)
    assert_close(conv_transpose_stride2(x, w, implementation), ref.numpy().transpose(0, 2, 3, 1),
                 name=f"conv_transpose[{implementation}]{kernel}")
