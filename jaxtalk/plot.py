"""`jaxtalk plot`: the pictures people look at instead of reading numbers (PNG files, matplotlib's Agg backend).

    jaxtalk plot losses RUN_DIR [RUN_DIR ...] --out losses.png         # curves from training runs' metrics.jsonl
    jaxtalk plot tsne [--checkpoint CKPT] --out style_tsne.png          # SVP style space of synthetic clips
    jaxtalk plot strip ref.png generated.mp4 truth.mp4 --out strip.png  # reference | generated | ground truth
    jaxtalk plot interpolate --image face.png --audio speech.wav --style a.npz --style b.npz --out mix.png
    jaxtalk plot kps face.png kps.npy --out kps.png                    # head keypoints drawn on the photo

Every command writes its PNG atomically and prints its path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EMOTION_COLOURS = {"neutral": "#7f7f7f", "angry": "#d62728", "contempt": "#8c564b", "disgusted": "#2ca02c",
                   "fear": "#9467bd", "happy": "#ff7f0e", "sad": "#1f77b4", "surprised": "#e377c2"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: str | os.PathLike) -> Path:
    from jaxtalk.data.atomic import atomic_path

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: plots are written as .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return out


# ------------------------------------------------------------------------------------------------ losses


def read_metrics(run: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a run's `metrics.jsonl` (a run folder or the file itself)."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no metrics.jsonl (give a training run folder or its metrics.jsonl)")
    rows = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{k}: not a JSON line") from None
    if not rows or "step" not in rows[0]:
        raise ValueError(f"{path}: no rows with a 'step' field")
    return rows


def plot_losses(runs: Sequence[str | os.PathLike], out: str | os.PathLike, keys: Sequence[str] = ()) -> Path:
    """One panel per loss key (default: every key with 'loss' in its name), one line per run, log scale when
    the values are positive."""
    plt = _pyplot()
    data = [(Path(r).name if Path(r).is_dir() else Path(r).parent.name, read_metrics(r)) for r in runs]
    names = list(keys) or sorted({k for _, rows in data for k in rows[0] if "loss" in k})
    if not names:
        raise ValueError("no loss columns found; name them with --keys")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, key in zip(axes[0], names):
        positive = True
        for label, rows in data:
            pts = [(r["step"], r[key]) for r in rows if key in r and np.isfinite(r[key])]
            if pts:
                steps, values = zip(*pts)
                positive &= min(values) > 0
                ax.plot(steps, values, label=label, linewidth=1.5)
        if positive:
            ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


# ------------------------------------------------------------------------------------------------ style space


def style_points(models: Any, *, seed: int = 0, clips_per_cell: int = 3, num_frames: int = 64,
                 emotions: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], list[int]]:
    """SVP style priors (mu, flattened) of synthetic clips: every emotion x intensity, `clips_per_cell` clips of
    identities from `seed` (expression + audio through the model's style extractor)."""
    from jaxtalk.data import facs, synthetic

    points, labels, levels = [], [], []
    for e in emotions or facs.EMOTIONS:
        for level in facs.INTENSITIES:
            for k in range(clips_per_cell):
                clip = synthetic.generate_clip(synthetic.make_identity(seed, k), e, level, seed=seed + 31 * k + level,
                                               num_frames=num_frames, fps=25.0, resolution=64, render_video=False)
                prior = models.style_prior(clip.expression, clip.audio, clip.fps)
                points.append(np.asarray(prior.mu, np.float32).reshape(-1))
                labels.append(e)
                levels.append(level)
    return np.stack(points), labels, levels


def plot_style_tsne(points: np.ndarray, emotions: Sequence[str], intensities: Sequence[int],
                    out: str | os.PathLike, *, seed: int = 0, title: str = "style space (t-SNE)") -> Path:
    """2-D t-SNE of style vectors: colour = emotion, shade = intensity (light 1 .. full 3)."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[0] < 4:
        raise ValueError(f"t-SNE needs at least 4 style vectors (N, D), got {points.shape}")
    xy = TSNE(n_components=2, perplexity=min(30.0, (points.shape[0] - 1) / 3), random_state=seed, init="pca",
              method="exact" if points.shape[0] <= 300 else "barnes_hut").fit_transform(points)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for e in dict.fromkeys(emotions):
        for level in sorted(set(intensities)):
            idx = [i for i, (a, b) in enumerate(zip(emotions, intensities)) if a == e and b == level]
            if idx:
                ax.scatter(xy[idx, 0], xy[idx, 1], color=EMOTION_COLOURS.get(e, "#000000"),
                           alpha=0.35 + 0.65 * (level - 1) / 2, s=18 + 10 * level,
                           label=e if level == max(intensities) else None, edgecolors="none")
    ax.legend(fontsize=7, loc="best", markerscale=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, out)


# ------------------------------------------------------------------------------------------------ strips


def _frames_of(path: str | os.PathLike, count: int) -> np.ndarray:
    """`count` evenly spaced frames (count, H, W, 3) of a video, or an image repeated."""
    from jaxtalk.data import media

    p = Path(path)
    if p.suffix.lower() in (".mp4", ".mov", ".webm", ".mkv", ".avi"):
        if not p.is_file():
            raise media.MediaError(f"{p}: video file not found; check the path")
        frames, _ = media.read_video_frames(p)
        idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
        return frames[idx]
    image = media.load_image(p)
    return np.repeat(image[None], count, axis=0)


def plot_strip(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, labels: Sequence[str] = (),
               frames: int = 5, size: int = 128) -> Path:
    """Columns = inputs (images or videos, e.g. reference | generated | ground truth), rows = evenly spaced
    moments of each video (an image repeats); every tile resized to `size`."""
    from PIL import Image

    plt = _pyplot()
    labels = list(labels) or [Path(p).stem for p in inputs]
    if len(labels) != len(inputs):
        raise ValueError(f"{len(labels)} labels for {len(inputs)} inputs")
    cols = [np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC))
                      for f in _frames_of(p, frames)]) for p in inputs]
    fig, axes = plt.subplots(frames, len(cols), figsize=(1.6 * len(cols), 1.6 * frames), squeeze=False)
    for c, (col, label) in enumerate(zip(cols, labels)):
        for r in range(frames):
            ax = axes[r][c]
            ax.imshow(col[r])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=9)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return _save(fig, out)


def plot_interpolation(image: str, audio: str, styles: Sequence[str], out: str | os.PathLike, *,
                       weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), frames: int = 4,
                       checkpoint: str | None = None, config: str | None = None, overrides: Sequence[str] = (),
                       seed: int = 0) -> Path:
    """SVP videos for one photo and speech with the style mixed from `styles[0]` to `styles[1]` (the library
    `generate()`, weights loaded once); columns = mix weights, rows = moments of each video."""
    import tempfile

    from jaxtalk.svp import pipeline

    if len(styles) != 2:
        raise ValueError("--style: give two style files to interpolate between")
    models = pipeline.resolve_models(checkpoint, config=config, overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="jaxtalk-plot-") as tmp:
        videos = []
        for w in weights:
            o = pipeline.generate(image, audio, Path(tmp) / f"mix_{w:.2f}.mp4", style=list(styles), style_mix=w,
                                  models=models, seed=seed, progress=False)
            videos.append(o["video"])
        return plot_strip(videos, out, labels=[f"mix {w:g}" for w in weights], frames=frames)


def plot_kps(image: str | os.PathLike, kps: str | os.PathLike | np.ndarray, out: str | os.PathLike) -> Path:
    """Head keypoints (8 points, V-Express colours and limbs) drawn over the photo."""
    from jaxtalk.data import media
    from jaxtalk.data.kps import draw_head_kps
    from jaxtalk.svp.pipeline import check_kps, load_kps

    plt = _pyplot()
    img = media.load_image(image)
    points = load_kps(kps) if isinstance(kps, str | os.PathLike) else check_kps(kps)
    points = points[0] if points.ndim == 3 else points
    if points.shape[0] != 8:
        raise ValueError(f"kps: 8 head keypoints expected, got {points.shape[0]}")
    drawn = draw_head_kps(points, img.shape[:2])
    mask = drawn.max(axis=-1, keepdims=True) > 0
    overlay = np.where(mask, (0.25 * img + 0.75 * drawn).astype(np.uint8), img)
    fig, ax = plt.subplots(figsize=(4, 4 * img.shape[0] / img.shape[1]))
    ax.imshow(overlay)
    ax.scatter(points[:, 0], points[:, 1], s=8, c="white", edgecolors="black", linewidths=0.5)
    ax.set_axis_off()
    return _save(fig, out)


# ------------------------------------------------------------------------------------------------ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="plot", required=True)
    q = sub.add_parser("losses", help="loss curves from training runs (metrics.jsonl)")
    q.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    q.add_argument("--keys", nargs="*", default=[], help="columns to plot (default: every *loss* column)")
    q.add_argument("--out", default="losses.png")
    q = sub.add_parser("tsne", help="t-SNE of the SVP style space of synthetic clips (colour emotion, shade "
                       "intensity)")
    q.add_argument("--checkpoint", help="SVP checkpoint folder (default: generate()'s default weights)")
    q.add_argument("--config", help="SVP preset or YAML")
    q.add_argument("--clips", type=int, default=3, help="clips per emotion x intensity")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default="style_tsne.png")
    q = sub.add_parser("strip", help="side-by-side frames of images / videos (reference | generated | truth)")
    q.add_argument("inputs", nargs="+")
    q.add_argument("--labels", nargs="*", default=[])
    q.add_argument("--frames", type=int, default=5)
    q.add_argument("--out", default="strip.png")
    q = sub.add_parser("interpolate", help="SVP videos with the style mixed between two style files")
    q.add_argument("--image", required=True)
    q.add_argument("--audio", required=True)
    q.add_argument("--style", action="append", required=True)
    q.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    q.add_argument("--checkpoint")
    q.add_argument("--config")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default="style_interpolation.png")
    q = sub.add_parser("kps", help="head keypoints drawn on a photo")
    q.add_argument("image")
    q.add_argument("kps", help=".npy / .npz keypoints in the photo's pixels")
    q.add_argument("--out", default="kps.png")


def run(args: argparse.Namespace) -> int:
    if args.plot == "losses":
        path = plot_losses(args.runs, args.out, args.keys)
    elif args.plot == "tsne":
        from jaxtalk.svp.pipeline import resolve_models

        models = resolve_models(args.checkpoint, config=args.config, devices=1)
        points, emotions, levels = style_points(models, seed=args.seed, clips_per_cell=args.clips)
        path = plot_style_tsne(points, emotions, levels, args.out, seed=args.seed,
                               title=f"SVP style space (t-SNE), {models.source}")
    elif args.plot == "strip":
        path = plot_strip(args.inputs, args.out, labels=args.labels, frames=args.frames)
    elif args.plot == "interpolate":
        path = plot_interpolation(args.image, args.audio, args.style, args.out, weights=args.weights,
                                  checkpoint=args.checkpoint, config=args.config, seed=args.seed)
    else:
        path = plot_kps(args.image, args.kps, args.out)
    print(f"{args.plot}: {path}")
    return 0
