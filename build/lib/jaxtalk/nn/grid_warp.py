"""Flow fields, deformation grids and bilinear sampling with PyTorch's exact corner conventions.

PIRender / StyleHEAT / Style2Talker (`utils/flow_util.py`) build the deformation from a flow in pixel units as
`grid + 2 * flow / (size - 1)` over an align_corners=True-style base grid, but then sample with
`F.grid_sample` defaults (bilinear, zero padding, align_corners=False). The two conventions disagree by half a
pixel, so a zero flow is *not* the identity warp; it is reproduced here exactly because trained weights expect it.

Layout is channels-last throughout: images (B, H, W, C), flows and grids (B, H, W, 2) with [..., 0] = x.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _check_image(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a (batch, height, width, channels) array, got shape {x.shape}")


def _check_grid(g: jax.Array, name: str) -> None:
    if g.ndim != 4 or g.shape[-1] != 2:
        raise ValueError(f"{name}: expected a (batch, height, width, 2) array with x in [..., 0], got shape {g.shape}")


def coordinate_grid(height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """The (H, W, 2) base grid of `make_coordinate_grid`: x = 2*j/(W-1) - 1, y = 2*i/(H-1) - 1 (corners at +-1)."""
    if height < 2 or width < 2:
        raise ValueError(f"coordinate_grid needs at least 2x2 positions (it divides by size - 1), got {height}x{width}")
    x = 2 * (jnp.arange(width, dtype=jnp.float32) / (width - 1)) - 1
    y = 2 * (jnp.arange(height, dtype=jnp.float32) / (height - 1)) - 1
    grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
    return grid.astype(dtype)


def flow_to_deformation(flow: jax.Array) -> jax.Array:
    """`convert_flow_to_deformation`: a pixel-unit flow (B, H, W, 2) -> sampling grid (B, H, W, 2) in [-1, 1] units."""
    _check_grid(flow, "flow_to_deformation(flow)")
    _, h, w, _ = flow.shape
    flow = flow.astype(jnp.float32)
    norm = 2 * jnp.stack([flow[..., 0] / (w - 1), flow[..., 1] / (h - 1)], axis=-1)
    return coordinate_grid(h, w)[None] + norm


def _source_positions(out_size: int, in_size: int, align_corners: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lower index, upper index and fractional weight along one axis, as `upsample_bilinear2d` computes them."""
    dst = jnp.arange(out_size, dtype=jnp.float32)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    else:
        src = jnp.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
    hi = jnp.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo.astype(jnp.float32)


def resize_bilinear(x: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
    """`F.interpolate(mode='bilinear', align_corners=...)` (no antialiasing) on (B, H, W, C) to `size` = (h, w)."""
    _check_image(x, "resize_bilinear(x)")
    out_h, out_w = (int(s) for s in size)
    _, in_h, in_w, _ = x.shape
    if (out_h, out_w) == (in_h, in_w):
        return x
    y0, y1, fy = _source_positions(out_h, in_h, align_corners)
    x0, x1, fx = _source_positions(out_w, in_w, align_corners)
    xf = x.astype(jnp.float32)
    rows = xf[:, y0] * (1 - fy)[None, :, None, None] + xf[:, y1] * fy[None, :, None, None]
    out = rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]
    return out.astype(x.dtype)


def grid_sample(x: jax.Array, grid: jax.Array) -> jax.Array:
    """`F.grid_sample(x, grid)` with its defaults: bilinear, zero padding, align_corners=False.

    x (B, H, W, C); grid (B, Ho, Wo, 2) with x/y in [-1, 1] mapping to pixel `((g + 1) * size - 1) / 2`.
    Corners outside the image contribute zero. Coordinates are computed in float32.
    """
    _check_image(x, "grid_sample(x)")
    _check_grid(grid, "grid_sample(grid)")
    if grid.shape[0] != x.shape[0]:
        raise ValueError(f"grid_sample: batch of x ({x.shape[0]}) and grid ({grid.shape[0]}) differ")
    b, h, w, c = x.shape
    _, ho, wo, _ = grid.shape
    grid = grid.astype(jnp.float32)
    ix = ((grid[..., 0] + 1) * w - 1) / 2
    iy = ((grid[..., 1] + 1) * h - 1) / 2
    ix0 = jnp.floor(ix)
    iy0 = jnp.floor(iy)
    flat = x.reshape(b, h * w, c)

    def corner(cy: jax.Array, cx: jax.Array, weight: jax.Array) -> jax.Array:
        valid = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
        idx = (jnp.clip(cy, 0, h - 1) * w + jnp.clip(cx, 0, w - 1)).astype(jnp.int32).reshape(b, ho * wo, 1)
        vals = jnp.take_along_axis(flat, idx, axis=1).astype(jnp.float32).reshape(b, ho, wo, c)
        return vals * jnp.where(valid, weight, 0.0)[..., None]

    dx1, dy1 = ix - ix0, iy - iy0
    dx0, dy0 = 1 - dx1, 1 - dy1
    out = (corner(iy0, ix0, dy0 * dx0) + corner(iy0, ix0 + 1, dy0 * dx1)
           + corner(iy0 + 1, ix0, dy1 * dx0) + corner(iy0 + 1, ix0 + 1, dy1 * dx1))
    return out.astype(x.dtype)


def warp_image(x: jax.Array, deformation: jax.Array) -> jax.Array:
    """`flow_util.warp_image`: resize the deformation to x's size when they differ (bilinear,
    align_corners=False), then `grid_sample`."""
    _check_image(x, "warp_image(x)")
    _check_grid(deformation, "warp_image(deformation)")
    if deformation.shape[1:3] != x.shape[1:3]:
        deformation = resize_bilinear(deformation.astype(jnp.float32), x.shape[1:3], align_corners=False)
    return grid_sample(x, deformation)


def identity_flow(height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """The (H, W, 2) pixel flow whose deformation samples exactly at pixel centres under align_corners=False.

    It cancels the half-pixel mismatch of `flow_to_deformation` + `grid_sample`: f = (size - 1 - 2*index) / (2*size).
    """
    fx = (width - 1 - 2 * jnp.arange(width, dtype=jnp.float32)) / (2 * width)
    fy = (height - 1 - 2 * jnp.arange(height, dtype=jnp.float32)) / (2 * height)
    return jnp.stack(jnp.broadcast_arrays(fx[None, :], fy[:, None]), axis=-1).astype(dtype)
