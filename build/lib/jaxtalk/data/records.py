"""The clip record schema shared by real and synthetic data, its `.npz` files and the dataset `index.json`.

A dataset directory holds one uncompressed `.npz` per clip plus `index.json` listing every clip with its labels and
sizes, so a pipeline can build its window list without opening the clips. All files are written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jaxtalk.data import facs
from jaxtalk.data.atomic import atomic_path, write_bytes_atomic

SAMPLE_RATE = 16000
NUM_HEAD_KPS = 8
INDEX_NAME = "index.json"
INDEX_FORMAT = "jaxtalk-clips"
INDEX_VERSION = 1
_ARRAY_FIELDS = ("frames", "audio", "expression", "pose", "head_kps", "controls", "action_units", "phonemes")


class RecordError(ValueError):
    """A clip record or dataset file that does not follow the schema."""


@dataclasses.dataclass
class ClipRecord:
    """One talking-head clip. Shapes: F frames of H x W, S = F / fps * 16000 audio samples.

    frames uint8 (F, H, W, 3); audio float32 (S,) mono 16 kHz in [-1, 1]; expression float32 (F, 64) 3DMM
    expression coefficients; pose float32 (F, 6) (pitch, yaw, roll, tx, ty, tz); head_kps float32 (F, 8, 2) pixel
    (x, y) of the SVP Head-Kps points; controls float32 (F, 17) and action_units float32 (F, 17) (0-5) where known
    (synthetic data); phonemes int32 (F,) where known; identity / emotion (MEAD name) / intensity (1-3, neutral 1)
    labels and emotion text descriptions.
    """

    frames: np.ndarray
    audio: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    head_kps: np.ndarray
    identity: str
    emotion: str
    intensity: int
    emotion_texts: list[str]
    fps: float
    controls: np.ndarray | None = None
    action_units: np.ndarray | None = None
    phonemes: np.ndarray | None = None
    clip_id: str = ""
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def validate(self) -> None:
        """Check every field; raise one RecordError listing each bad field with its expected form."""
        problems: list[str] = []
        bad_fields: set[str] = set()

        def bad(field: str, expected: str, got: Any) -> None:
            problems.append(f"{field}: expected {expected}, got {got}")
            bad_fields.add(field)

        def describe(x: Any) -> str:
            return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__

        def floats(field: str, trailing: tuple[int, ...], expected: str, optional: bool = False) -> None:
            x = getattr(self, field)
            if x is None and optional:
                return
            x = np.asarray(x) if isinstance(x, (list, tuple)) else x
            if (not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating)
                    or x.ndim != 1 + len(trailing) or x.shape[1:] != trailing):
                bad(field, expected, describe(x))
                return
            if num_frames is not None and field != "audio" and x.shape[0] != num_frames:
                bad(field, f"{num_frames} rows (one per frame), shape {expected}", describe(x))
                return
            if not np.all(np.isfinite(x)):
                bad(field, f"finite values ({expected})", "NaN or inf")
                return
            setattr(self, field, x.astype(np.float32, copy=False))

        num_frames = None
        f = self.frames
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 4 and f.shape[-1] == 3
                and min(f.shape) > 0):
            bad("frames", "uint8 array of shape (F, H, W, 3) with F, H, W > 0", describe(f))
        else:
            num_frames = f.shape[0]
        fps_ok = isinstance(self.fps, (int, float, np.integer, np.floating)) and float(self.fps) > 0
        if not fps_ok:
            bad("fps", "a positive number", repr(self.fps))
        if self.sample_rate != SAMPLE_RATE:
            bad("sample_rate", f"{SAMPLE_RATE} (resample audio with jaxtalk.data.media.load_audio)",
                repr(self.sample_rate))
        floats("audio", (), "float32 array of shape (S,), mono 16 kHz")
        floats("expression", (facs.EXPRESSION_DIM,), f"float32 array of shape (F, {facs.EXPRESSION_DIM})")
        floats("pose", (6,), "float32 array of shape (F, 6)")
        floats("head_kps", (NUM_HEAD_KPS, 2), f"float32 array of shape (F, {NUM_HEAD_KPS}, 2) in pixels")
        floats("controls", (facs.NUM_CONTROLS,), f"None or float32 array of shape (F, {facs.NUM_CONTROLS})", True)
        floats("action_units", (len(facs.AU_NAMES),), f"None or float32 array of shape (F, {len(facs.AU_NAMES)})",
               True)
        if self.phonemes is not None:
            p = self.phonemes
            if not (isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.integer) and p.ndim == 1
                    and (num_frames is None or p.shape[0] == num_frames)):
                bad("phonemes", "None or integer array of shape (F,)", describe(p))
            else:
                self.phonemes = p.astype(np.int32, copy=False)
        if num_frames is not None and fps_ok and "audio" not in bad_fields:
            expected = num_frames / float(self.fps) * SAMPLE_RATE
            if abs(self.audio.shape[0] - expected) > SAMPLE_RATE / float(self.fps):
                bad("audio", f"about {round(expected)} samples ({num_frames} frames at {float(self.fps):g} fps, "
                    f"16 kHz)", f"{self.audio.shape[0]} samples")
        if not isinstance(self.identity, str) or not self.identity:
            bad("identity", "a non-empty string", repr(self.identity))
        if self.emotion not in facs.EMOTIONS:
            bad("emotion", f"one of {', '.join(facs.EMOTIONS)}", repr(self.emotion))
        elif self.intensity not in ((1,) if self.emotion == "neutral" else facs.INTENSITIES):
            bad("intensity", "1 for neutral, 1, 2 or 3 otherwise", repr(self.intensity))
        if (not isinstance(self.emotion_texts, (list, tuple))
                or not all(isinstance(t, str) and t for t in self.emotion_texts)):
            bad("emotion_texts", "a list of non-empty strings", repr(self.emotion_texts)[:80])
        else:
            self.emotion_texts = list(self.emotion_texts)
        if not isinstance(self.clip_id, str):
            bad("clip_id", "a string", repr(self.clip_id))
        if problems:
            name = f"ClipRecord {self.clip_id!r}" if isinstance(self.clip_id, str) and self.clip_id else "ClipRecord"
            raise RecordError(f"{name}: " + "; ".join(problems))

    @classmethod
    def from_synthetic(cls, clip, clip_id: str = "") -> ClipRecord:
        """Record of a `synthetic.SyntheticClip` (which must have been rendered)."""
        return cls(frames=clip.frames, audio=clip.audio, expression=clip.expression, pose=clip.pose,
                   head_kps=clip.head_kps, identity=clip.identity, emotion=clip.emotion, intensity=clip.intensity,
                   emotion_texts=list(clip.emotion_texts), fps=clip.fps, controls=clip.controls,
                   action_units=clip.action_units, phonemes=clip.phonemes, clip_id=clip_id)

    def index_entry(self, file: str) -> dict[str, Any]:
        return {"file": file, "clip_id": self.clip_id, "identity": self.identity, "emotion": self.emotion,
                "intensity": int(self.intensity), "num_frames": self.num_frames, "fps": float(self.fps),
                "height": self.height, "width": self.width, "num_samples": int(self.audio.shape[0])}


def write_record(path: str | os.PathLike, record: ClipRecord) -> Path:
    """Write one record as an uncompressed `.npz` (atomic)."""
    record.validate()
    arrays = {k: getattr(record, k) for k in _ARRAY_FIELDS if getattr(record, k) is not None}
    meta = {"identity": record.identity, "emotion": record.emotion, "intensity": int(record.intensity),
            "fps": float(record.fps), "clip_id": record.clip_id, "sample_rate": record.sample_rate,
            "emotion_texts": record.emotion_texts}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
    return path


def read_record(path: str | os.PathLike) -> ClipRecord:
    """Read and validate a record written by `write_record`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data.pop("meta")))
    except FileNotFoundError:
        raise RecordError(f"{path}: clip file not found; rebuild the dataset or fix {INDEX_NAME}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: not a readable clip record ({type(e).__name__}: {e}); "
                          "rewrite it with jaxtalk.data.records.write_record") from None
    try:
        return ClipRecord(**{k: data.get(k) for k in _ARRAY_FIELDS}, **meta)
    except TypeError as e:
        raise RecordError(f"{path}: unexpected record layout ({e})") from None


