"""Keypoint condition images: SVP's 8-point Head-Kps and V-Express's 3-point V-Kps, drawn with numpy.

Both follow the V-Express drawing (``datasets/utils.py draw_kps``): on a black canvas, each limb is a filled
ellipse along the segment (half-length = segment length / 2, half-width = the stick width) in the colour of its
first point scaled by 0.6 (truncated to an integer), and the points are drawn on top as filled circles at full
colour. Coordinates are truncated to integer pixels as in OpenCV.
The V-Express defaults (radius 4, stick width 4) are meant for 512-pixel images; with ``radius=None`` both sizes
scale with the image (4 at 512, at least 1).
"""

from __future__ import annotations

import numpy as np

V_KPS_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
V_KPS_LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2))  # left eye -> nose, right eye -> nose

HEAD_KPS_NAMES: tuple[str, ...] = (
    "face_left", "face_right", "pupil_left", "pupil_right", "bridge_0", "bridge_1", "bridge_2", "bridge_3",
)
HEAD_KPS_COLOURS = np.array([
    [255, 0, 0], [255, 128, 0], [255, 255, 0], [0, 255, 0],
    [0, 255, 255], [0, 96, 255], [160, 0, 255], [255, 0, 200],
], np.float32)
HEAD_KPS_LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 3), (2, 4), (3, 4), (4, 5), (5, 6), (6, 7))
V_KPS_FROM_HEAD_KPS = (2, 3, 7)  # pupils and nose tip give the 3-point V-Kps set


def _size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (H, W) or an int, got {size!r}")
    return h, w


def _check_kps(kps, n: int, name: str) -> np.ndarray:
    kps = np.asarray(kps, np.float64)
    if kps.shape != (n, 2):
        raise ValueError(f"{name}: expected keypoints of shape ({n}, 2) in pixels (x, y), got {kps.shape}")
    if not np.all(np.isfinite(kps)):
        raise ValueError(f"{name}: keypoints contain NaN or inf")
    return kps


def _scaled(value, h: int, w: int) -> int:
    return int(value) if value is not None else max(1, int(round(4 * min(h, w) / 512)))


def _fill_limb(img: np.ndarray, p: np.ndarray, q: np.ndarray, stick: int, colour: np.ndarray) -> None:
    cx, cy = int(np.mean([p[0], q[0]])), int(np.mean([p[1], q[1]]))
    half_len = int(np.hypot(*(p - q)) / 2)
    angle = np.deg2rad(int(np.degrees(np.arctan2(p[1] - q[1], p[0] - q[0]))))
    a, b = max(half_len, 0) + 0.5, stick + 0.5
    ext = int(np.ceil(max(a, b))) + 1
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(cy - ext, 0), min(cy + ext + 1, h), max(cx - ext, 0), min(cx + ext + 1, w)
    if y1 <= y0 or x1 <= x0:
        return
    dy = np.arange(y0, y1)[:, None] - cy
    dx = np.arange(x0, x1)[None, :] - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    img[y0:y1, x0:x1][(u / a) ** 2 + (v / b) ** 2 <= 1.0] = colour


def _fill_circle(img: np.ndarray, p: np.ndarray, radius: int, colour: np.ndarray) -> None:
    cx, cy = int(p[0]), int(p[1])
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(cy - radius, 0), min(cy + radius + 1, h), max(cx - radius, 0), min(cx + radius + 1, w)
    if y1 <= y0 or x1 <= x0:
        return
    d2 = (np.arange(y0, y1)[:, None] - cy) ** 2 + (np.arange(x0, x1)[None, :] - cx) ** 2
    img[y0:y1, x0:x1][d2 <= radius * radius] = colour


def draw_kps(kps, size, colours: np.ndarray, limbs, radius: int | None = None,
             stick_width: int | None = None) -> np.ndarray:
    """Generic keypoint image: limbs at 60 % brightness, then filled circles. Returns uint8 (H, W, 3)."""
    h, w = _size(size)
    kps = np.asarray(kps, np.float64)
    radius, stick = _scaled(radius, h, w), _scaled(stick_width, h, w)
    img = np.zeros((h, w, 3), np.float32)
    for i, j in limbs or ():
        _fill_limb(img, kps[i], kps[j], stick, np.floor(colours[i] * 0.6))
    for p, colour in zip(kps, colours):
        _fill_circle(img, p, radius, colour)
    return img.astype(np.uint8)


