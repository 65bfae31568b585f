"""MediaPipe's face detectors (BlazeFace short range and full range) and face-mesh landmark network, run in JAX.

Where the models come from, and why they run this way:
- The three `.tflite` files in `jaxtalk/faces/models/` are byte-identical copies of
  `mediapipe/modules/face_detection/face_detection_short_range.tflite`,
  `mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite` and
  `mediapipe/modules/face_landmark/face_landmark.tflite` from the `mediapipe==0.10.21` wheel on PyPI (Apache-2.0;
  see models/NOTICE.md). 0.10.21 is the newest release that still carries them: its cp311 and cp312 wheels have
  them, while every later wheel (0.10.30 ... 0.10.35, the 1.x series) ships no model files at all.
- We do not depend on mediapipe itself: 0.10.21 requires numpy<2 and protobuf<5, which the JAX stack this
  project installs (numpy 2.x, protobuf 6+) cannot satisfy, and its legacy face-mesh API runs graphs in C++.
  Running the `.tflite` files through LiteRT would add a second inference runtime for three small CNNs. Instead
  `jaxtalk.faces.tflite` reads the files and evaluates their operators with `jax.lax`, so detection and
  landmarks are jitted, batched over video frames, and run wherever the talking-head models run. The tests check
  the JAX evaluation against the LiteRT interpreter (`ai-edge-litert`, test extra) on the same files.

The pre- and post-processing follow MediaPipe's face-detection and face-landmark-front graphs. Short range (faces
within about 2 m, filling a good part of the frame): a 128x128 letterboxed input in [-1, 1]; 896 SSD anchors
(strides 8 and 16, 2 and 6 anchors per cell, fixed size); boxes and 6 keypoints decoded at scale 128. Full range
(faces up to about 5 m away, small in the frame; sparse float16 weights): 192x192 input, 2304 anchors (stride 4,
one per cell), decoded at scale 192. Both: sigmoid scores (logits clipped at +-100); weighted non-maximum
suppression at IoU 0.3. `detect_faces(..., detector="auto")` runs the short-range model and falls back to the
full-range one when it finds no face (a distant face, or a large photo with a small face in it). Landmarks: a face
ROI rotated so the eyes are level (detection keypoints 0 -> 1), 1.5x the box's long side, sampled to 192x192 in
[0, 1]; 468 (x, y, z) landmarks projected back (z in the same pixel scale as x) and a face-presence score
(sigmoid of the flag logit).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxtalk.faces import tflite

MODEL_DIR = Path(__file__).parent / "models"
DETECTOR_FILE = "face_detection_short_range.tflite"
FULL_RANGE_FILE = "face_detection_full_range_sparse.tflite"
LANDMARK_FILE = "face_landmark.tflite"
DETECTOR_SIZE = 128
FULL_RANGE_SIZE = 192
LANDMARK_SIZE = 192
NUM_LANDMARKS = 468
NMS_IOU = 0.3
ROI_SCALE = 1.5


@functools.cache
def _network(name: str):
    graph = tflite.read_graph(MODEL_DIR / name)
    return tflite.compile_graph(graph), tflite.params_of(graph)


@dataclasses.dataclass(frozen=True)
class Detector:
    """One BlazeFace model: its file, input size and anchor layout ((stride, anchors per cell), ...)."""

    file: str
    size: int
    layout: tuple[tuple[int, int], ...]


DETECTORS = {
    "short": Detector(DETECTOR_FILE, DETECTOR_SIZE, ((8, 2), (16, 6))),
    "full": Detector(FULL_RANGE_FILE, FULL_RANGE_SIZE, ((4, 1),)),
}
DETECTOR_CHOICES = ("auto", *DETECTORS)


@functools.cache
def ssd_anchors(detector: str = "short") -> np.ndarray:
    """Anchor centres in [0, 1] (x, y), as MediaPipe's SsdAnchorsCalculator lays them out (row-major cells, the
    anchors of a cell together). Short range: (896, 2), 16x16 cells x 2 anchors (stride 8), then 8x8 cells x 6
    (the three stride-16 layers merged). Full range: (2304, 2), 48x48 cells x 1 (stride 4)."""
    spec = DETECTORS[detector]
    out = []
    for stride, per_cell in spec.layout:
        g = spec.size // stride
        ys, xs = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """uint8 (H, W, 3) -> float32 (size, size, 3) in [-1, 1], aspect kept and centred on black (-1) borders.
    Returns (tensor, scale, (pad_x, pad_y)) with image pixel p = (q - pad) / scale for tensor pixel q."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR), np.float32)
    out = np.full((size, size, 3), -1.0, np.float32)
    py, px = (size - nh) // 2, (size - nw) // 2
    out[py:py + nh, px:px + nw] = resized / 127.5 - 1.0
    return out, scale, (float(px), float(py))


