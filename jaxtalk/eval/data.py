"""Ground-truth synthetic data for the evaluator nets: rendered frames with their expression coefficients and the
16 landmarks, and expression sequences with their emotion.

Seeds: the evaluators train on the identity population `TRAIN_SEED` and report held-out figures on `HELDOUT_SEED`
(a disjoint population, and clip seeds drawn from a different stream). The fidelity benches must draw their
evaluation identities from seeds other than `TRAIN_SEED`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxtalk.data import facs, records, synthetic
from jaxtalk.eval import models

TRAIN_SEED = 90210
HELDOUT_SEED = 90211


def clip_landmarks(identity: synthetic.Identity, clip: synthetic.SyntheticClip, resolution: int) -> np.ndarray:
    """(F, 16, 2) pixel landmarks of a generated clip (its Head-Kps then the renderer's mouth landmarks), the
    ground truth that `metrics.f_lmd` / `m_lmd` compare regressed landmarks with."""
    mouth = synthetic.mouth_landmarks(identity, clip.controls, clip.pose, resolution)
    return np.concatenate([clip.head_kps, mouth], axis=1).astype(np.float32)


@dataclasses.dataclass
class FrameSet:
    """Frames resized to `models.INPUT_SIZE` with their ground truth, one row per frame."""

    frames: np.ndarray  # (N, 64, 64, 3) uint8
    expression: np.ndarray  # (N, 64) float32
    landmarks: np.ndarray  # (N, 16, 2) float32, fractions of the frame side
    identity: np.ndarray  # (N,) int32 index in the population
    emotion: np.ndarray  # (N,) int32 index in facs.EMOTIONS


def _resize_uint8(frames: np.ndarray) -> np.ndarray:
    x = np.asarray(models.prepare_frames(frames))
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_frame_set(seed: int, num_identities: int, clips_per_identity: int, num_frames: int,
                     frame_stride: int = 1, resolutions: tuple[int, ...] = (64,)) -> FrameSet:
    """Render clips of identities 0..num_identities-1 of population `seed` (conditions from
    `records.synthetic_plan`), keep every `frame_stride`-th frame; clip k is rendered at resolutions[k % len]
    and resized to 64 px."""
    idents = synthetic.make_identities(num_identities, seed)
    out: dict[str, list] = {k: [] for k in ("frames", "expression", "landmarks", "identity", "emotion")}
    for k, (i, emotion, intensity, clip_seed) in enumerate(records.synthetic_plan(num_identities,
                                                                                  clips_per_identity, seed)):
        res = resolutions[k % len(resolutions)]
        clip = synthetic.generate_clip(idents[i], emotion, intensity, clip_seed, num_frames=num_frames,
                                       resolution=res)
        keep = slice(None, None, frame_stride)
        frames = clip.frames[keep]
        out["frames"].append(frames if res == models.INPUT_SIZE else _resize_uint8(frames))
        out["expression"].append(clip.expression[keep])
        out["landmarks"].append(clip_landmarks(idents[i], clip, res)[keep] / res)
        n = len(frames)
        out["identity"].append(np.full(n, i, np.int32))
        out["emotion"].append(np.full(n, facs.EMOTIONS.index(emotion), np.int32))
    return FrameSet(*(np.concatenate(out[k]) for k in ("frames", "expression", "landmarks", "identity",
                                                       "emotion")))


def _sample_clips(args: tuple) -> list[tuple]:
    """Worker of `sample_frame_set`: (frames at their resolution, expression, landmarks px/res, identity, emotion)
    for the plan entries it is given (numpy only, so it runs in a forked process)."""
    seed, num_identities, entries, frames_per_clip, clip_frames, resolutions = args
    idents = synthetic.make_identities(num_identities, seed)
    out = []
    for k, (i, emotion, intensity, clip_seed) in entries:
        res = resolutions[k % len(resolutions)]
        controls, pose, gaze, _ = synthetic.motion(idents[i], emotion, intensity, clip_seed, clip_frames, 25.0)
        sel = np.sort(np.random.default_rng([seed, k, 0x5E1]).choice(clip_frames, frames_per_clip, replace=False))
        frames, kps = synthetic.render_frames(idents[i], controls[sel], pose[sel], gaze[sel], res)
        mouth = synthetic.mouth_landmarks(idents[i], controls[sel], pose[sel], res)
        out.append((frames, facs.expression_from_controls(controls[sel]),
                    (np.concatenate([kps, mouth], axis=1) / res).astype(np.float32), i,
                    facs.EMOTIONS.index(emotion)))
    return out


def sample_frame_set(seed: int, num_identities: int, clips_per_identity: int, frames_per_clip: int,
                     clip_frames: int = 25, resolutions: tuple[int, ...] = (64,), workers: int = 1) -> FrameSet:
    """Like `render_frame_set`, but render only `frames_per_clip` random frames of each `clip_frames`-frame clip:
    many identities and conditions for the same rendering cost, so a regressor cannot memorise per-clip
    expressions (consecutive frames of one clip are nearly duplicates). `workers` > 1 renders in forked
    processes; the result does not depend on it."""
    plan = list(enumerate(records.synthetic_plan(num_identities, clips_per_identity, seed)))
    jobs = [(seed, num_identities, plan[w::workers], frames_per_clip, clip_frames, resolutions)
            for w in range(workers)]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_sample_clips, jobs)
    else:
        parts = [_sample_clips(jobs[0])]
    clips = [None] * len(plan)
    for w, part in enumerate(parts):
        for j, item in enumerate(part):
            clips[w + j * workers] = item
    frames = [f if f.shape[1] == models.INPUT_SIZE else _resize_uint8(f) for f, *_ in clips]
    n = frames_per_clip
    return FrameSet(np.concatenate(frames), np.concatenate([c[1] for c in clips]).astype(np.float32),
                    np.concatenate([c[2] for c in clips]),
                    np.concatenate([np.full(n, c[3], np.int32) for c in clips]),
                    np.concatenate([np.full(n, c[4], np.int32) for c in clips]))


@dataclasses.dataclass
class SequenceSet:
    """Ground-truth expression sequences (no rendering), one row per clip."""

    expression: np.ndarray  # (C, F, 64) float32
    emotion: np.ndarray  # (C,) int32 index in facs.EMOTIONS
    intensity: np.ndarray  # (C,) int32 MEAD level
    identity: np.ndarray  # (C,) int32


def expression_sequences(seed: int, num_identities: int, clips_per_identity: int, num_frames: int) -> SequenceSet:
    """Expression tracks of the clips `records.synthetic_plan` assigns to population `seed`."""
    idents = synthetic.make_identities(num_identities, seed)
    ex, em, it, idn = [], [], [], []
    for i, emotion, intensity, clip_seed in records.synthetic_plan(num_identities, clips_per_identity, seed):
        controls, _, _, _ = synthetic.motion(idents[i], emotion, intensity, clip_seed, num_frames, 25.0)
        ex.append(facs.expression_from_controls(controls))
        em.append(facs.EMOTIONS.index(emotion))
        it.append(intensity)
        idn.append(i)
    return SequenceSet(np.stack(ex).astype(np.float32), np.array(em, np.int32), np.array(it, np.int32),
                       np.array(idn, np.int32))


def random_windows(rng: np.random.Generator, seqs: np.ndarray, labels: np.ndarray, batch: int, length: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`batch` random windows (batch, length, 64) cut from (C, F, 64) sequences, with their clip labels."""
    c = rng.integers(len(seqs), size=batch)
    t = rng.integers(seqs.shape[1] - length + 1, size=batch)
    return np.stack([seqs[ci, ti:ti + length] for ci, ti in zip(c, t)]), labels[c]

