"""Synthetic data for training (and evaluating) the whole Style2Talker stack, with an explicit identity split.

Two populations of the synthetic generator (`jaxtalk.data.synthetic`), drawn from different seeds:

- **train** (`SplitConfig.train()`: identity seed 1000, utterance seed 1001) — the only data any trainer sees;
- **eval** (`SplitConfig.eval()`: identity seed 2000, utterance seed 2001) — held-out identities speaking
  held-out utterances, used by `bench/fidelity_style2talker.py`, the demo and the tests.

A split holds, per clip: the 64-d expression coefficients, the 6-d pose, the eye-closure control (audio2exp's
blink ratio), the SadTalker mel windows of its speech (F, 80, 16), float16, the (emotion, intensity) condition, the
identity and its gender; for the first `rendered_identities` identities also the frames at `resolution` and at
the Style-A input size. `build_split` makes it (deterministic in the config) and `load_or_build` caches it as one
`.npz` per config (no pickles).

Batches for the trainers are pure functions of (seed, batch index), each row of (seed, batch index, row)
(`RowBatches`: every process makes only the rows its devices hold): `index_dataset` turns such a function into a
grain `MapDataset`, so the loop's checkpointed iterator position reproduces the batches on resume, on any number
of processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import numpy as np
from PIL import Image

from jaxtalk.data import facs, render, synthetic
from jaxtalk.data.atomic import atomic_path
from jaxtalk.nn.standardize import population_statistics
from jaxtalk.style2talker import audio2exp as a2e
from jaxtalk.style2talker.config import Style2TalkerConfig
from jaxtalk.style2talker.emotion_phrases import CONDITIONS

EYE_CLOSE = facs.CONTROL_INDEX["eye_close"]
DEFAULT_CROP = (1.0, 128.0, 128.0)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """One population of synthetic clips (see the module docstring)."""

    name: str = "train"
    identity_seed: int = 1000
    utterance_seed: int = 1001
    num_identities: int = 48
    conditions_per_identity: int = 22  # of the 22 MEAD conditions, a random subset per identity when fewer
    rendered_identities: int = 24
    rendered_conditions: int = 8  # clips with frames per rendered identity
    seconds: float = 2.0
    fps: float = 25.0
    resolution: int = 64
    input_size: int = 32  # Style-A in_size / pSp input size (bilinear, as the pipeline resizes)

    @classmethod
    def train(cls, **kw: Any) -> SplitConfig:
        return cls(**kw)

    @classmethod
    def eval(cls, **kw: Any) -> SplitConfig:
        base = dict(name="eval", identity_seed=2000, utterance_seed=2001, num_identities=8, conditions_per_identity=22,
                    rendered_identities=8, rendered_conditions=4)
        base.update(kw)
        return cls(**base)

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def identity_conditions(split: SplitConfig, identity: int, count: int) -> list[int]:
    """The condition indices identity `identity` is recorded under (a seeded subset of `CONDITIONS`)."""
    if count >= len(CONDITIONS):
        return list(range(len(CONDITIONS)))
    rng = np.random.default_rng(np.random.SeedSequence([split.utterance_seed, identity, 0xC0]))
    return sorted(rng.permutation(len(CONDITIONS))[:count].tolist())


def resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) -> uint8 (..., size, size, 3), PIL bilinear per frame (the pipeline's resize)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in flat])
    return out.reshape(*frames.shape[:-3], size, size, 3)


def build_split(split: SplitConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """Generate every clip of the split (see the module docstring); arrays stacked over clips."""
    ids = synthetic.make_identities(split.num_identities, split.identity_seed)
    n = split.num_frames
    out: dict[str, list] = {k: [] for k in ("expression", "pose", "eye", "mel", "condition", "identity", "female",
                                            "emotion", "intensity")}
    rendered: dict[str, list] = {"frames": [], "frames_in": [], "clip": []}
    for i, ident in enumerate(ids):
        render_set = set(identity_conditions(split, i, split.rendered_conditions)) \
            if i < split.rendered_identities else set()
        conds = sorted(set(identity_conditions(split, i, split.conditions_per_identity)) | render_set)
        for c in conds:
            emotion, intensity = CONDITIONS[c]
            draw = c in render_set
            clip = synthetic.generate_clip(ident, emotion, intensity, split.utterance_seed, num_frames=n,
                                           fps=split.fps, resolution=split.resolution, render_video=draw)
            if draw:
                rendered["clip"].append(len(out["expression"]))
                rendered["frames"].append(clip.frames)
                rendered["frames_in"].append(resize(clip.frames, split.input_size))
            out["expression"].append(clip.expression)
            out["pose"].append(clip.pose)
            out["eye"].append(clip.controls[:, EYE_CLOSE])
            out["mel"].append(a2e.audio_to_mel_windows(clip.audio, clip.sample_rate, split.fps).astype(np.float16))
            out["condition"].append(c)
            out["identity"].append(i)
            out["female"].append(ident.gender == "female")
            out["emotion"].append(facs.EMOTIONS.index(emotion))
            out["intensity"].append(intensity)
        if progress:
            print(f"[data {split.name}] identity {i + 1}/{len(ids)}", flush=True)
    arrays = {k: np.asarray(np.stack(v)) for k, v in out.items()}
    arrays.update({k: np.stack(v) for k, v in rendered.items()} if rendered["clip"] else
                  {"frames": np.zeros((0, n, split.resolution, split.resolution, 3), np.uint8),
                   "frames_in": np.zeros((0, n, split.input_size, split.input_size, 3), np.uint8),
                   "clip": np.zeros((0,), np.int64)})
    return arrays


def load_or_build(split: SplitConfig, cache_dir: str | os.PathLike, progress: bool = False) -> dict[str, np.ndarray]:
    """The split's arrays from `<cache_dir>/<name>_<config hash>.npz`, generated and written first if absent."""
    path = Path(cache_dir) / f"{split.name}_{split.key()}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = build_split(split, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return arrays


