"""Face analysis of a photo or video: face box, 468 3D landmarks, head pose and the SVP Head-Kps points.

`analyze(image)` finds the faces (MediaPipe BlazeFace in JAX, see `jaxtalk.faces.mediapipe`), refuses an image with
no face or with several (unless `face_index` picks one; faces are numbered left to right), fits the face-mesh
landmarks in a rotated ROI, refines the ROI once from those landmarks (as MediaPipe's tracking step does), and
derives:

- `head_kps` (8, 2): the project's Head-Kps set (`jaxtalk.data.kps`): image-left / image-right face edge at eye
  level (mesh 234 / 454), the two eye centres (mean of each eye's 16 contour points; the mesh has no iris, so
  "pupil" is the eye centre), and 4 points evenly spaced on the nose bridge from between the eyes (mesh 168) to
  the nose tip (mesh 1), the rule the synthetic data uses.
- `pose` (6,): (pitch, yaw, roll) in radians with the synthetic renderer's conventions (pitch > 0 lifts the
  chin, yaw > 0 turns the nose to the image right, roll > 0 tilts clockwise) and (tx, ty, tz): the face centre's
  offset from the image centre in units of the image's long side, and log of the face's size relative to 0.4 of
  the long side. The angles come from a PnP fit of MediaPipe's canonical 3D face to the landmarks
  (`jaxtalk.faces.headpose`), relative to the line of sight; the fit's camera-frame rotation and metric
  translation (centimetres, for the assumed focal length) are kept as `head_rotation` / `head_translation`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxtalk.data import media
from jaxtalk.faces import headpose as hp
from jaxtalk.faces import mediapipe as mp
from jaxtalk.faces.headpose import euler_from_rotation, rotation_from_euler  # noqa: F401  (re-exported)

MIN_SIDE = 32  # smaller images cannot hold a face the 128-pixel detector sees
MAX_PIXELS = 100_000_000  # larger images are refused rather than risk running out of memory

RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)  # image left
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)  # image right
FACE_EDGES = (234, 454)
BRIDGE_TOP, NOSE_TIP = 168, 1
FOREHEAD, CHIN = 10, 152
MOUTH_CORNERS = (61, 291)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


class FaceError(ValueError):
    """No usable face, or an ambiguous choice of face; the message says what and how to fix it."""


@dataclasses.dataclass
class FaceAnalysis:
    """One face in one image (all coordinates in that image's pixels, x right, y down).

    box: (4,) x0, y0, x1, y1 of the detector box; score: detector confidence; detector_kps: (6, 2) BlazeFace
    points (subject's right eye, left eye, nose tip, mouth centre, right / left ear tragion); landmarks: (468, 3)
    face-mesh points (z in the same pixel scale, larger = farther); presence: landmark network's face score;
    head_kps: (8, 2) SVP Head-Kps; pose: (6,) pitch, yaw, roll (radians), tx, ty, tz; image_size: (H, W);
    num_faces: faces the detector found in the image; head_rotation / head_translation / pose_rms_px: the PnP
    fit against the canonical face (module docstring).
    """

    box: np.ndarray
    score: float
    detector_kps: np.ndarray
    landmarks: np.ndarray
    presence: float
    head_kps: np.ndarray
    pose: np.ndarray
    image_size: tuple[int, int]
    num_faces: int = 1
    head_rotation: np.ndarray | None = None  # (3, 3) PnP rotation, canonical face (camera axes) -> camera
    head_translation: np.ndarray | None = None  # (3,) centimetres, camera frame (x right, y down, z distance)
    pose_rms_px: float | None = None  # the PnP fit's reprojection error

    @property
    def eye_centres(self) -> np.ndarray:
        """(2, 2): image-left and image-right eye centres."""
        return self.head_kps[2:4]

    def to_json(self) -> dict[str, Any]:
        """Plain-Python summary (box, score, pose, head_kps, image size) for meta files and web answers."""
        return {"face_box": [round(float(v), 2) for v in self.box], "score": round(self.score, 4),
                "presence": round(self.presence, 4), "pose": [round(float(v), 5) for v in self.pose],
                "head_kps": np.round(self.head_kps, 2).tolist(), "image_size": list(self.image_size),
                "num_faces": self.num_faces,
                **({} if self.head_translation is None else {
                    "head_translation_cm": [round(float(v), 2) for v in self.head_translation],
                    "pose_rms_px": round(float(self.pose_rms_px or 0.0), 3)})}


def head_kps_from_landmarks(lms: np.ndarray) -> np.ndarray:
    """(..., 468, 2+) mesh landmarks -> (..., 8, 2) Head-Kps (see module docstring)."""
    lms = np.asarray(lms, np.float64)[..., :2]
    edges = lms[..., FACE_EDGES, :]
    pupils = np.stack([lms[..., RIGHT_EYE_CONTOUR, :].mean(-2), lms[..., LEFT_EYE_CONTOUR, :].mean(-2)], axis=-2)
    top, tip = lms[..., BRIDGE_TOP, :], lms[..., NOSE_TIP, :]
    t = np.linspace(0.0, 1.0, 4)[:, None]
    bridge = top[..., None, :] + t * (tip - top)[..., None, :]
    return np.concatenate([edges, pupils, bridge], axis=-2).astype(np.float32)


def head_pose(lms: np.ndarray, image_size: tuple[int, int], fit: hp.HeadPoseFit | None = None) -> np.ndarray:
    """(6,) pitch, yaw, roll (radians, PnP against the canonical face, line of sight), tx, ty, tz from (468, 3)
    landmarks (see module docstring)."""
    h, w = image_size
    long_side = float(max(h, w))
    angles = (fit or hp.fit_head_pose(lms, image_size)).angles
    centre = lms[list(FACE_OVAL), :2].mean(0)
    size = np.linalg.norm(lms[FACE_EDGES[1], :2] - lms[FACE_EDGES[0], :2])
    t = [(centre[0] - w / 2) / long_side, (centre[1] - h / 2) / long_side, np.log(max(size, 1e-6) / (0.4 * long_side))]
    return np.concatenate([angles, t]).astype(np.float32)


INNER_LIPS = (13, 14)  # upper / lower inner lip, centre
EYELIDS = ((159, 145), (386, 374))  # (upper, lower) lid centre: image-left eye, image-right eye
EYE_CORNERS = ((33, 133), (263, 362))
BROWS = (105, 334)  # brow middles, image left / right
OPEN_MOUTH = 0.15  # mouth_open (beyond the canonical face's) above this: the lips are clearly apart


def _raw_measures(pts: np.ndarray) -> dict[str, float]:
    eyes = np.stack([pts[list(RIGHT_EYE_CONTOUR)].mean(0), pts[list(LEFT_EYE_CONTOUR)].mean(0)])
    iod = float(np.linalg.norm(eyes[1, :2] - eyes[0, :2])) or 1e-6
    up, low = pts[INNER_LIPS[0]], pts[INNER_LIPS[1]]
    c0, c1 = pts[MOUTH_CORNERS[0]], pts[MOUTH_CORNERS[1]]
    out = {"mouth_open": (low[1] - up[1]) / iod, "mouth_width": float(np.linalg.norm(c1[:2] - c0[:2])) / iod,
           "smile": (up[1] - (c0[1] + c1[1]) / 2) / iod}
    for side, (lids, corners, brow, eye) in zip(("left", "right"), zip(EYELIDS, EYE_CORNERS, BROWS, eyes)):
        width = float(np.linalg.norm(pts[corners[1], :2] - pts[corners[0], :2])) or 1e-6
        out[f"eye_open_{side}"] = (pts[lids[1], 1] - pts[lids[0], 1]) / width
        out[f"brow_raise_{side}"] = (eye[1] - pts[brow, 1]) / iod
    return {k: float(v) for k, v in out.items()}


def expression_measures(lms: np.ndarray, rotation: np.ndarray | None = None) -> dict[str, float]:
    """What the landmarks say about the face's expression, as differences from MediaPipe's canonical (neutral)
    face, measured on the head turned back to frontal (`rotation`, the PnP rotation, undone): mouth_open (inner
    lip gap / inter-ocular distance), mouth_width (corner to corner / IOD), smile (lip corners raised towards the
    upper lip's centre / IOD, unchanged by the jaw dropping), eye_open_left / eye_open_right (lid gap / eye width, image left / right),
    brow_raise_left / brow_raise_right (brow middle above the eye centre / IOD). These are geometric measures,
    not 3DMM expression coefficients: turning them into Deep3DFaceRecon's 64 coefficients needs the BFM
    expression basis and a fitting network, neither of which a registry package ships."""
    pts = np.asarray(lms, np.float64)[:, :3]
    pts = pts - pts.mean(0)
    if rotation is not None:
        pts = pts @ np.asarray(rotation, np.float64)  # camera axes -> the face's own axes (x right, y down)
    neutral = _raw_measures(hp.canonical_face().vertices * hp.TO_CAMERA_AXES)
    return {k: round(v - neutral[k], 4) for k, v in _raw_measures(pts).items()}


def roi_from_landmarks(lms: np.ndarray) -> np.ndarray:
    """MediaPipe's tracking ROI: eye corners (33 -> 263) level the ROI, the landmarks' bounding box, 1.5x."""
    lo, hi = lms[:, :2].min(0), lms[:, :2].max(0)
    return mp.roi_from_eyes(np.concatenate([lo, hi]), lms[33, :2], lms[263, :2])


def check_image(image: Any, what: str = "image") -> np.ndarray:
    """RGB uint8 (H, W, 3) from an array / PIL image, refusing sizes no face can be found in (one FaceError)."""
    image = media.to_rgb_uint8(image)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise FaceError(f"{what}: {w}x{h} pixels is too small to find a face; use a photo at least "
                        f"{MIN_SIDE} pixels (ideally 512) on each side")
    if h * w > MAX_PIXELS:
        raise FaceError(f"{what}: {w}x{h} pixels is too large ({h * w / 1e6:.0f} MP); downscale it below "
                        f"{MAX_PIXELS // 1_000_000} MP")
    return image


def _pick(faces: list, face_index: int | None, what: str) -> tuple[int, Any]:
    faces = sorted(faces, key=lambda f: float(f[0][0] + f[0][2]))  # left to right
    if not faces:
        raise FaceError(f"{what}: no face found; use a photo with one clearly visible, roughly frontal face "
                        "(or lower --min-face-score)")
    if face_index is None:
        if len(faces) > 1:
            boxes = ", ".join(f"{k}: x {f[0][0]:.0f}-{f[0][2]:.0f}" for k, f in enumerate(faces))
            raise FaceError(f"{what}: {len(faces)} faces found ({boxes}); pick one with --face-index "
                            f"(0..{len(faces) - 1}, left to right)")
        return 0, faces[0]
    if not 0 <= face_index < len(faces):
        raise FaceError(f"{what}: --face-index {face_index} is out of range; {len(faces)} face(s) found "
                        f"(0..{len(faces) - 1}, left to right)")
    return len(faces), faces[face_index]


def _landmark_pass(images: np.ndarray, rois: np.ndarray, refine: bool) -> tuple[np.ndarray, np.ndarray]:
    lms, presence = mp.landmarks_batch(images, rois)
    if refine:
        lms, presence = mp.landmarks_batch(images, np.stack([roi_from_landmarks(x) for x in lms]))
    return lms, presence


def analyze(image: Any, face_index: int | None = None, min_score: float = 0.5, refine: bool = True,
            what: str = "image", detector: str = "auto") -> FaceAnalysis:
    """Analyse the face in `image` (array, PIL image or path). Raises FaceError when there is no face, several
    faces and no `face_index`, or the landmark network does not confirm the face. `detector`: auto (short range,
    then full range when that finds nothing), short or full (`jaxtalk.faces.mediapipe`)."""
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        what = str(image)
        image = media.load_image(image)
    image = check_image(image, what)
    faces = mp.detect_faces(image, min_score, detector)
    count, (box, kps, score) = _pick(faces, face_index, what)
    lms, presence = _landmark_pass(image[None], mp.roi_from_eyes(box, kps[0], kps[1])[None], refine)
    return _finish(box, kps, score, lms[0], float(presence[0]), image.shape[:2], max(count, 1), what)


def _finish(box, kps, score, lms, presence, size, count, what) -> FaceAnalysis:
    if presence < 0.5:
        raise FaceError(f"{what}: the detector found a face (score {score:.2f}) but the landmark model does not "
                        f"confirm it (presence {presence:.2f}); use a clearer, more frontal photo")
    fit = hp.fit_head_pose(lms, size)
    return FaceAnalysis(box=np.asarray(box, np.float32), score=float(score), detector_kps=np.asarray(kps, np.float32),
                        landmarks=lms.astype(np.float32), presence=presence, head_kps=head_kps_from_landmarks(lms),
                        pose=head_pose(lms, size, fit), image_size=tuple(int(v) for v in size), num_faces=count,
                        head_rotation=fit.rotation.astype(np.float32),
                        head_translation=fit.translation.astype(np.float32), pose_rms_px=fit.rms_px)


@dataclasses.dataclass
class FaceTrack:
    """Per-frame analysis of a video: landmarks (F, 468, 3), head_kps (F, 8, 2), pose (F, 6), boxes (F, 4),
    found (F,) bool (False where no face was detected; those rows are interpolated from their neighbours),
    num_faces (F,) faces the detector saw per frame."""

    landmarks: np.ndarray
    head_kps: np.ndarray
    pose: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    num_faces: np.ndarray
    image_size: tuple[int, int]


def _fill_gaps(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of the rows where `found` is False (held at the ends)."""
    if found.all():
        return values
    t = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    out = np.stack([np.interp(t, t[found], flat[found, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(values.shape).astype(values.dtype)


def smooth_track(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving average over time (edge-padded), removing landmark jitter; window 1 = unchanged."""
    if window <= 1 or len(values) < 2:
        return values
    half = window // 2
    padded = np.concatenate([np.repeat(values[:1], half, 0), values, np.repeat(values[-1:], half, 0)])
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    flat = padded.reshape(len(padded), -1)
    out = np.stack([np.convolve(flat[:, j], kernel, mode="valid") for j in range(flat.shape[1])], axis=1)
    return out.reshape(values.shape).astype(values.dtype)


def track_faces(frames: np.ndarray, min_score: float = 0.5, face_index: int | None = None, smooth: int = 5,
                batch: int = mp.BATCH, what: str = "video", detector: str = "auto") -> FaceTrack:
    """Analyse every frame of uint8 (F, H, W, 3): per-frame detection (the face nearest the previous one when
    several), landmarks, gaps (frames with no face) interpolated, then smoothed over `smooth` frames.
    Raises FaceError when no frame has a face."""
    frames = np.asarray(frames)
    check_image(frames[0], what)
    n = len(frames)
    boxes = np.zeros((n, 4), np.float64)
    rois = np.zeros((n, 4), np.float64)
    found = np.zeros(n, bool)
    counts = np.zeros(n, np.int32)
    prev = None
    for s in range(0, n, batch):
        for k, faces in enumerate(mp.detect_faces_batch(frames[s:s + batch], min_score, detector)):
            i = s + k
            counts[i] = len(faces)
            if not faces:
                continue
            if prev is None:
                _, face = _pick(faces, face_index, f"{what} frame {i}")
            else:  # follow the face nearest the one tracked so far
                centre = lambda f: (f[0][:2] + f[0][2:]) / 2
                face = min(faces, key=lambda f: float(np.linalg.norm(centre(f) - (prev[:2] + prev[2:]) / 2)))
            box, kps, _ = face
            boxes[i], rois[i], found[i], prev = box, mp.roi_from_eyes(box, kps[0], kps[1]), True, box
    if not found.any():
        raise FaceError(f"{what}: no face found in any of its {n} frames; use a video with one visible face")
    rois = _fill_gaps(rois, found)
    lms = np.zeros((n, mp.NUM_LANDMARKS, 3), np.float64)
    for s in range(0, n, batch):
        lms[s:s + batch] = _landmark_pass(frames[s:s + batch], rois[s:s + batch], refine=True)[0]
    lms = smooth_track(_fill_gaps(lms, found), smooth)
    size = frames.shape[1:3]
    return FaceTrack(landmarks=lms.astype(np.float32), head_kps=head_kps_from_landmarks(lms),
                     pose=np.stack([head_pose(x, size) for x in lms]), boxes=_fill_gaps(boxes, found).astype(np.float32),
                     found=found, num_faces=counts, image_size=(int(size[0]), int(size[1])))