def draw_head_kps(kps, size, limbs: bool = True, radius: int | None = None,
                  stick_width: int | None = None) -> np.ndarray:
    """SVP Head-Kps image: the 8 head keypoints (face edges, pupils, nose bridge) on black, uint8 (H, W, 3)."""
    kps = _check_kps(kps, 8, "draw_head_kps")
    return draw_kps(kps, size, HEAD_KPS_COLOURS, HEAD_KPS_LIMBS if limbs else (), radius, stick_width)


def draw_v_kps(kps3, size, radius: int | None = None, stick_width: int | None = None) -> np.ndarray:
    """V-Express V-Kps image from (left eye, right eye, nose): eye->nose limbs, R/G/B points, uint8 (H, W, 3)."""
    kps3 = _check_kps(kps3, 3, "draw_v_kps")
    return draw_kps(kps3, size, V_KPS_COLOURS, V_KPS_LIMBS, radius, stick_width)


def v_kps_from_head_kps(kps: np.ndarray) -> np.ndarray:
    """(..., 8, 2) head keypoints -> (..., 3, 2) V-Kps points (left pupil, right pupil, nose tip)."""
    return np.asarray(kps)[..., list(V_KPS_FROM_HEAD_KPS), :]


# Where the mouth lies relative to the V-Kps points, in units of the eye-midpoint -> nose-tip vector (along) and of
# the distance between the pupils (across): measured on the synthetic faces (every emotion, intensity and pose),
# whose lip landmarks span 0.16-1.69 along and -0.70-0.70 across.
MOUTH_ALONG = (0.15, 1.70)
MOUTH_ACROSS = 0.70


def mouth_boxes(kps: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(..., 8, 2) Head-Kps or (..., 3, 2) V-Kps points -> (..., 4) float32 mouth boxes (x0, y0, x1, y1): the
    axis-aligned bounds of the region below the nose tip where the lips lie, grown `scale` times about its centre
    (V-Express's lip mask takes its lip-landmark box twice as large). Used to weight the diffusion loss there."""
    kps = np.asarray(kps, np.float64)
    if kps.ndim >= 2 and kps.shape[-2] == len(HEAD_KPS_NAMES):
        kps = v_kps_from_head_kps(kps)
    if kps.ndim < 2 or kps.shape[-2:] != (3, 2):
        raise ValueError(f"mouth_boxes: expected (..., 8, 2) Head-Kps or (..., 3, 2) V-Kps points, got {kps.shape}")
    if not np.all(np.isfinite(kps)):
        raise ValueError("mouth_boxes: keypoints contain NaN or inf")
    eyes, tip = (kps[..., 0, :] + kps[..., 1, :]) / 2, kps[..., 2, :]
    down = tip - eyes
    across = kps[..., 1, :] - kps[..., 0, :]
    across = across / np.maximum(np.linalg.norm(across, axis=-1, keepdims=True), 1e-6)
    ipd = np.linalg.norm(kps[..., 1, :] - kps[..., 0, :], axis=-1, keepdims=True)
    lo, hi = MOUTH_ALONG
    centre = tip + down * (lo + hi) / 2
    half_down = down * (hi - lo) / 2 * scale
    half_across = across * ipd * MOUTH_ACROSS * scale
    corners = np.stack([centre + sa * half_down + sb * half_across for sa in (-1, 1) for sb in (-1, 1)], axis=-2)
    return np.concatenate([corners.min(axis=-2), corners.max(axis=-2)], axis=-1).astype(np.float32)


def box_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """(..., 4) pixel boxes (x0, y0, x1, y1) -> (..., size, size) float32 masks: each pixel's covered fraction."""
    boxes = np.asarray(boxes, np.float64)
    edges = np.arange(size, dtype=np.float64)

    def cover(a, b):  # (..., size): overlap of [a, b] with each pixel [i, i + 1]
        return np.clip(np.minimum(b[..., None], edges + 1) - np.maximum(a[..., None], edges), 0.0, 1.0)

    cx = cover(boxes[..., 0], boxes[..., 2])
    cy = cover(boxes[..., 1], boxes[..., 3])
    return (cy[..., :, None] * cx[..., None, :]).astype(np.float32)