def write_index(directory: str | os.PathLike, entries: list[dict[str, Any]], attrs: dict | None = None) -> Path:
    """Write `index.json` for the clips in `directory` (atomic)."""
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "sample_rate": SAMPLE_RATE,
             "identities": sorted({e["identity"] for e in entries}), "attrs": attrs or {}, "clips": entries}
    return write_bytes_atomic(Path(directory) / INDEX_NAME, json.dumps(index, indent=1).encode())


def read_index(directory: str | os.PathLike) -> dict[str, Any]:
    """Load and check `index.json` of a dataset directory."""
    path = Path(directory) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no dataset index; create the dataset with write_dataset or "
                          "write_synthetic_dataset") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: unreadable dataset index ({e}); rewrite it with write_index") from None
    if index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
        raise RecordError(f"{path}: expected format {INDEX_FORMAT!r} version {INDEX_VERSION}, got "
                          f"{index.get('format')!r} version {index.get('version')!r}")
    keys = {"file", "identity", "emotion", "intensity", "num_frames", "fps", "height", "width", "num_samples"}
    for i, e in enumerate(index.get("clips", [])):
        if not keys <= set(e):
            raise RecordError(f"{path}: clip entry {i} lacks {sorted(keys - set(e))}")
    return index


def write_dataset(directory: str | os.PathLike, records: Iterable[ClipRecord], attrs: dict | None = None) -> Path:
    """Write records as `clip_00000.npz`, ... and the index; returns the index path."""
    directory = Path(directory)
    entries = []
    for i, record in enumerate(records):
        name = f"clip_{i:05d}.npz"
        if not record.clip_id:
            record.clip_id = f"clip_{i:05d}"
        write_record(directory / name, record)
        entries.append(record.index_entry(name))
    return write_index(directory, entries, attrs)


