"""Vectorised numpy rasteriser for the synthetic talking faces, plus their 8 head keypoints.

The head is a 2.5-D model: an ellipsoid skull (face units: half-width 1, half-height `face_aspect`) with features
placed on its surface, rotated by the pose about a neck pivot and projected orthographically. Each shape is an
ellipse (the exact outline of a projected ellipsoid), a convex polygon, or a *band* between two quadratic curves
in a feature's local frame (eyes, brows, lips), evaluated only inside its pixel bounding box with a one-pixel soft
edge. No supersampling; a 128x128 frame costs a few milliseconds on one core.

Keypoints (x, y) in pixels, the SVP Head-Kps set: 0/1 left/right face edge at eye level, 2/3 left/right pupil,
4..7 nose bridge from between the eyes down to the nose tip ("left" is the image's left).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxtalk.data.facs import CONTROL_INDEX as _CI

_PIVOT = np.array([0.0, 1.2, -0.6])  # neck pivot of head rotations, face units
_EYE_WHITE = np.array([0.95, 0.95, 0.93], np.float32)
_PUPIL = np.array([0.04, 0.03, 0.03], np.float32)
_MOUTH = np.array([0.22, 0.04, 0.06], np.float32)
_TEETH = np.array([0.93, 0.92, 0.86], np.float32)


@dataclasses.dataclass(frozen=True)
class FaceStyle:
    """Appearance of one identity; colours are RGB in [0, 1], lengths in face units unless noted."""

    face_width: float  # head half-width as a fraction of the image side
    face_aspect: float  # head half-height / half-width
    jaw_width: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long, 2 cropped, 3 bob
    hair_volume: float
    fringe: float
    eye_spacing: float  # half the distance between eye centres
    eye_height: float  # eye centre y (negative is up)
    eye_size: float
    iris: tuple[float, float, float]
    brow_thickness: float
    nose_length: float
    nose_width: float
    mouth_width: float
    mouth_offset: float  # mouth below the nose tip
    lip: tuple[float, float, float]
    lip_thickness: float
    background: tuple[float, float, float]
    background2: tuple[float, float, float]
    pattern: int  # 0 gradient, 1 stripes, 2 blobs, 3 wall and floor
    pattern_scale: float
    shirt: tuple[float, float, float]


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch) in image axes (x right, y down, z towards the camera).

    pitch > 0 lifts the chin, yaw > 0 turns the nose to the image right, roll > 0 tilts clockwise.
    """
    cp, sp, cy, sy, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


