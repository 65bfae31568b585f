"""Flow -> deformation and grid sampling against torch.nn.functional (grid_sample / interpolate)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxtalk.nn import grid_warp
from tests.parity import assert_close


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
    return t.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("out_hw", [(7, 9), (12, 5)])
def test_grid_sample_matches_torch_including_outside(out_hw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 8, 3)).astype(np.float32)
    grid = rng.uniform(-1.4, 1.4, (2, *out_hw, 2)).astype(np.float32)
    grid[0, 0, 0] = [-1.0, 1.0]  # exact corners
    grid[1, 0, 0] = [1.0 + 1 / 8, -1.0 - 1 / 6]  # exactly half a pixel outside: one valid corner row/col
    ref = F.grid_sample(_nchw(x), torch.from_numpy(grid), align_corners=False)
    out = jax.jit(grid_warp.grid_sample)(x, grid)
    assert_close(out, _nhwc(ref), name="grid_sample")


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(16, 10), (3, 5), (8, 8)])
def test_resize_bilinear_matches_interpolate(size, align_corners):
    x = np.random.default_rng(1).standard_normal((2, 8, 6, 4)).astype(np.float32)
    ref = F.interpolate(_nchw(x), size=size, mode="bilinear", align_corners=align_corners)
    out = grid_warp.resize_bilinear(jnp.asarray(x), size, align_corners=align_corners)
    assert_close(out, _nhwc(ref), name=f"resize {size} ac={align_corners}")


def test_deformation_grid_formula():
    flow = np.random.default_rng(2).standard_normal((1, 4, 5, 2)).astype(np.float32)
    d = np.asarray(grid_warp.flow_to_deformation(jnp.asarray(flow)))
    j = np.arange(5)[None, :]
    i = np.arange(4)[:, None]
    np.testing.assert_allclose(d[0, ..., 0], 2 * j / 4 - 1 + 2 * flow[0, ..., 0] / 4, rtol=0, atol=1e-6)
    np.testing.assert_allclose(d[0, ..., 1], 2 * i / 3 - 1 + 2 * flow[0, ..., 1] / 3, rtol=0, atol=1e-6)


def test_zero_flow_is_not_identity_but_identity_flow_is():
    x = np.random.default_rng(3).standard_normal((1, 8, 8, 2)).astype(np.float32)
    zero = grid_warp.warp_image(x, grid_warp.flow_to_deformation(jnp.zeros((1, 8, 8, 2))))
    assert np.max(np.abs(np.asarray(zero) - x)) > 0.1  # the original's half-pixel convention mismatch
    ident = grid_warp.warp_image(x, grid_warp.flow_to_deformation(grid_warp.identity_flow(8, 8)[None]))
    np.testing.assert_allclose(np.asarray(ident), x, rtol=0, atol=1e-5)


def test_bfloat16_and_bad_input():
    x = jnp.ones((1, 4, 4, 3), jnp.bfloat16)
    out = grid_warp.warp_image(x, grid_warp.flow_to_deformation(jnp.zeros((1, 2, 2, 2))))
    assert out.dtype == jnp.bfloat16 and out.shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 2\)"):
        grid_warp.flow_to_deformation(jnp.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="at least 2x2"):
        grid_warp.coordinate_grid(1, 4)