def mouth_boxes(split: SplitConfig, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(rendered clips, F, 4) float32 mouth boxes [x0, y0, x1, y1] of every rendered frame, in units of the frame
    side (0..1): the bounding box of the renderer's 8 mouth landmarks, exact because the controls are recovered
    from the stored expression coefficients (`facs.controls_from_expression`) and the geometry from the stored
    pose and the identity's face style."""
    ids = synthetic.make_identities(split.num_identities, split.identity_seed)
    side = split.resolution
    out = np.zeros((len(arrays["clip"]), arrays["frames"].shape[1], 4), np.float32)
    for r, c in enumerate(arrays["clip"]):
        style = ids[int(arrays["identity"][c])].style
        controls = facs.controls_from_expression(arrays["expression"][c])
        for f in range(out.shape[1]):
            pts = render.mouth_landmarks(style, controls[f], render.Geometry(style, arrays["pose"][c, f], side, side))
            out[r, f] = np.concatenate([pts.min(0), pts.max(0)]) / side
    return out


def driving_statistics(arrays: dict[str, np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-dimension mean and std of the 73-d driving coefficients [exp, angles, trans, crop] over every frame of
    the split's rendered clips (what Style-A is trained on); a dimension that never changes (the crop) gets std 1,
    so it is only centred."""
    clips = np.asarray(arrays["clip"])
    if len(clips) == 0:
        raise ValueError("driving_statistics: the split has no rendered clips")
    coeffs = driving_coefficients(arrays["expression"][clips].reshape(-1, arrays["expression"].shape[-1]),
                                  arrays["pose"][clips].reshape(-1, arrays["pose"].shape[-1]))
    return population_statistics(coeffs)


def with_driving_statistics(model: Style2TalkerConfig, arrays: dict[str, np.ndarray]) -> Style2TalkerConfig:
    """`model` (a Style2TalkerConfig) with Style-A's driving standardisation set from `arrays` (unless set)."""
    if model.style_a.driving_mean is not None:
        return model
    mean, std = driving_statistics(arrays)
    return dataclasses.replace(model, style_a=dataclasses.replace(model.style_a, driving_mean=mean, driving_std=std))


def driving_coefficients(expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(F, 73) float32 driving coefficients [exp, angles, trans, crop] per frame; the crop is `DEFAULT_CROP`."""
    crop = np.broadcast_to(np.asarray(DEFAULT_CROP, np.float32), (expression.shape[0], 3))
    return np.concatenate([expression, pose, crop], axis=1).astype(np.float32)


def coefficient_windows(expression: np.ndarray, pose: np.ndarray, centres: np.ndarray, radius: int = 13
                        ) -> np.ndarray:
    """(len(centres), 2r+1, 73) driving windows [exp, angles, trans, crop] around frames, indices clamped."""
    n = expression.shape[0]
    coeffs = driving_coefficients(expression, pose)
    idx = np.clip(np.asarray(centres)[:, None] + np.arange(-radius, radius + 1)[None], 0, n - 1)
    return coeffs[idx]


def row_rng(seed: int, index: int, row: int) -> np.random.Generator:
    """The generator of row `row` of global batch `index`: a row does not depend on the other rows, so any
    process can make its own rows alone."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(row), 0x5E3]))


class RowBatches:
    """Global batch `index` of `batch_size` rows, each `make_row(rng)` with `row_rng(seed, index, row)`, of which
    this process makes only `rows` (default: the rows `jaxtalk.training.data.process_rows` set when the batches
    were built, else all): the global batch is the same for any number of processes."""

    def __init__(self, make_row: Callable[[np.random.Generator], dict[str, Any]], batch_size: int, seed: int,
                 rows: Any = None):
        from jaxtalk.training.data import current_rows

        rows = current_rows() if rows is None else rows
        self.rows = np.arange(batch_size) if rows is None else np.asarray(rows, np.int64)
        if self.rows.size == 0 or self.rows.min() < 0 or self.rows.max() >= batch_size:
            raise ValueError(f"process rows {self.rows.tolist()} are not rows of a global batch of {batch_size}")
        self.make_row, self.seed = make_row, seed

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        made = [self.make_row(row_rng(self.seed, index, r)) for r in self.rows]
        return {k: np.stack([np.asarray(m[k]) for m in made]) for k in made[0]}


def index_dataset(make_batch: Callable[[int], dict[str, np.ndarray]]) -> grain.MapDataset:
    """An endless grain MapDataset whose element i is `make_batch(i)` (random access: resumable by position)."""
    return grain.MapDataset.range(1 << 40).map(make_batch)