class Geometry:
    """Pose-dependent projection of face units to pixels for one frame."""

    def __init__(self, style: FaceStyle, pose: np.ndarray, height: int, width: int):
        pitch, yaw, roll, tx, ty, tz = (float(v) for v in pose)
        side = min(height, width)
        self.R = rotation(pitch, yaw, roll)
        self.s = style.face_width * side / (1.0 + tz)  # pixels per face unit
        self.centre = np.array([width / 2 + tx * side, height * 0.47 + ty * side])
        self.J = self.s * self.R[:2, :2]  # local (x, y) axes of surface features, in pixels
        self.Jinv = np.linalg.inv(self.J)
        self.B = style.face_aspect

    def project(self, p: np.ndarray) -> np.ndarray:
        """(..., 3) face-unit points -> (..., 2) pixel (x, y)."""
        q = (np.asarray(p, np.float64) - _PIVOT) @ self.R.T + _PIVOT
        return self.centre + self.s * q[..., :2]

    def ellipsoid(self, centre3, axes3, rigid: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Projected outline of an ellipsoid: (centre px, 2x2 quadratic form Q with d^T Q d <= 1 inside)."""
        r = self.R if rigid else np.eye(3)
        m = r @ np.diag(1.0 / np.square(axes3)) @ r.T
        q2 = m[:2, :2] - np.outer(m[:2, 2], m[2, :2]) / m[2, 2]
        c = self.project(centre3) if rigid else self.centre + self.s * np.asarray(centre3[:2])
        return c, q2 / self.s**2

    def flat_ellipse(self, centre3, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """A (a, b) ellipse lying on the face surface at `centre3`."""
        return self.project(centre3), self.Jinv.T @ np.diag([1 / a**2, 1 / b**2]) @ self.Jinv


def surface_z(x: float, y: float, aspect: float) -> float:
    """Depth of the skull surface at face point (x, y)."""
    return 0.95 * float(np.sqrt(max(0.0, 1.0 - x * x - (y / aspect) ** 2)))


# ----------------------------------------------------------------------------------------------- primitives
def _box(img: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    h, w = img.shape[:2]
    x0, y0 = max(int(np.floor(lo[0])) - 1, 0), max(int(np.floor(lo[1])) - 1, 0)
    x1, y1 = min(int(np.ceil(hi[0])) + 2, w), min(int(np.ceil(hi[1])) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :]
    return (slice(y0, y1), slice(x0, x1)), ys, xs


def _blend(img: np.ndarray, sl, alpha: np.ndarray, colour) -> None:
    sub = img[sl]
    sub += alpha[..., None] * (np.asarray(colour, np.float32) - sub)


def ellipse_box(img, c, Q):
    det = Q[0, 0] * Q[1, 1] - Q[0, 1] * Q[1, 0]
    ext = np.sqrt(np.array([Q[1, 1], Q[0, 0]]) / det)  # sqrt of diag(inv(Q)): the half extents
    return _box(img, c - ext, c + ext)


def ellipse_alpha(ys, xs, c, Q) -> np.ndarray:
    dx, dy = xs - np.float32(c[0]), ys - np.float32(c[1])
    q = np.float32(Q[0, 0]) * dx * dx + np.float32(2 * Q[0, 1]) * dx * dy + np.float32(Q[1, 1]) * dy * dy
    lam_max = 0.5 * (Q[0, 0] + Q[1, 1]) + np.hypot(0.5 * (Q[0, 0] - Q[1, 1]), Q[0, 1])
    rmin = np.float32(1.0 / np.sqrt(lam_max))  # shortest semi-axis, px: converts q-space to a pixel distance
    return np.clip(0.5 - (np.sqrt(q) - 1.0) * rmin, 0.0, 1.0)


def draw_ellipse(img, c, Q, colour, opacity: float = 1.0) -> None:
    box = ellipse_box(img, c, Q)
    if box is not None:
        sl, ys, xs = box
        _blend(img, sl, ellipse_alpha(ys, xs, c, Q) * np.float32(opacity), colour)


def draw_polygon(img, verts: np.ndarray, colour, opacity: float = 1.0) -> None:
    """Convex polygon (n, 2) pixels, either winding."""
    box = _box(img, verts.min(0), verts.max(0))
    if box is None:
        return
    sl, ys, xs = box
    area = np.sum(verts[:, 0] * np.roll(verts[:, 1], -1) - np.roll(verts[:, 0], -1) * verts[:, 1])
    d = None
    for i in range(len(verts)):
        e = verts[(i + 1) % len(verts)] - verts[i]
        n = np.array([e[1], -e[0]]) * np.sign(area) / max(np.hypot(*e), 1e-9)
        di = np.float32(n[0]) * (xs - np.float32(verts[i, 0])) + np.float32(n[1]) * (ys - np.float32(verts[i, 1]))
        d = di if d is None else np.maximum(d, di)
    _blend(img, sl, np.clip(0.5 - d, 0.0, 1.0) * np.float32(opacity), colour)


class Band:
    """Region between curves v = top(u) and v = bot(u), |u| <= w, in a local frame (pixel = c + J (u, v)).

    `top` and `bot` are quadratic coefficients (c0, c1, c2) in u.
    """

    def __init__(self, geo: Geometry, c: np.ndarray, w: float, top, bot):
        self.c, self.w, self.top, self.bot, self.geo = c, w, np.asarray(top), np.asarray(bot), geo

    def box(self, img):
        u = np.linspace(-self.w, self.w, 5)
        t = self.top[0] + self.top[1] * u + self.top[2] * u * u
        b = self.bot[0] + self.bot[1] * u + self.bot[2] * u * u
        pts = np.concatenate([np.stack([u, t], 1), np.stack([u, b], 1)]) @ self.geo.J.T + self.c
        return _box(img, pts.min(0), pts.max(0))

    def alpha(self, ys, xs) -> np.ndarray:
        ji = self.geo.Jinv.astype(np.float32)
        dx, dy = xs - np.float32(self.c[0]), ys - np.float32(self.c[1])
        u = ji[0, 0] * dx + ji[0, 1] * dy
        v = ji[1, 0] * dx + ji[1, 1] * dy
        t0, t1, t2 = (np.float32(x) for x in self.top)
        b0, b1, b2 = (np.float32(x) for x in self.bot)
        d = np.maximum(np.maximum(t0 + (t1 + t2 * u) * u - v, v - b0 - (b1 + b2 * u) * u), np.abs(u) - self.w)
        return np.clip(0.5 - d * np.float32(self.geo.s), 0.0, 1.0)

    def draw(self, img, colour, opacity: float = 1.0) -> None:
        box = self.box(img)
        if box is not None:
            sl, ys, xs = box
            _blend(img, sl, self.alpha(ys, xs) * np.float32(opacity), colour)


def _k(w: float) -> np.ndarray:
    """Coefficients of 1 - (u / w)^2, the shape of curves pinned at the corners u = +-w."""
    return np.array([1.0, 0.0, -1.0 / (w * w)])


# ----------------------------------------------------------------------------------------------- background
def render_background(style: FaceStyle, height: int, width: int) -> np.ndarray:
    """Static float32 (H, W, 3) backdrop with the shoulders, rendered once per clip."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    c1, c2 = np.asarray(style.background, np.float32), np.asarray(style.background2, np.float32)
    f = style.pattern_scale
    if style.pattern == 1:
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xs + 0.6 * ys))
    elif style.pattern == 2:
        mix = 0.5 + 0.25 * (np.sin(2 * np.pi * f * xs) * np.cos(2 * np.pi * 0.7 * f * ys) + 1.0) - 0.25
    elif style.pattern == 3:
        mix = np.clip((ys - 0.62) * 40.0, 0.0, 1.0) + 0.1 * xs
    else:
        mix = ys + 0.2 * xs
    img = np.broadcast_to(c1 + np.clip(mix, 0.0, 1.0) * (c2 - c1), (height, width, 3)).copy()
    side = min(height, width)
    s = style.face_width * side
    c = np.array([width / 2, height * 0.47 + s * style.face_aspect * 2.35])
    draw_ellipse(img, c, np.diag([1 / (2.3 * s) ** 2, 1 / (1.05 * s) ** 2]), style.shirt)
    return img


