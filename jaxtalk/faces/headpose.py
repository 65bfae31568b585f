"""Head pose by PnP against MediaPipe's canonical 3D face.

The canonical face is the metric (centimetre) 468-vertex mesh the face-mesh landmarks index, with the 33
weighted landmarks MediaPipe's face-geometry pipeline fits its pose with (eyes, nose, forehead and cheek contour:
points that move little with expression). It is read from `models/geometry_pipeline_metadata_landmarks.binarypb`,
a byte-identical copy of the file of that name in the npm package `@mediapipe/face_mesh@0.4.1657299874`
(Apache-2.0, see models/NOTICE.md); the Python wheels carry only an empty `face_geometry/data/` folder.

The fit, per face:
1. a weighted similarity fit (Umeyama) of the canonical points to the mesh's own 3D landmarks (x, y in pixels,
   z the network's relative depth in the same scale): rotation and pixels per centimetre under scaled
   orthography, which gives the starting distance for a pinhole camera;
2. PnP: Levenberg-Marquardt on the weighted reprojection error of the same landmarks' 2D positions under a
   pinhole camera (focal length = the image's long side by default, about a 53-degree field of view, principal
   point at the centre; photos carry no calibration), refining rotation and translation.

Axes: the camera frame is x right, y down, z away from the camera (OpenCV's); the canonical face is turned into
that frame (x right, y down, z into the face) so that the identity rotation is a face looking straight at the
camera, its forehead-chin line upright.

Angles (`HeadPoseFit.angles`) are the head's rotation relative to the line of sight: the camera frame turned
(the smallest rotation) so that its optical axis passes through the face, then R = Rz(roll) Ry(yaw') Rx(pitch')
in image axes, reported with the synthetic renderer's signs (pitch > 0 lifts the chin, yaw > 0 turns the nose to
the image right, roll > 0 tilts clockwise). This is what a face crop shows, and it hardly depends on the assumed
focal length: on scikit-image's astronaut (face near the top of the frame) the camera-frame pitch moves from -34
to -14 degrees as the focal length goes from half to 16 times the long side, the line-of-sight pitch from -6 to
-12.5 (-10 at the default).
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from pathlib import Path

import numpy as np

GEOMETRY_FILE = Path(__file__).parent / "models" / "geometry_pipeline_metadata_landmarks.binarypb"
TO_CAMERA_AXES = np.array([1.0, -1.0, -1.0])  # canonical (x right, y up, z towards the viewer) -> camera axes


@dataclasses.dataclass(frozen=True)
class CanonicalFace:
    """vertices (468, 3) in centimetres (x towards the face's left = image right, y up, z towards the viewer);
    basis (K,) landmark indices and weights (K,) of the pose fit; triangles (T, 3) of the mesh."""

    vertices: np.ndarray
    basis: np.ndarray
    weights: np.ndarray
    triangles: np.ndarray


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, value) pairs of one protobuf message: varints as int, length-delimited and 32-bit fields
    as bytes (the only wire types the geometry metadata uses)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"{GEOMETRY_FILE.name}: unexpected protobuf wire type {wire}")
        yield key >> 3, value


def _floats(values: list) -> np.ndarray:
    """Repeated float field, packed (one bytes blob) or not (one 4-byte blob each)."""
    return np.frombuffer(b"".join(values), "<f4").astype(np.float64)


@functools.cache
def canonical_face() -> CanonicalFace:
    """The canonical face, decoded from the GeometryPipelineMetadata protobuf: field 1 the canonical Mesh3d
    (vertex_buffer = 5 floats per vertex: x, y, z, u, v; index_buffer = triangles), field 2 the weighted
    Procrustes landmarks (landmark_id, weight)."""
    msg = list(_fields(GEOMETRY_FILE.read_bytes()))
    vertex_blobs, index_values = [], []
    for field, value in _fields(next(v for f, v in msg if f == 1)):
        if field == 3:
            vertex_blobs.append(value)
        elif field == 4:
            if isinstance(value, bytes):  # packed varints
                j = 0
                while j < len(value):
                    v, j = _varint(value, j)
                    index_values.append(v)
            else:
                index_values.append(value)
    vertices = _floats(vertex_blobs).reshape(-1, 5)[:, :3]
    basis, weights = [], []
    for field, value in msg:
        if field == 2:
            ref = dict(_fields(value))
            basis.append(ref.get(1, 0))
            weights.append(struct.unpack("<f", ref[2])[0] if 2 in ref else 0.0)
    return CanonicalFace(vertices=vertices, basis=np.asarray(basis, np.int64), weights=np.asarray(weights),
                         triangles=np.asarray(index_values, np.int64).reshape(-1, 3))


def similarity_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity (Umeyama): scale s, rotation R (det +1) and t minimising
    sum_i w_i |s R src_i + t - dst_i|^2 for (N, 3) point sets."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    R = u @ np.diag(d) @ vt
    var = float(w @ (a * a).sum(1))
    s = float((sig * d).sum() / max(var, 1e-12))
    return s, R, mu_d - s * R @ mu_s


def camera_matrix(image_size: tuple[int, int], focal: float | None = None) -> np.ndarray:
    """Pinhole intrinsics K (3, 3) for an (H, W) image: focal length `focal` pixels (default the long side),
    principal point at the image centre."""
    h, w = image_size
    f = float(focal or max(h, w))
    return np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])


def euler_from_rotation(R: np.ndarray) -> np.ndarray:
    """R = Rz(roll) Ry(yaw') Rx(pitch') (image axes, z away) -> (pitch, yaw, roll) in the renderer's signs."""
    yaw = np.arcsin(np.clip(-R[2, 0], -1.0, 1.0))
    pitch = np.arctan2(R[2, 1], R[2, 2])
    roll = np.arctan2(R[1, 0], R[0, 0])
    # z points away from the camera here and towards it in the renderer: pitch and yaw change sign
    return np.array([-pitch, -yaw, roll])


def rotation_from_euler(angles: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) in the renderer's signs -> R (image axes, z away); the inverse of
    `euler_from_rotation`."""
    p, y, r = -float(angles[0]), -float(angles[1]), float(angles[2])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def line_of_sight(t: np.ndarray) -> np.ndarray:
    """The smallest rotation C taking the optical axis (0, 0, 1) to the direction of `t`."""
    d = np.asarray(t, np.float64) / np.linalg.norm(t)
    axis = np.cross([0.0, 0.0, 1.0], d)
    sin = float(np.linalg.norm(axis))
    if sin < 1e-12:
        return np.eye(3)
    return _rodrigues(axis / sin * np.arctan2(sin, d[2]))


def _rodrigues(rvec: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(rvec))
    if theta < 1e-12:
        return np.eye(3)
    k = rvec / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _rotation_vector(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) model points -> (N, 2) pixels through X = R p + t and K."""
    cam = points @ R.T + t
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:3]


