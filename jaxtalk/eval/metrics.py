"""Fidelity metrics shared by the SVP and Style2Talker benches (pure numpy / scipy, no learned weights).

Conventions (the benches rely on them):

- **Frames** are (F, H, W, 3) or (H, W, 3) arrays, either uint8 in [0, 255] or floats in [0, 1]; both arguments
  of a comparison are converted the same way (`to_unit`), so uint8 vs float comparisons are fine.
- **Landmarks** are (F, L, 2) pixel (x, y) arrays in the frame they were measured on. The landmark set of the
  synthetic faces (`LANDMARK_NAMES`, 16 points) is the renderer's 8 SVP Head-Kps followed by its 8 mouth landmarks
  (`jaxtalk.data.render.MOUTH_LANDMARK_NAMES`); `MOUTH` indexes the mouth part. Landmark distances are reported
  in pixels of a 256-pixel frame (`LMD_REFERENCE_SIZE`), so 64 and 128-pixel results are comparable.
- **Undefined statistics** are made total: the Pearson correlation of a sequence with no variance is 0.0 (nothing
  to correlate), PSNR of identical frames is capped at `PSNR_MAX` dB, cosine similarity with a zero vector is 0.0.
  Shape mismatches raise one ValueError naming the argument.

Metrics (all return Python floats or dicts of floats, ready for JSON):

- `psnr`, `ssim` (Wang et al. 2004 with a Gaussian window, sigma 1.5, 11 taps; equal to
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1)``), both averaged over frames.
- `lmd`, `f_lmd`, `m_lmd`: mean Euclidean landmark distance (all 16 / the 8 mouth landmarks).
- `mouth_opening` (inner-lip gap per frame, from landmarks), `lip_sync` (Pearson correlation over time of the
  generated vs ground-truth mouth opening: 1 = the mouth moves exactly as in the ground truth, ~0 = unrelated),
  `audio_envelope` + `av_sync` (SyncNet-style offset / confidence of the mouth opening against the audio's
  loudness envelope, from audio and frames only).
- `pearson`, `mouth_coefficient_correlation` (correlation of the speech-driven mouth controls recovered from two
  64-d expression sequences), `emotion_accuracy`.
- `cosine_similarity`, `stylesim`, `stylesim_encoded` (StyleSim of SVP Table 2: cosine of style codes of the generated and the
  ground-truth expression sequences; codes come from any encoder, see `jaxtalk.eval.Evaluators.style_code`).
- `dcls` (clustering strength of SVP Table 3, per class: d_inter / d_intra).
- `identity_similarity`, `identity_leakage` (SVP Fig. 4: does the generated face drift towards the style clip's
  identity?), on identity embeddings (`jaxtalk.eval.Evaluators.identity_embedding`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from jaxtalk.data import facs

LMD_REFERENCE_SIZE = 256
PSNR_MAX = 100.0
HEAD_KPS = slice(0, 8)
MOUTH = slice(8, 16)
LANDMARK_NAMES: tuple[str, ...] = (
    "face_left", "face_right", "pupil_left", "pupil_right", "nose_bridge_0", "nose_bridge_1", "nose_bridge_2",
    "nose_tip",
    "mouth_corner_left", "mouth_corner_right", "outer_upper_left", "outer_upper_mid", "outer_upper_right",
    "outer_lower_mid", "inner_upper_mid", "inner_lower_mid",
)
INNER_UPPER, INNER_LOWER = 14, 15
MOUTH_CONTROLS: tuple[str, ...] = ("jaw_open", "lip_press", "lip_stretch", "lip_pucker")
"""The speech-driven controls (visemes) of the synthetic faces: what lip-sync moves."""


# ----------------------------------------------------------------------------------------------- helpers
def to_unit(frames) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] frames -> float64 in [0, 1]."""
    x = np.asarray(frames)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {x.dtype}")
    return x.astype(np.float64)