# ----------------------------------------------------------------------------------------------- face
def _c(controls: np.ndarray, name: str) -> float:
    return float(controls[_CI[name]])


def head_keypoints(style: FaceStyle, controls: np.ndarray, geo: Geometry, gaze: np.ndarray) -> np.ndarray:
    """(8, 2) float32 pixel keypoints: face edges, pupils, nose bridge (see module docstring)."""
    B, ey = style.face_aspect, style.eye_height
    c, Q = geo.ellipsoid(np.zeros(3), (1.0, B, 0.95))
    m = geo.project(np.array([0.0, ey, 0.0]))
    d = geo.J[:, 0] / np.linalg.norm(geo.J[:, 0])
    e = m - c
    a2, b2, c2 = d @ Q @ d, 2 * d @ Q @ e, e @ Q @ e - 1.0
    root = np.sqrt(max(b2 * b2 - 4 * a2 * c2, 0.0))
    edges = [m + d * (-b2 - root) / (2 * a2), m + d * (-b2 + root) / (2 * a2)]
    edges.sort(key=lambda p: p[0])
    we = 0.18 * style.eye_size
    pupils = [geo.project(_eye_centre(style, sgn) + np.array([gaze[0] * we * 0.3, gaze[1] * we * 0.15, 0.0]))
              for sgn in (-1.0, 1.0)]
    top = np.array([0.0, ey + 0.02, surface_z(0.0, ey, B) + 0.03])
    tip = _nose_tip(style)
    bridge = geo.project(top + np.linspace(0.0, 1.0, 4)[:, None] * (tip - top))
    return np.concatenate([np.stack(edges + pupils), bridge]).astype(np.float32)


def _eye_centre(style: FaceStyle, sgn: float) -> np.ndarray:
    x, y = sgn * style.eye_spacing, style.eye_height
    return np.array([x, y, surface_z(x, y, style.face_aspect) + 0.02])


