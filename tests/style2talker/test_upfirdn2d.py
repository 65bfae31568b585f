"""upfirdn2d vs the independent torch reference, plus the defining properties of the original op."""

import numpy as np
import pytest
import torch

from jaxtalk.nn import upfirdn2d as ufd
from tests.parity import assert_close
from tests.reference.stylegan_ops import fir_kernel, upfirdn2d_ref

RNG = np.random.default_rng(0)
ASYM = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.25, 4.0, 1.5]], np.float32)  # shows any flip error


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


@pytest.mark.parametrize("up,down,pad,kernel", [
    (1, 1, (1, 1), "blur"),
    (2, 1, (2, 1), "blur4"),
    (1, 2, (1, 1), "blur"),
    (2, 2, (1, 2), "asym"),
    (3, 1, (-1, 2), "asym"),
    (1, 1, (-2, -1), "asym"),
    (2, 3, (0, -1), "blur"),
    (1, 2, (3, 0), "asym"),
])
@pytest.mark.parametrize("implementation", ["taps", "conv"])
def test_matches_reference(up, down, pad, kernel, implementation):
    x = RNG.standard_normal((2, 9, 7, 3)).astype(np.float32)
    k = {"blur": fir_kernel((1, 3, 3, 1)).numpy(), "blur4": fir_kernel((1, 3, 3, 1), 2).numpy(), "asym": ASYM}[kernel]
    out = ufd.upfirdn2d(x, k, up=up, down=down, pad=pad, implementation=implementation)
    ref = upfirdn2d_ref(_nchw(x), torch.from_numpy(k), up=up, down=down, pad=pad).permute(0, 2, 3, 1).numpy()
    assert_close(out, ref, name=f"upfirdn2d[{implementation}] up={up} down={down} pad={pad} {kernel}")
    for n, axis in ((9, 1), (7, 2)):
        assert out.shape[axis] == (n * up + pad[0] + pad[1] - k.shape[0]) // down + 1


def test_impulse_response_is_the_unflipped_kernel():
    # A true convolution of a delta returns the kernel itself (a correlation would return it flipped).
    x = np.zeros((1, 1, 1, 1), np.float32)
    x[0, 0, 0, 0] = 1.0
    out = np.asarray(ufd.upfirdn2d(x, ASYM, pad=(2, 2)))[0, :, :, 0]
    np.testing.assert_array_equal(out, ASYM)


def test_zero_insertion_places_samples_first():
    # up=2 with a 1x1 kernel: samples at even positions, zeros after them (trailing zero included).
    x = np.arange(1, 4, dtype=np.float32).reshape(1, 1, 3, 1)
    out = np.asarray(ufd.upfirdn2d(x, np.ones((1, 1), np.float32), up=2))[0, 0, :, 0]
    np.testing.assert_array_equal(out, [1, 0, 2, 0, 3, 0])


def test_resampling_helpers_sizes_and_gain():
    x = np.full((1, 8, 8, 2), 3.0, np.float32)
    up = np.asarray(ufd.upsample(x))
    down = np.asarray(ufd.downsample(x))
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 3.0, rtol=1e-6)  # kernel x factor^2 keeps a constant
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0, rtol=1e-6)
    b = np.asarray(ufd.blur(x, pad=(2, 1)))
    assert b.shape == (1, 8, 8, 2)


def test_auto_filters_by_taps_on_cpu_for_small_kernels_only():
    import jax

    x = RNG.standard_normal((1, 12, 12, 2)).astype(np.float32)
    small, large = ASYM, np.ones((7, 6), np.float32)  # 9 taps; 42 > TAPS_MAX_SIZE
    assert large.size > ufd.TAPS_MAX_SIZE >= small.size
    lowered = lambda k: str(jax.make_jaxpr(lambda x: ufd.upfirdn2d(x, k, pad=(3, 3)))(x))  # noqa: E731
    assert "conv_general_dilated" not in lowered(small)
    assert "conv_general_dilated" in lowered(large)


def test_gradients_of_both_implementations_agree():
    import jax
    import jax.numpy as jnp

    x = RNG.standard_normal((2, 6, 5, 3)).astype(np.float32)

    def loss(x, k, impl):
        return jnp.sum(jnp.sin(ufd.upfirdn2d(x, k, up=2, down=1, pad=(1, 2), implementation=impl)))

    grads = {impl: jax.grad(loss, (0, 1))(x, jnp.asarray(ASYM), impl) for impl in ("taps", "conv")}
    for a, b, name in zip(grads["taps"], grads["conv"], ("dx", "dkernel")):
        assert_close(a, b, name=f"upfirdn2d gradient {name}")


def test_bad_inputs():
    with pytest.raises(ValueError, match="x must be"):
        ufd.upfirdn2d(np.zeros((4, 4, 3), np.float32), ASYM)
    with pytest.raises(ValueError, match="implementation must be"):
        ufd.upfirdn2d(np.zeros((1, 4, 4, 1), np.float32), ASYM, implementation="fft")
    with pytest.raises(ValueError, match="shorter than the kernel"):
        ufd.upfirdn2d(np.zeros((1, 2, 2, 1), np.float32), ASYM, pad=(-1, 0))
