"""Image geometry shared by the preparations: affine warps, the V-Express face crop, FFHQ alignment, paste-back,
a face-parsing map from landmark regions, and debug overlays.

Every crop is a 2x3 affine matrix `M` taking original-image pixels (x, y, 1) to crop pixels, so keypoints map with
`apply_affine(M, pts)` and the generated frames go back with `paste_back(original, frame, M)`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from jaxtalk.data.kps import HEAD_KPS_COLOURS, HEAD_KPS_LIMBS

CROP_EXPAND = 2.0  # crop side over the face box's long side (V-Express recommends the face at about half the crop)


def apply_affine(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through the 2x3 matrix M."""
    pts = np.asarray(pts, np.float64)
    return (pts @ M[:, :2].T + M[:, 2]).astype(np.float32)


def invert_affine(M: np.ndarray) -> np.ndarray:
    A = np.linalg.inv(M[:, :2])
    return np.concatenate([A, -A @ M[:, 2:]], axis=1)


def warp_affine(image: np.ndarray, M: np.ndarray, size: tuple[int, int], border: str = "edge") -> np.ndarray:
    """Crop pixel q gets the original's bilinear sample at M^-1 q (pixel centres), (H, W) = size.
    border: 'edge' (replicate), 'reflect' or 'constant' (black) outside the image."""
    h, w = size
    inv = invert_affine(np.asarray(M, np.float64))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    src_y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    mode = {"edge": "nearest", "reflect": "mirror", "constant": "constant"}[border]
    chans = [ndimage.map_coordinates(image[..., c], [src_y, src_x], order=1, mode=mode, cval=0.0, output=np.float32)
             for c in range(image.shape[-1])]
    return np.clip(np.stack(chans, -1) + 0.5, 0, 255).astype(np.uint8)


def face_crop_matrix(box: np.ndarray, size: int, expand: float = CROP_EXPAND) -> tuple[np.ndarray, np.ndarray]:
    """V-Express-style crop: a square `expand` times the face box's long side, centred on the box, resized to
    `size`. Returns (M, square) with square = (x0, y0, x1, y1) in original pixels (may extend past the image,
    where the crop is padded by edge replication)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = expand * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = cx - side / 2, cy - side / 2
    s = size / side
    M = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    return M, np.array([x0, y0, x0 + side, y0 + side], np.float32)


def ffhq_quad(eye_left: np.ndarray, eye_right: np.ndarray, mouth_left: np.ndarray, mouth_right: np.ndarray
              ) -> np.ndarray:
    """The oriented square (4, 2) the FFHQ alignment (used to train pSp) crops: centred a tenth of the way from
    the eye midpoint to the mouth midpoint, rotated with the eye-to-eye / eye-to-mouth axes, half-side the larger
    of 2x the eye distance and 1.8x the eye-mouth distance. eye_left / mouth_left are on the image left."""
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / (np.hypot(*x) + 1e-12)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]).astype(np.float64)


def quad_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 M mapping the quad's corners (top-left, bottom-left, bottom-right, top-right) onto a size x size
    square."""
    src = np.asarray(quad, np.float64)[[0, 1, 3]]
    dst = np.array([[0.0, 0.0], [0.0, size], [size, 0.0]])
    A = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(A, dst).T


def feather_mask(size: tuple[int, int], feather: float) -> np.ndarray:
    """float32 (H, W) mask: 1 inside, falling to 0 over `feather` pixels at every edge (smooth)."""
    h, w = size
    f = max(float(feather), 1e-3)
    ramp = lambda n: np.clip((np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5)) / f, 0.0, 1.0)
    m = np.outer(ramp(h), ramp(w))
    return (m * m * (3 - 2 * m)).astype(np.float32)