def _nose_tip(style: FaceStyle) -> np.ndarray:
    y = style.eye_height + style.nose_length
    return np.array([0.0, y, surface_z(0.0, y, style.face_aspect) + 0.2])


def render_face(img: np.ndarray, style: FaceStyle, controls: np.ndarray, geo: Geometry,
                gaze: np.ndarray) -> None:
    """Draw the head over `img` (float32 (H, W, 3), modified in place) for one frame's controls and pose."""
    B, ey = style.face_aspect, style.eye_height
    skin = np.asarray(style.skin, np.float32)
    shade = skin * 0.78
    hair = np.asarray(style.hair, np.float32)
    jaw = _c(controls, "jaw_open")
    vol = style.hair_volume

    # Behind the head: long hair, neck, hair volume, ears.
    if style.hair_style in (1, 3):
        length = 1.05 if style.hair_style == 1 else 0.6
        draw_ellipse(img, *geo.ellipsoid(np.array([0.0, 0.35 * B + length * 0.5, -0.35]),
                                         (1.12 + 0.12 * vol, B * (0.55 + length * 0.55), 0.7)), hair)
    neck_c = np.array([0.0, 1.05 * B, -0.3])
    draw_ellipse(img, *geo.ellipsoid(neck_c, (0.42, 0.65 * B, 0.4), rigid=False), shade)
    if style.hair_style != 2:
        draw_ellipse(img, *geo.ellipsoid(np.array([0.0, -0.12 * B, -0.1]),
                                         (1.08 + 0.1 * vol, B * (1.04 + 0.06 * vol), 1.0)), hair)
    for sgn in (-1.0, 1.0):
        draw_ellipse(img, *geo.ellipsoid(np.array([sgn * 0.97, ey + 0.12, -0.12]), (0.14, 0.27, 0.12)), shade)

    # Skull and (dropping) jaw, then the hair over the forehead.
    head_c, head_q = geo.ellipsoid(np.zeros(3), (1.0, B, 0.95))
    draw_ellipse(img, head_c, head_q, skin)
    draw_ellipse(img, *geo.ellipsoid(np.array([0.0, 0.5 * B + 0.14 * jaw, 0.0]),
                                     (0.8 * style.jaw_width, 0.5 * B, 0.8)), skin)
    hairline = -B * (0.62 - (0.2 * style.fringe if style.hair_style != 2 else 0.0))
    cap = Band(geo, head_c, 1.0, (-2 * B, 0.0, 0.0), (hairline, 0.0, 0.35))
    cap_q = head_q / 1.02**2  # slightly larger than the skull so no skin rim shows at its soft edge
    box = ellipse_box(img, head_c, cap_q)
    if box is not None:
        sl, ys, xs = box
        _blend(img, sl, ellipse_alpha(ys, xs, head_c, cap_q) * cap.alpha(ys, xs), hair)

    # Cheeks (raised and rosier in a Duchenne smile).
    cheek = _c(controls, "cheek_raise")
    blush = 0.6 * skin + 0.4 * np.array([0.9, 0.35, 0.35], np.float32)
    for sgn in (-1.0, 1.0):
        x, y = sgn * 0.52, ey + 0.3 - 0.06 * cheek
        draw_ellipse(img, *geo.flat_ellipse(np.array([x, y, surface_z(x, y, B)]), 0.2 + 0.04 * cheek, 0.13),
                     blush, 0.15 + 0.35 * cheek)

    _draw_nose(img, style, controls, geo, shade)
    for sgn in (-1.0, 1.0):
        _draw_eye(img, style, controls, geo, gaze, sgn)
        _draw_brow(img, style, controls, geo, sgn, hair * 0.7)
    _draw_mouth(img, style, controls, geo)