def decode_detections(regressors: np.ndarray, logits: np.ndarray, detector: str = "short"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw (A, 16) / (A, 1) outputs -> boxes (A, 4) as (x0, y0, x1, y1), keypoints (A, 6, 2) and scores (A,),
    all in the input tensor's pixels (A anchors: 896 short range, 2304 full range)."""
    anchors = ssd_anchors(detector) * DETECTORS[detector].size
    r = regressors.astype(np.float64)
    centre = r[:, :2] + anchors
    half = r[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[:, 0].astype(np.float64), -100.0, 100.0)))
    return boxes, kps, scores


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, min_score: float,
                 iou: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: take the best remaining detection, average the box and keypoints of every
    candidate overlapping it by more than `iou` weighted by score, keep the best score. Best first."""
    keep = scores >= min_score
    boxes, kps, scores = boxes[keep], kps[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    out = []
    alive = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = alive & (_iou(boxes[i], boxes) > iou)
        overlap[i] = True
        wts = scores[overlap] / scores[overlap].sum()
        out.append((np.einsum("n,nk->k", wts, boxes[overlap]), np.einsum("n,nkd->kd", wts, kps[overlap]),
                    float(scores[i])))
        alive &= ~overlap
    return out


def detect_faces(image: np.ndarray, min_score: float = 0.5, detector: str = "auto"
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Faces in one uint8 (H, W, 3) image: [(box (4,) x0 y0 x1 y1, keypoints (6, 2), score)] in image pixels,
    best first. Keypoints: right eye, left eye (the subject's; image left / right on a frontal face), nose tip,
    mouth centre, right and left ear tragion. `detector`: short, full, or auto (short, then full range when the
    short-range model finds nothing)."""
    return detect_faces_batch(image[None], min_score, detector)[0]


def detect_faces_batch(images: np.ndarray, min_score: float = 0.5, detector: str = "auto"
                       ) -> list[list[tuple[np.ndarray, np.ndarray, float]]]:
    """`detect_faces` for a batch of same-size frames (one jitted call per model)."""
    if detector not in DETECTOR_CHOICES:
        raise ValueError(f"detector {detector!r}: choose one of {', '.join(DETECTOR_CHOICES)}")
    out = _detect(images, min_score, "full" if detector == "full" else "short")
    if detector == "auto":
        missing = [i for i, faces in enumerate(out) if not faces]
        if missing:
            for i, faces in zip(missing, _detect(images[missing], min_score, "full")):
                out[i] = faces
    return out


def _detect(images: np.ndarray, min_score: float, detector: str) -> list[list[tuple[np.ndarray, np.ndarray,
                                                                                      float]]]:
    spec = DETECTORS[detector]
    fn, params = _network(spec.file)
    tensors, scale, pads = zip(*[letterbox(im, spec.size) for im in images])
    regressors, logits = (np.asarray(o) for o in fn(params, jnp.asarray(_padded(np.stack(tensors)))))
    out = []
    for b in range(len(images)):
        boxes, kps, scores = decode_detections(regressors[b], logits[b], detector)
        faces = []
        for box, k, s in weighted_nms(boxes, kps, scores, min_score):
            off = np.array(pads[b])
            faces.append(((box - np.tile(off, 2)) / scale[b], (k - off) / scale[b], s))
        out.append(faces)
    return out


def roi_from_eyes(box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray,
                  scale: float = ROI_SCALE) -> np.ndarray:
    """(cx, cy, side, angle): the square landmark ROI, centred on `box`, side = scale x its long side, rotated by
    `angle` (radians, clockwise in image axes) so the eye line is level inside it."""
    angle = -np.arctan2(-(left_eye[1] - right_eye[1]), left_eye[0] - right_eye[0])
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = scale * max(box[2] - box[0], box[3] - box[1])
    return np.array([cx, cy, side, angle], np.float64)


def roi_to_image(roi: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points normalised to the ROI ([0, 1] x [0, 1], (N, 2+)) -> image pixels (z scaled by the side)."""
    cx, cy, side, a = roi
    u, v = pts[..., 0] - 0.5, pts[..., 1] - 0.5
    x = cx + side * (np.cos(a) * u - np.sin(a) * v)
    y = cy + side * (np.sin(a) * u + np.cos(a) * v)
    out = [x, y] + ([pts[..., 2] * side] if pts.shape[-1] > 2 else [])
    return np.stack(out, axis=-1)


def sample_roi(image: np.ndarray, roi: np.ndarray, size: int) -> np.ndarray:
    """Bilinear `size` x `size` sample of a rotated square ROI (zero outside the image), float32 [0, 1]."""
    from scipy import ndimage

    cx, cy, side, a = roi
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    u, v = grid[None, :], grid[:, None]
    x = cx + side * (np.cos(a) * u - np.sin(a) * v) - 0.5
    y = cy + side * (np.sin(a) * u + np.cos(a) * v) - 0.5
    chans = [ndimage.map_coordinates(image[..., c], [y, x], order=1, mode="constant", cval=0.0, output=np.float32)
             for c in range(3)]
    return np.stack(chans, axis=-1) / 255.0


BATCH = 8  # frames per network call: batches are padded to a multiple, so each network compiles once


def _padded(batch: np.ndarray, multiple: int = BATCH) -> np.ndarray:
    """Pad a batch to a multiple of `multiple` rows (one compiled shape for single photos and video chunks)."""
    n = len(batch)
    target = -(-n // multiple) * multiple
    return batch if target == n else np.concatenate([batch, np.repeat(batch[-1:], target - n, axis=0)])


def landmarks_batch(images: np.ndarray, rois: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-mesh landmarks for same-size frames and one ROI each: ((N, 468, 3) image pixels, (N,) presence)."""
    fn, params = _network(LANDMARK_FILE)
    crops = np.stack([sample_roi(im, r, LANDMARK_SIZE) for im, r in zip(images, rois)]).astype(np.float32)
    raw, flag = (np.asarray(o, np.float64)[:len(images)] for o in fn(params, jnp.asarray(_padded(crops))))
    pts = raw.reshape(len(images), NUM_LANDMARKS, 3) / LANDMARK_SIZE
    lms = np.stack([roi_to_image(r, p) for r, p in zip(rois, pts)])
    return lms, 1.0 / (1.0 + np.exp(-flag.reshape(len(images))))