def _frames_pair(a, b, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_unit(a), to_unit(b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: generated frames {a.shape} and reference frames {b.shape} differ in shape")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected (F, H, W, 3) or (H, W, 3) frames, got {a.shape}")
    return a, b


def _check_same(a: np.ndarray, b: np.ndarray, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes {a.shape} and {b.shape} differ")


# ----------------------------------------------------------------------------------------------- image quality
def psnr(generated, reference) -> float:
    """Mean over frames of the per-frame PSNR (dB, data range 1); identical frames give `PSNR_MAX`."""
    a, b = _frames_pair(generated, reference, "psnr")
    return _mean_psnr(np.mean((a - b) ** 2, axis=(1, 2, 3)))


def _mean_psnr(mse: np.ndarray) -> float:
    """Mean of the per-frame PSNRs (dB, data range 1) of per-frame MSEs, each capped at `PSNR_MAX`."""
    per_frame = np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_MAX)
    return float(np.mean(np.minimum(per_frame, PSNR_MAX)))


def upper_face_box(landmarks: np.ndarray) -> np.ndarray:
    """(F, 4) [x0, y0, x1, y1] pixel boxes around the eyes and brows, from (F, 16, 2) landmarks (`LANDMARK_NAMES`):
    the pupils' span grown by 0.35 interocular distances sideways, from 0.6 distances above the pupils (the
    brows) to 0.25 below. The region that carries most of an emotion apart from the mouth."""
    lm = np.asarray(landmarks, np.float64)
    pupils = lm[:, 2:4]
    d = np.linalg.norm(pupils[:, 1] - pupils[:, 0], axis=-1)
    y = pupils[:, :, 1].mean(axis=1)
    return np.stack([pupils[:, :, 0].min(axis=1) - 0.35 * d, y - 0.6 * d,
                     pupils[:, :, 0].max(axis=1) + 0.35 * d, y + 0.25 * d], axis=1)


def region_psnr(generated, reference, boxes) -> float:
    """Mean over frames of the PSNR (dB, data range 1) inside each frame's pixel box [x0, y0, x1, y1] (pixel
    centres decide; boxes are clipped to the frame); identical regions give `PSNR_MAX`."""
    a, b = _frames_pair(generated, reference, "region_psnr")
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != (a.shape[0], 4):
        raise ValueError(f"region_psnr: boxes must be ({a.shape[0]}, 4), got {boxes.shape}")
    ys, xs = np.arange(a.shape[1]) + 0.5, np.arange(a.shape[2]) + 0.5
    inside = ((ys[None, :, None] >= boxes[:, 1, None, None]) & (ys[None, :, None] <= boxes[:, 3, None, None])
              & (xs[None, None, :] >= boxes[:, 0, None, None]) & (xs[None, None, :] <= boxes[:, 2, None, None]))
    count = inside.sum(axis=(1, 2))
    if np.any(count == 0):
        raise ValueError("region_psnr: a box holds no pixel centre")
    return _mean_psnr((((a - b) ** 2).mean(axis=-1) * inside).sum(axis=(1, 2)) / count)


def _ssim_frame(x: np.ndarray, y: np.ndarray) -> float:
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for ch in range(x.shape[-1]):
        xc, yc = x[..., ch], y[..., ch]

        def blur(z):
            return ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

        mx, my = blur(xc), blur(yc)
        sxx, syy, sxy = blur(xc * xc) - mx * mx, blur(yc * yc) - my * my, blur(xc * yc) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(s[5:-5, 5:-5].mean())  # skimage crops the (win - 1) / 2 border before averaging
    return float(np.mean(vals))


def ssim(generated, reference) -> float:
    """Mean over frames of the Gaussian-window SSIM (sigma 1.5, 11 taps, K1 0.01, K2 0.03, data range 1),
    averaged over channels; frames must be at least 11 pixels on each side."""
    a, b = _frames_pair(generated, reference, "ssim")
    if min(a.shape[1:3]) < 11:
        raise ValueError(f"ssim: frames must be at least 11x11 pixels, got {a.shape[1:3]}")
    return float(np.mean([_ssim_frame(x, y) for x, y in zip(a, b)]))


# ----------------------------------------------------------------------------------------------- landmarks
def _landmarks_pair(pred, gt, name: str) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    _check_same(p, g, name)
    if p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(f"{name}: landmarks must be (..., L, 2) pixel (x, y), got {p.shape}")
    return p, g


def lmd(pred, gt, frame_size: int, reference_size: int = LMD_REFERENCE_SIZE) -> float:
    """Mean Euclidean distance between corresponding landmarks, over landmarks and frames, in pixels of a
    `reference_size` frame (the landmarks are in pixels of a `frame_size` frame)."""
    p, g = _landmarks_pair(pred, gt, "lmd")
    if frame_size <= 0:
        raise ValueError(f"lmd: frame_size must be positive, got {frame_size}")
    return float(np.mean(np.linalg.norm(p - g, axis=-1)) * reference_size / frame_size)


def f_lmd(pred, gt, frame_size: int) -> float:
    """F-LMD: `lmd` over all 16 synthetic landmarks (head keypoints and mouth), 256-px frame units."""
    p, g = _landmarks_pair(pred, gt, "f_lmd")
    if p.shape[-2] != len(LANDMARK_NAMES):
        raise ValueError(f"f_lmd: expected {len(LANDMARK_NAMES)} landmarks (LANDMARK_NAMES), got {p.shape[-2]}")
    return lmd(p, g, frame_size)


def m_lmd(pred, gt, frame_size: int) -> float:
    """M-LMD: `lmd` over the 8 mouth landmarks (`MOUTH` of the 16), 256-px frame units."""
    p, g = _landmarks_pair(pred, gt, "m_lmd")
    if p.shape[-2] != len(LANDMARK_NAMES):
        raise ValueError(f"m_lmd: expected {len(LANDMARK_NAMES)} landmarks (LANDMARK_NAMES), got {p.shape[-2]}")
    return lmd(p[..., MOUTH, :], g[..., MOUTH, :], frame_size)


def mouth_opening(landmarks, frame_size: int | None = None) -> np.ndarray:
    """(F,) inner-lip gap per frame from (F, 16, 2) landmarks, in pixels (of a 256-px frame if `frame_size`)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (len(LANDMARK_NAMES), 2):
        raise ValueError(f"mouth_opening: expected (F, {len(LANDMARK_NAMES)}, 2) landmarks, got {lm.shape}")
    gap = np.linalg.norm(lm[:, INNER_LOWER] - lm[:, INNER_UPPER], axis=-1)
    return gap * (LMD_REFERENCE_SIZE / frame_size) if frame_size else gap


# ----------------------------------------------------------------------------------------------- correlations
def pearson(a, b) -> float:
    """Pearson correlation of two equal-length 1-d sequences; 0.0 when either has no variance."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    _check_same(x, y, "pearson")
    if x.size < 2:
        raise ValueError(f"pearson: need at least 2 samples, got {x.size}")
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 1e-12 * max(1.0, x.size) else 0.0


def lip_sync(generated_opening, reference_opening) -> float:
    """Lip-sync score: Pearson correlation over time of the generated and ground-truth mouth openings (from
    `mouth_opening` on landmarks regressed from frames). 1 = the mouth opens and closes exactly when the
    ground truth's does; a video driven by other audio scores near 0."""
    return pearson(generated_opening, reference_opening)


def audio_envelope(audio, num_frames: int, fps: float, sample_rate: int = 16000) -> np.ndarray:
    """(num_frames,) log RMS loudness of the audio in a window of one video frame centred on each frame."""
    x = np.asarray(audio, np.float64).ravel()
    if x.size == 0 or num_frames < 1 or fps <= 0:
        raise ValueError(f"audio_envelope: need non-empty audio, num_frames >= 1, fps > 0; got {x.size} samples, "
                         f"{num_frames} frames, fps {fps}")
    hop = sample_rate / fps
    out = np.empty(num_frames)
    for f in range(num_frames):
        lo, hi = int(round((f + 0.5) * hop - hop / 2)), int(round((f + 0.5) * hop + hop / 2))
        seg = x[max(lo, 0):min(max(hi, lo + 1), x.size)]
        out[f] = np.log(np.sqrt(np.mean(seg * seg)) + 1e-4) if seg.size else np.log(1e-4)
    return out


def av_sync(opening, envelope, max_offset: int = 5) -> dict[str, float]:
    """SyncNet-style audio-visual sync from frames and audio only: the Pearson correlation of the mouth opening
    with the audio envelope shifted by each offset in [-max_offset, max_offset] frames (positive: the mouth
    lags the audio). Returns ``{"offset": best offset (frames), "confidence": best correlation minus the median
    over offsets, "correlation": correlation at offset 0}``. A synced clip has offset ~0 and a clear peak."""
    o, e = np.asarray(opening, np.float64).ravel(), np.asarray(envelope, np.float64).ravel()
    _check_same(o, e, "av_sync")
    if o.size < 2 * max_offset + 4:
        raise ValueError(f"av_sync: need at least {2 * max_offset + 4} frames for max_offset {max_offset}, got "
                         f"{o.size}")
    offsets = np.arange(-max_offset, max_offset + 1)
    corrs = np.array([pearson(o[max(k, 0):o.size + min(k, 0)], e[max(-k, 0):e.size - max(k, 0)]) for k in offsets])
    best = int(np.argmax(corrs))
    return {"offset": float(offsets[best]), "confidence": float(corrs[best] - np.median(corrs)),
            "correlation": float(corrs[max_offset])}


def mouth_coefficient_correlation(generated_expression, reference_expression) -> float:
    """Mean over the speech-driven mouth controls (`MOUTH_CONTROLS`, recovered from the 64-d coefficients by
    `facs.controls_from_expression`) of the Pearson correlation over time; controls that do not move in the
    reference are skipped (0.0 if none moves)."""
    g, r = np.asarray(generated_expression, np.float64), np.asarray(reference_expression, np.float64)
    _check_same(g, r, "mouth_coefficient_correlation")
    if g.ndim != 2 or g.shape[1] != facs.EXPRESSION_DIM:
        raise ValueError(f"mouth_coefficient_correlation: expected (F, {facs.EXPRESSION_DIM}) expression, got "
                         f"{g.shape}")
    cg, cr = facs.controls_from_expression(g), facs.controls_from_expression(r)
    vals = [pearson(cg[:, facs.CONTROL_INDEX[n]], cr[:, facs.CONTROL_INDEX[n]]) for n in MOUTH_CONTROLS
            if np.std(cr[:, facs.CONTROL_INDEX[n]]) > 1e-6]
    return float(np.mean(vals)) if vals else 0.0


def emotion_accuracy(predicted, target) -> float:
    """Fraction of equal labels (ints or strings)."""
    p, t = np.asarray(predicted), np.asarray(target)
    _check_same(p, t, "emotion_accuracy")
    if p.size == 0:
        raise ValueError("emotion_accuracy: no labels")
    return float(np.mean(p == t))


# ----------------------------------------------------------------------------------------------- style codes
def cosine_similarity(a, b) -> np.ndarray:
    """Row-wise cosine similarity of (..., D) arrays (0.0 where a vector is zero)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    _check_same(x, y, "cosine_similarity")
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    den = nx * ny
    return np.where(den > 0, (x * y).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def stylesim(generated_codes, reference_codes) -> float:
    """StyleSim: mean cosine similarity of the style codes (D,) or (N, D) of generated and ground-truth
    expression sequences (SVP Table 2)."""
    return float(np.mean(cosine_similarity(generated_codes, reference_codes)))


def stylesim_encoded(generated_expression, reference_expression, encoder: Callable) -> float:
    """StyleSim with any style encoder: `encoder` maps an expression sequence (T, 64) (or a batch (N, T, 64)) to
    codes (D,) / (N, D), e.g. the trained SVP style extractor or `Evaluators.style_code`."""
    return stylesim(np.asarray(encoder(generated_expression)), np.asarray(encoder(reference_expression)))


def dcls(codes, labels) -> dict[str, float]:
    """Clustering strength per class (SVP Table 3): d_inter(c) / d_intra(c) where d_inter(c) is the mean
    Euclidean distance of class c's centroid to the other classes' centroids and d_intra(c) the mean distance of
    c's samples to its centroid. `codes` (N, D), `labels` (N,); needs >= 2 classes with >= 2 samples each.
    A class whose samples coincide (d_intra 0) gets inf."""
    x, lab = np.asarray(codes, np.float64), np.asarray(labels)
    if x.ndim != 2 or lab.shape != (len(x),):
        raise ValueError(f"dcls: expected codes (N, D) and labels (N,), got {x.shape} and {lab.shape}")
    classes = list(dict.fromkeys(lab.tolist()))
    counts = {c: int(np.sum(lab == c)) for c in classes}
    if len(classes) < 2 or min(counts.values()) < 2:
        raise ValueError(f"dcls: need at least 2 classes with at least 2 samples each, got counts {counts}")
    centroids = {c: x[lab == c].mean(0) for c in classes}
    out = {}
    for c in classes:
        inter = np.mean([np.linalg.norm(centroids[c] - centroids[o]) for o in classes if o != c])
        intra = np.mean(np.linalg.norm(x[lab == c] - centroids[c], axis=-1))
        out[str(c)] = float(inter / intra) if intra > 0 else float("inf")
    return out


# ----------------------------------------------------------------------------------------------- identity
def identity_similarity(embeddings, reference) -> float:
    """Mean cosine similarity of per-frame identity embeddings (F, D) to a reference embedding (D,) or the
    mean of reference embeddings (G, D): identity preservation, 1 = same identity."""
    e, r = np.asarray(embeddings, np.float64), np.asarray(reference, np.float64)
    r = r.mean(0) if r.ndim == 2 else r
    if e.ndim != 2 or r.shape != e.shape[1:]:
        raise ValueError(f"identity_similarity: expected embeddings (F, D) and reference (D,) or (G, D), got "
                         f"{e.shape} and {np.asarray(reference).shape}")
    return float(np.mean(cosine_similarity(e, np.broadcast_to(r, e.shape))))


def identity_leakage(generated, reference_identity, style_identity) -> dict[str, float]:
    """How far generated frames drift from the reference face's identity towards the style clip's identity.

    All arguments are identity embeddings: generated (F, D), the reference and style identities (D,) or (G, D)
    (averaged). Returns ``{"margin": mean over frames of cos(gen, style) - cos(gen, reference)`` (more negative
    is better: < 0 means closer to the reference), ``"fraction": share of frames closer to the style identity
    than to the reference identity`` (0 = no leakage), ``"to_style": mean cos(gen, style)``,
    ``"to_reference": mean cos(gen, reference)}``.
    """
    g = np.asarray(generated, np.float64)
    if g.ndim != 2:
        raise ValueError(f"identity_leakage: generated embeddings must be (F, D), got {g.shape}")
    refs = []
    for name, r in (("reference_identity", reference_identity), ("style_identity", style_identity)):
        r = np.asarray(r, np.float64)
        r = r.mean(0) if r.ndim == 2 else r
        if r.shape != g.shape[1:]:
            raise ValueError(f"identity_leakage: {name} must be ({g.shape[1]},) or (G, {g.shape[1]}), got "
                             f"{np.asarray(r).shape}")
        refs.append(cosine_similarity(g, np.broadcast_to(r, g.shape)))
    to_ref, to_style = refs
    return {"margin": float(np.mean(to_style - to_ref)), "fraction": float(np.mean(to_style > to_ref)),
            "to_style": float(np.mean(to_style)), "to_reference": float(np.mean(to_ref))}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std", "n"} of a list of per-clip values (for JSON tables)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise ValueError("mean_std: no values")
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def paired_verdict(a: Sequence[dict], b: Sequence[dict], key: str, lower_is_better: bool) -> dict:
    """Method `a` against method `b` on the same clips (rows of per-clip metrics, paired by position): the mean
    difference of `key` (positive = `a` better), its standard error over the clips, and a verdict: "reached" when
    `a` is better by more than two standard errors, "missed" when worse by more than two, else "within noise" — so a
    target is never called reached on a difference the clips cannot tell apart."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_verdict: {len(a)} rows against {len(b)}; both methods need the same clips")
    d = np.array([(rb[key] - ra[key]) if lower_is_better else (ra[key] - rb[key]) for ra, rb in zip(a, b)], float)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
    mean = float(d.mean())
    verdict = "reached" if mean > 2 * se else "missed" if mean < -2 * se else "within noise"
    return {"verdict": verdict, "mean_difference": mean, "standard_error": se, "clips": len(d)}