def paste_back(original: np.ndarray, frame: np.ndarray, M: np.ndarray, feather: float | None = None
               ) -> np.ndarray:
    """Write the generated crop `frame` back into `original` through the crop matrix M (scaled when the frame's
    size differs from the crop's), blended with a feathered mask (default: 1/16 of the crop side)."""
    fh, fw = frame.shape[:2]
    h, w = original.shape[:2]
    inv = invert_affine(np.asarray(M, np.float64))
    mask = feather_mask((fh, fw), feather if feather is not None else max(fh, fw) / 16)
    # original pixel p samples the frame at M p; warp_affine wants the frame -> original matrix, i.e. M^-1
    warped = warp_affine(frame, inv, (h, w), border="constant").astype(np.float32)
    alpha = warp_affine((mask[..., None] * 255).astype(np.uint8), inv, (h, w), border="constant")[..., :1] / 255.0
    out = original.astype(np.float32) * (1 - alpha) + warped * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def crop_size_matrix(M: np.ndarray, crop_size: int, frame_size: tuple[int, int]) -> np.ndarray:
    """M for a crop of `crop_size` rescaled to a generated frame of (H, W) = frame_size."""
    s = np.diag([frame_size[1] / crop_size, frame_size[0] / crop_size])
    return s @ np.asarray(M, np.float64)


# Face-parsing labels (CelebAMask-HQ / BiSeNet numbering, the regions landmarks can outline)
PARSING_LABELS = {"background": 0, "skin": 1, "brow_l": 2, "brow_r": 3, "eye_l": 4, "eye_r": 5, "nose": 10,
                  "mouth": 11, "lip_u": 12, "lip_l": 13}
_REGIONS = {  # face-mesh polygons, drawn in this order (later regions over earlier ones)
    "skin": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
    "brow_l": (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    "brow_r": (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
    "eye_l": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    "eye_r": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    "nose": (168, 193, 245, 188, 174, 236, 198, 209, 49, 64, 98, 97, 2, 326, 327, 294, 279, 429, 420, 456, 399,
             412, 465, 417),
    "lip_u": (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 78),
    "lip_l": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78),
    "mouth": (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95),
}


def parsing_map(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) label map (PARSING_LABELS) from 468 landmarks in the map's pixels: the face oval as skin,
    brows, eyes, nose, lips and mouth as landmark polygons. Hair, neck and cloth have no landmarks and stay
    background; "_l" regions are on the image left."""
    h, w = size
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for name, idx in _REGIONS.items():
        draw.polygon([tuple(map(float, landmarks[i, :2])) for i in idx], fill=PARSING_LABELS[name])
    return np.asarray(im)


PARSING_CLASSES = 19  # BiSeNet's CelebAMask-HQ classes; PARSING_LABELS uses their indices
PARSING_LOGIT = 10.0  # logit given to a pixel's own class (0 to the others): a confident classifier's margin


def parsing_logits(labels: np.ndarray, size: int, logit: float = PARSING_LOGIT) -> np.ndarray:
    """float32 (size, size, 19) stand-in for BiSeNet face-parsing logits from a label map (`parsing_map`):
    nearest-neighbour resized, `logit` on each pixel's class and 0 on the others. BiSeNet's real logits also
    rank the other classes and cover hair, neck and clothes, which landmarks cannot give."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0 or labels.min() < 0 or labels.max() >= PARSING_CLASSES:
        raise ValueError(f"parsing map: expected an (H, W) label map with values 0..{PARSING_CLASSES - 1}, got "
                         f"shape {labels.shape}")
    if labels.shape != (size, size):
        labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))
    return (np.eye(PARSING_CLASSES, dtype=np.float32)[labels] * np.float32(logit)).astype(np.float32)


def overlay(image: np.ndarray, box: np.ndarray | None = None, landmarks: np.ndarray | None = None,
            head_kps: np.ndarray | None = None, square: np.ndarray | None = None) -> np.ndarray:
    """A copy of `image` with the face box (green), the crop square (yellow), the landmarks (white dots) and the
    Head-Kps points and limbs (their condition colours) drawn on it; uint8 (H, W, 3)."""
    im = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    draw = ImageDraw.Draw(im)
    lw = max(1, round(max(im.size) / 300))
    if square is not None:
        draw.rectangle([float(v) for v in square], outline=(255, 220, 0), width=lw)
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=(0, 255, 0), width=lw)
    if landmarks is not None:
        r = max(1.0, lw * 0.6)
        for x, y in np.asarray(landmarks)[:, :2]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    if head_kps is not None:
        kps = np.asarray(head_kps)
        for i, j in HEAD_KPS_LIMBS:
            draw.line([tuple(map(float, kps[i])), tuple(map(float, kps[j]))],
                      fill=tuple(int(c * 0.6) for c in HEAD_KPS_COLOURS[i]), width=lw + 1)
        r = lw * 2 + 1
        for (x, y), c in zip(kps, HEAD_KPS_COLOURS):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in c))
    return np.asarray(im)