def synthetic_plan(num_identities: int, clips_per_identity: int, seed: int) -> list[tuple[int, str, int, int]]:
    """(identity index, emotion, intensity, clip seed) per clip: each identity cycles through MEAD's 22
    conditions in its own shuffled order."""
    conditions = facs.emotion_conditions()
    plan = []
    for i in range(num_identities):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, 0xC11]))
        order = rng.permutation(len(conditions))
        for j in range(clips_per_identity):
            emotion, intensity = conditions[order[j % len(conditions)]]
            plan.append((i, emotion, intensity, int(rng.integers(2**31))))
    return plan


def write_synthetic_dataset(directory: str | os.PathLike, num_identities: int, clips_per_identity: int,
                            seed: int = 0, resolution: int = 128, num_frames: int = 50,
                            fps: float = 25.0) -> Path:
    """Generate and write a synthetic dataset; returns the index path. Deterministic in its arguments."""
    from jaxtalk.data import synthetic  # local import: records stays usable without the renderer

    if num_identities < 1 or clips_per_identity < 1:
        raise ValueError(f"num_identities and clips_per_identity must be >= 1, got {num_identities}, "
                         f"{clips_per_identity}")
    identities = synthetic.make_identities(num_identities, seed)

    def records():
        for k, (i, emotion, intensity, clip_seed) in enumerate(synthetic_plan(num_identities, clips_per_identity,
                                                                              seed)):
            clip = synthetic.generate_clip(identities[i], emotion, intensity, clip_seed, num_frames=num_frames,
                                           fps=fps, resolution=resolution)
            yield ClipRecord.from_synthetic(clip, clip_id=f"{identities[i].name}_{emotion}_{intensity}_{k:05d}")

    attrs = {"generator": "jaxtalk.data.synthetic", "seed": seed, "num_identities": num_identities,
             "clips_per_identity": clips_per_identity, "resolution": resolution, "num_frames": num_frames,
             "fps": fps, "control_names": list(facs.CONTROL_NAMES), "au_names": list(facs.AU_NAMES)}
    return write_dataset(directory, records(), attrs)