def _draw_nose(img, style, controls, geo, shade) -> None:
    B, ey = style.face_aspect, style.eye_height
    wrinkle = _c(controls, "nose_wrinkle")
    ny = ey + style.nose_length - 0.03 * wrinkle
    nw = style.nose_width * (1.0 + 0.15 * wrinkle)
    top = np.array([0.0, ey + 0.03, surface_z(0.0, ey, B) + 0.03])
    wings = [np.array([sgn * nw, ny, surface_z(nw, ny, B) + 0.05]) for sgn in (-1.0, 1.0)]
    draw_polygon(img, geo.project(np.stack([top, wings[0], _nose_tip(style), wings[1]])), shade, 0.45)
    for sgn in (-1.0, 1.0):
        x = sgn * 0.45 * nw
        draw_ellipse(img, *geo.flat_ellipse(np.array([x, ny + 0.04, surface_z(x, ny, B) + 0.1]),
                                            0.055 + 0.02 * wrinkle, 0.03), shade * 0.45)
    if wrinkle > 0.1:
        for dy in (0.1, 0.16):
            y = ey + dy
            c = geo.project(np.array([0.0, y, surface_z(0.0, y, B) + 0.05]))
            Band(geo, c, 0.09, (-0.008, 0.0, 0.0), (0.008, 0.0, 0.0)).draw(img, shade * 0.6, 0.7 * wrinkle)


def _draw_eye(img, style, controls, geo, gaze, sgn: float) -> None:
    close, widen = _c(controls, "eye_close"), _c(controls, "eye_widen")
    tight, cheek = _c(controls, "lid_tighten"), _c(controls, "cheek_raise")
    we = 0.18 * style.eye_size
    h_up = we * 0.55 * float(np.clip((1 - close) * (1 + 0.5 * widen - 0.35 * tight - 0.15 * cheek), 0.02, 1.6))
    h_lo = we * 0.32 * float(np.clip(1 - 0.5 * cheek - 0.4 * tight, 0.15, 1.0)) * (1 - 0.7 * close)
    c = geo.project(_eye_centre(style, sgn))
    white = Band(geo, c, we, -h_up * _k(we), h_lo * _k(we))
    box = white.box(img)
    if box is None:
        return
    sl, ys, xs = box
    a_white = white.alpha(ys, xs)
    _blend(img, sl, a_white, _EYE_WHITE)
    iris_c = geo.project(_eye_centre(style, sgn) + np.array([gaze[0] * we * 0.3, gaze[1] * we * 0.15, 0.0]))
    q_iris = geo.Jinv.T @ geo.Jinv / (0.5 * we) ** 2
    _blend(img, sl, a_white * ellipse_alpha(ys, xs, iris_c, q_iris), style.iris)
    _blend(img, sl, a_white * ellipse_alpha(ys, xs, iris_c, q_iris / 0.45**2), _PUPIL)
    lash = 0.035 + 0.01 * close
    Band(geo, c, we * 1.05, -h_up * _k(we * 1.05) - [lash, 0, 0], -h_up * _k(we * 1.05) + [0.006, 0, 0]).draw(
        img, np.asarray(style.hair, np.float32) * 0.5, 0.9)


def _draw_brow(img, style, controls, geo, sgn: float, colour) -> None:
    inner, outer, furrow = (_c(controls, n) for n in ("brow_inner_raise", "brow_outer_raise", "brow_furrow"))
    B = style.face_aspect
    x = sgn * (style.eye_spacing - 0.04 * furrow)
    y = style.eye_height - 0.2 - 0.1 * outer - 0.04 * inner + 0.05 * furrow
    w = 0.2 * style.eye_size + 0.02
    inner_off = -0.1 * inner + 0.07 * furrow  # inner end up (sad) or down (angry)
    centre = np.array([inner_off / 2 - 0.05, -sgn * inner_off / (2 * w), 0.05 / (w * w)])  # arch + tilt in u
    half = style.brow_thickness / 2
    taper = np.array([0.0, sgn * 0.25 * half / w, 0.0])  # thinner towards the outer end
    c = geo.project(np.array([x, y, surface_z(x, y, B) + 0.02]))
    Band(geo, c, w, centre - [half, 0, 0] + taper, centre + [half, 0, 0] - taper).draw(img, colour)


