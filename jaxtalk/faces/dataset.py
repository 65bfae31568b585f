"""`jaxtalk prepare-dataset`: a folder of real talking-head videos -> the project's clip records
(`jaxtalk.data.records`: one `.npz` per clip + `index.json`), the schema the synthetic generator writes and
`jaxtalk.data.pipeline` / the trainers read.

Layouts recognised per video (relative to the folder):
- MEAD: `M003/video/front/angry/level_2/001.mp4` -> identity M003, emotion angry, intensity 2 (only the front
  view is used when several views exist);
- HDTF: `WDA_BarackObama_000.mp4` (RD_ / WDA_ / WRA_ prefix) -> identity WDA_BarackObama, neutral;
- anything else: identity = the first folder under the root (or the file stem at the top level), neutral.

Per video: all frames and the sound (16 kHz mono) are read; the face is tracked (`jaxtalk.faces.track_faces`);
the video is skipped, and listed with the reason in `prepare_report.json`, when a frame has no face, a second
person appears, or the face jumps (a cut); otherwise one fixed square crop around the median face box (the SVP
crop rule) is resized to `size`, with the Head-Kps track and head pose in crop pixels. 3DMM expression
coefficients come from the files the user supplies (`--coeffs DIR`: Deep3DFaceRecon output as StyleTalk uses it,
`<relative path without suffix>.mat` with `coeff` (F, 257), expression = columns 80:144, or a `.npy` of (F, 64)
or (F, 257)); `--zero-expression` writes zeros instead (for SVP-only training). Clips already written with the
same crop size and expression source are kept (resumable; records are written atomically, so an interrupted run
leaves no half clip); the index is rebuilt from every clip at the end. `workers` > 1 runs videos in that many
processes (spawned, each with its own JAX client) under one progress bar.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxtalk.data import facs, media, records
from jaxtalk.faces import analysis as fa
from jaxtalk.faces import geometry as geo
from jaxtalk.faces.prepare import has_audio_stream

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
REPORT_NAME = "prepare_report.json"
MAX_MISSING_FACE = 0.0  # fraction of frames allowed without a face (0: any such frame skips the video)
MAX_SECOND_FACE = 0.1  # fraction of frames allowed to show a second face
MIN_SECOND_FACE_FRAMES = 3  # fewer frames with a second detection are detector blips, not a person
CUT_JUMP = 0.35  # a face-centre jump between frames above this fraction of the face size is a cut
_HDTF = re.compile(r"^((?:RD|WDA|WRA)_.+)_\d+$")


@dataclasses.dataclass(frozen=True)
class VideoItem:
    path: str
    relative: str
    identity: str
    emotion: str
    intensity: int
    clip_id: str


def find_videos(root: str | os.PathLike) -> list[VideoItem]:
    """Every video under `root` with its labels (see module docstring), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    items = []
    for p in paths:
        rel = p.relative_to(root)
        parts = [s.lower() for s in rel.parts]
        level = next((s for s in parts if re.fullmatch(r"level_\d", s)), None)
        emotion = next((s for s in parts if s in facs.EMOTIONS), None)
        if level is not None and emotion is not None and "video" in parts:
            if any(v in parts for v in ("left_30", "left_60", "right_30", "right_60", "top", "down")):
                continue  # MEAD side views: the front view only
            identity, intensity = rel.parts[0], int(level[-1])
            if emotion == "neutral":
                intensity = 1
        elif _HDTF.match(p.stem):
            identity, emotion, intensity = _HDTF.match(p.stem).group(1), "neutral", 1
        else:
            identity = rel.parts[0] if len(rel.parts) > 1 else p.stem
            emotion, intensity = "neutral", 1
        clip_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(rel.with_suffix("")))
        items.append(VideoItem(str(p), str(rel), identity, emotion, intensity, clip_id))
    return items


def coefficient_file(coeffs: Path, item: VideoItem) -> Path | None:
    stem = Path(item.relative).with_suffix("")
    for cand in (coeffs / stem.with_suffix(".mat"), coeffs / stem.with_suffix(".npy"),
                 coeffs / (Path(item.relative).stem + ".mat"), coeffs / (Path(item.relative).stem + ".npy")):
        if cand.is_file():
            return cand
    return None


def load_expression(path: Path) -> np.ndarray:
    """(F, 64) expression coefficients from a Deep3DFaceRecon / StyleTalk `.mat` (`coeff` (F, 257)) or `.npy`."""
    if path.suffix == ".mat":
        from scipy.io import loadmat

        coeff = np.asarray(loadmat(str(path)).get("coeff"))
    else:
        coeff = np.load(path, allow_pickle=False)
    coeff = np.asarray(coeff, np.float32)
    if coeff.ndim != 2 or coeff.shape[1] not in (facs.EXPRESSION_DIM, 257):
        raise ValueError(f"{path}: expected 'coeff' of shape (F, 257) or expression (F, 64), got {coeff.shape}")
    return coeff[:, 80:144] if coeff.shape[1] == 257 else coeff


def _skip_reason(track: fa.FaceTrack) -> str | None:
    n = len(track.found)
    missing = int((~track.found).sum())
    if missing > MAX_MISSING_FACE * n:
        return f"no face in {missing} of {n} frames"
    second = int((track.num_faces > 1).sum())
    if second > max(MAX_SECOND_FACE * n, MIN_SECOND_FACE_FRAMES - 1):
        return f"a second face in {second} of {n} frames"
    centres = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    sizes = np.maximum(track.boxes[:, 2] - track.boxes[:, 0], 1.0)
    jumps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / sizes[:-1]
    if len(jumps) and jumps.max() > CUT_JUMP:
        return f"a cut (the face jumps by {jumps.max():.2f} of its size at frame {int(jumps.argmax()) + 1})"
    return None


