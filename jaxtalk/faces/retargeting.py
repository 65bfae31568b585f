"""V-Express's keypoint retarget strategies, applied to the 8-point Head-Kps track.

V-Express (`inference.py`, `pipelines/utils.py retarget_kps`) works on its 3 V-Kps points (left eye, right eye,
nose); here the same rules are computed on the V-Kps subset of the Head-Kps set (`jaxtalk.data.kps`: the two
pupils and the nose tip) and applied to all 8 points:

- `fix_face`: the reference keypoints on every frame (no head motion).
- `no_retarget`: the driving track as it is.
- `naive_retarget`: pick the driving frame whose eye-nose ratio (distance left eye -> nose over right eye -> nose)
  is closest to the reference's, scale the whole track along x by the ratio of eye distances and along y by the
  ratio of nose-to-eye-line distances (reference over that frame), then shift it so its first frame's nose lands
  on the reference nose.
- `offset_retarget`: the same scaling, then the reference keypoints moved on every frame by minus half the scaled
  track's nose displacement from its first frame (V-Express's sign and factor).

One deliberate difference: V-Express's frame search updates its best distance with the frame's ratio instead of
the distance (`ratio_delta = tgt_ratio`), so it does not always pick the closest frame; this picks the closest.
"""

from __future__ import annotations

import numpy as np

from jaxtalk.data.kps import V_KPS_FROM_HEAD_KPS

STRATEGIES = ("fix_face", "no_retarget", "offset_retarget", "naive_retarget")
_LEFT, _RIGHT, _NOSE = V_KPS_FROM_HEAD_KPS


def eye_nose_ratio(kps: np.ndarray) -> float:
    """|left eye - nose| / |right eye - nose| of one (K, 2) keypoint set (Head-Kps indices)."""
    d_left = np.linalg.norm(kps[_LEFT] - kps[_NOSE])
    d_right = np.linalg.norm(kps[_RIGHT] - kps[_NOSE])
    return float(d_left / (d_right + 1e-6))


def _point_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def face_size(kps: np.ndarray) -> tuple[float, float]:
    """(eye distance, distance from the nose to the eye segment) of one keypoint set."""
    a, b, c = kps[_LEFT], kps[_RIGHT], kps[_NOSE]
    return float(np.linalg.norm(a - b)), _point_to_segment(c, a, b)


def rescale_params(ref: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(scale x, scale y) that bring `target`'s face size to `ref`'s."""
    rw, rh = face_size(ref)
    tw, th = face_size(target)
    if tw <= 1e-6 or th <= 1e-6:
        raise ValueError("retarget: the driving keypoints are degenerate (eyes and nose coincide)")
    return rw / tw, rh / th


def retarget(reference: np.ndarray, track: np.ndarray | None, strategy: str, num_frames: int | None = None
             ) -> np.ndarray:
    """Keypoint track (F, K, 2) for the reference's (K, 2) keypoints under `strategy` (see module docstring).
    `track` (F, K, 2) is the driving track in the same pixel frame as `reference` (None only with fix_face,
    which then needs `num_frames`)."""
    reference = np.asarray(reference, np.float64)
    if strategy not in STRATEGIES:
        raise ValueError(f"--retarget {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if strategy == "fix_face":
        n = num_frames if num_frames is not None else (len(track) if track is not None else 1)
        return np.repeat(reference[None], n, axis=0).astype(np.float32)
    if track is None or len(track) == 0:
        raise ValueError(f"--retarget {strategy}: needs a driving video (--driving); without one use fix_face")
    track = np.asarray(track, np.float64)
    if strategy == "no_retarget":
        return track.astype(np.float32)
    ref_ratio = eye_nose_ratio(reference)
    pick = int(np.argmin([abs(eye_nose_ratio(k) - ref_ratio) for k in track]))
    sx, sy = rescale_params(reference, track[pick])
    scaled = track * np.array([sx, sy])
    if strategy == "offset_retarget":
        nose_offset = scaled[:, _NOSE] - scaled[0, _NOSE]
        return (reference[None] - nose_offset[:, None, :] / 2.0).astype(np.float32)
    return (scaled - (scaled[0, _NOSE] - reference[_NOSE])).astype(np.float32)