def _mouth_shape(style, controls, geo):
    """Mouth frame shared by the drawing and the landmarks: (centre px, half width w, centre curve, upper and
    lower opening, lip thickness, corner curve k), curves in the band's local (u, v) frame."""
    jaw, press, stretch, pucker = (_c(controls, n) for n in ("jaw_open", "lip_press", "lip_stretch", "lip_pucker"))
    up, down, asym = (_c(controls, n) for n in ("lip_corner_up", "lip_corner_down", "lip_corner_asym"))
    raise_ul, chin = _c(controls, "upper_lip_raise"), _c(controls, "chin_raise")
    B = style.face_aspect
    my = style.eye_height + style.nose_length + style.mouth_offset + 0.04 * jaw
    w = style.mouth_width * (1 + 0.3 * stretch - 0.35 * pucker + 0.1 * up)
    corner = -0.07 * up + 0.06 * down
    y_l, y_r = corner + 0.01 * asym, corner - 0.08 * asym
    y_c = 0.015 * up - 0.01 * chin
    centre = np.array([(y_l + y_r) / 2, (y_r - y_l) / (2 * w), 0.0]) + (y_c - (y_l + y_r) / 2) * _k(w)
    gap = jaw * (1 - press)
    o_up, o_lo = 0.3 * 0.3 * gap + 0.035 * raise_ul * (1 - press), 0.7 * 0.3 * gap
    t = style.lip_thickness * (1 - 0.55 * press + 0.45 * pucker)
    c = geo.project(np.array([0.0, my, surface_z(0.0, my, B) + 0.03]))
    return c, w, centre, o_up, o_lo, t, _k(w)


MOUTH_LANDMARK_NAMES: tuple[str, ...] = (
    "corner_left", "corner_right", "outer_upper_left", "outer_upper_mid", "outer_upper_right", "outer_lower_mid",
    "inner_upper_mid", "inner_lower_mid",
)
"""The 8 mouth landmarks of `mouth_landmarks` ("left" is u < 0 in the lips' frame, the image left when frontal)."""


def mouth_landmarks(style: FaceStyle, controls: np.ndarray, geo: Geometry) -> np.ndarray:
    """(8, 2) float32 pixel (x, y) mouth landmarks, exactly on the curves `_draw_mouth` fills.

    Corners (u = -+w), the outer upper lip edge at u = -w/2, 0, w/2, the outer lower lip edge at u = 0 and the
    inner upper / lower lip edges at u = 0 (they coincide when the mouth is closed): the mouth opening is the
    distance between the last two.
    """
    c, w, centre, o_up, o_lo, t, k = _mouth_shape(style, controls, geo)

    def curve(coef, u):
        return coef[0] + coef[1] * u + coef[2] * u * u

    outer_up = centre - (o_up + t) * k - [0.006, 0, 0]
    outer_lo = centre + (o_lo + 1.3 * t) * k + [0.006, 0, 0]
    uv = [(-w, curve(centre, -w)), (w, curve(centre, w)),
          (-w / 2, curve(outer_up, -w / 2)), (0.0, curve(outer_up, 0.0)), (w / 2, curve(outer_up, w / 2)),
          (0.0, curve(outer_lo, 0.0)), (0.0, curve(centre - o_up * k, 0.0)), (0.0, curve(centre + o_lo * k, 0.0))]
    return (np.asarray(uv) @ geo.J.T + c).astype(np.float32)


def _draw_mouth(img, style, controls, geo) -> None:
    c, w, centre, o_up, o_lo, t, k = _mouth_shape(style, controls, geo)
    lips = Band(geo, c, w, centre - (o_up + t) * k - [0.006, 0, 0], centre + (o_lo + 1.3 * t) * k + [0.006, 0, 0])
    box = lips.box(img)
    if box is None:
        return
    sl, ys, xs = box
    _blend(img, sl, lips.alpha(ys, xs), style.lip)
    lip_line = Band(geo, c, w, centre - [0.008, 0, 0], centre + [0.008, 0, 0])
    _blend(img, sl, lip_line.alpha(ys, xs) * np.float32(0.8), np.asarray(style.lip, np.float32) * 0.5)
    if o_up + o_lo > 1e-3:
        inner = Band(geo, c, w, centre - o_up * k, centre + o_lo * k).alpha(ys, xs)
        _blend(img, sl, inner, _MOUTH)
        teeth = Band(geo, c, w, centre - o_up * k, centre - o_up * k + min(0.05, 0.45 * (o_up + o_lo)) * k)
        _blend(img, sl, inner * teeth.alpha(ys, xs), _TEETH)