def process_video(item: VideoItem, out_dir: str, size: int, coeffs: str | None, min_score: float,
                  smooth: int) -> dict[str, Any]:
    """One video -> one record file; returns {'video', 'status': 'kept' | 'skipped', 'reason' | 'entry'}."""
    name = f"{item.clip_id}.npz"
    target = Path(out_dir) / name
    base = {"video": item.relative}
    if target.is_file():
        try:
            done = records.read_record(target)
            # a clip from an earlier run is kept only if it was made with the same crop size and expression source
            if done.frames.shape[1] == size and (coeffs is None) == (not done.expression.any()):
                return {**base, "status": "kept", "entry": done.index_entry(name), "resumed": True}
        except records.RecordError:
            pass
        target.unlink()
    try:
        expression = None
        if coeffs is not None:
            cfile = coefficient_file(Path(coeffs), item)
            if cfile is None:
                return {**base, "status": "skipped",
                        "reason": f"no 3DMM coefficient file {Path(item.relative).with_suffix('.mat')} in {coeffs}"}
            expression = load_expression(cfile)
        frames, fps = media.read_video_frames(item.path)
        if not has_audio_stream(item.path):
            return {**base, "status": "skipped", "reason": "no audio stream"}
        audio = media.load_audio(item.path)
        track = fa.track_faces(frames, min_score=min_score, face_index=0, smooth=smooth, what=item.relative)
    except (ValueError, OSError) as e:
        return {**base, "status": "skipped", "reason": str(e)}
    reason = _skip_reason(track)
    if reason is not None:
        return {**base, "status": "skipped", "reason": reason}
    n = len(frames)
    if expression is None:
        expression = np.zeros((n, facs.EXPRESSION_DIM), np.float32)
    elif abs(len(expression) - n) > 2:
        return {**base, "status": "skipped",
                "reason": f"coefficient file has {len(expression)} rows for {n} frames"}
    n = min(n, len(expression))
    M, _ = geo.face_crop_matrix(np.median(track.boxes, axis=0), size)
    crops = np.stack([geo.warp_affine(f, M, (size, size), border="edge") for f in frames[:n]])
    samples = int(round(n / fps * media.SAMPLE_RATE))
    audio = np.pad(audio[:samples], (0, max(0, samples - len(audio))))
    record = records.ClipRecord(
        frames=crops, audio=audio.astype(np.float32), expression=expression[:n].astype(np.float32),
        pose=track.pose[:n], head_kps=geo.apply_affine(M, track.head_kps[:n]), identity=item.identity,
        emotion=item.emotion, intensity=item.intensity, emotion_texts=facs.emotion_texts(item.emotion,
                                                                                         item.intensity),
        fps=float(fps), clip_id=item.clip_id)
    records.write_record(target, record)
    return {**base, "status": "kept", "entry": record.index_entry(name)}


def _worker(args: tuple) -> dict[str, Any]:
    return process_video(*args)


def _init_worker() -> None:
    """Each worker process runs its own JAX client: on a GPU it must not reserve most of the memory up front
    (JAX's default), or the second worker would find none left."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def prepare_dataset(video_dir: str | os.PathLike, out_dir: str | os.PathLike, size: int = 256,
                    coeffs: str | os.PathLike | None = None, zero_expression: bool = False, workers: int = 1,
                    min_score: float = 0.5, smooth: int = 5, progress: bool = True) -> dict[str, Any]:
    """Convert every video under `video_dir` (see module docstring); returns the report (also written as
    `prepare_report.json`), and writes `index.json` for the kept clips."""
    from tqdm import tqdm

    items = find_videos(video_dir)
    if not items:
        raise FileNotFoundError(f"{video_dir}: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) found")
    if coeffs is None and not zero_expression:
        raise ValueError("3DMM expression coefficients are missing: pass --coeffs DIR with one Deep3DFaceRecon "
                         "file per video (<video path>.mat with 'coeff' (F, 257), as StyleTalk uses), or "
                         "--zero-expression to write zeros (fine for SVP, not for Style2Talker training)")
    if coeffs is not None and not Path(coeffs).is_dir():
        raise FileNotFoundError(f"--coeffs {coeffs}: folder not found")
    if size < 32:
        raise ValueError(f"--size {size}: crops must be at least 32 pixels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(item, str(out), size, str(coeffs) if coeffs is not None else None, min_score, smooth) for item in items]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="videos", disable=not progress, unit="video")
    if workers <= 1:
        for job in jobs:
            results.append(_worker(job))
            bar.update()
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap_unordered(_worker, jobs):
                results.append(r)
                bar.update()
    bar.close()
    results.sort(key=lambda r: r["video"])
    kept = [r for r in results if r["status"] == "kept"]
    skipped = [{"video": r["video"], "reason": r["reason"]} for r in results if r["status"] == "skipped"]
    for r in skipped:  # a video that is skipped now leaves no stale record behind
        stale = out / f"{next(i.clip_id for i in items if i.relative == r['video'])}.npz"
        if stale.is_file():
            stale.unlink()
    attrs = {"generator": "jaxtalk.faces.dataset", "source": str(video_dir), "size": size,
             "expression": "zeros" if coeffs is None else f"3DMM coefficients from {coeffs}"}
    records.write_index(out, [r["entry"] for r in kept], attrs)
    report = {"videos": len(items), "kept": [r["video"] for r in kept], "skipped": skipped,
              "resumed": sum(1 for r in kept if r.get("resumed"))}
    (out / REPORT_NAME).write_text(json.dumps(report, indent=1))
    return report