def solve_pnp(image_points: np.ndarray, model_points: np.ndarray, K: np.ndarray, R0: np.ndarray, t0: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation R, translation t (model units) and the weighted RMS reprojection error (pixels) minimising the
    weighted squared reprojection error of (N, 3) `model_points` onto (N, 2) `image_points`, from (R0, t0)."""
    from scipy.optimize import least_squares

    sw = np.sqrt(np.ones(len(model_points)) if weights is None else np.asarray(weights, np.float64))
    sw = sw / np.sqrt((sw ** 2).mean())

    def residuals(x):
        return ((project(model_points, _rodrigues(x[:3]), x[3:], K) - image_points) * sw[:, None]).ravel()

    x0 = np.concatenate([_rotation_vector(R0), t0])
    sol = least_squares(residuals, x0, method="lm", x_scale="jac")
    rms = float(np.sqrt(np.mean(sol.fun.reshape(-1, 2) ** 2 * 2)))
    return _rodrigues(sol.x[:3]), sol.x[3:], rms


@dataclasses.dataclass(frozen=True)
class HeadPoseFit:
    """rotation (3, 3): canonical face (camera axes) -> camera; translation (3,): the canonical origin in the
    camera frame, centimetres (x right, y down, z distance); rms_px: reprojection error of the fitted points;
    focal_px: the focal length assumed."""

    rotation: np.ndarray
    translation: np.ndarray
    rms_px: float
    focal_px: float

    @property
    def angles(self) -> np.ndarray:
        """(3,) pitch, yaw, roll (radians) relative to the line of sight (see the module docstring)."""
        return euler_from_rotation(line_of_sight(self.translation).T @ self.rotation)


def fit_head_pose(landmarks: np.ndarray, image_size: tuple[int, int], focal: float | None = None) -> HeadPoseFit:
    """PnP head pose of (468, 3) face-mesh landmarks (pixels; z the mesh's relative depth, larger = farther) in
    an (H, W) image; see the module docstring."""
    face = canonical_face()
    model = face.vertices[face.basis] * TO_CAMERA_AXES
    observed = np.asarray(landmarks, np.float64)[face.basis]
    K = camera_matrix(image_size, focal)
    f, c = K[0, 0], K[:2, 2]
    s, R0, _ = similarity_fit(model, observed, face.weights)  # scaled orthography: s pixels per cm at the face
    centre = face.weights @ model / face.weights.sum()
    depth = f / max(s, 1e-9)
    seen = face.weights @ observed[:, :2] / face.weights.sum()
    t0 = np.append((seen - c) * depth / f, depth) - R0 @ centre  # the fitted points' centre lands on `seen`
    R, t, rms = solve_pnp(observed[:, :2], model, K, R0, t0, face.weights)
    return HeadPoseFit(rotation=R, translation=t, rms_px=rms, focal_px=float(f))
