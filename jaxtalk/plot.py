"""`jaxtalk plot`: the pictures people look at instead of reading numbers, all in this module.

    jaxtalk plot losses RUN_DIR [RUN_DIR ...] --out losses.png         # curves from training runs' scalars
    jaxtalk plot tsne [--checkpoint CKPT] --out style_tsne.png          # SVP style space of synthetic clips
    jaxtalk plot strip ref.png generated.mp4 truth.mp4 --out strip.png  # reference | generated | ground truth
    jaxtalk plot interpolate --image face.png --audio speech.wav --style a.npz --style b.npz --out mix.png
    jaxtalk plot kps face.png kps.npy --out kps.png                    # keypoints / landmarks drawn on the photo

Every command writes its PNG atomically and prints its path. Figures are drawn with matplotlib's Agg backend;
the small Pillow helpers at the end (`Canvas`, `image_strip`) draw the bench and demo figures without a plotting
library (they lived in `jaxtalk.charts`, which still forwards them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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
    """Rows (`step` plus scalars) of a training run: its `metrics.jsonl`, or, where a run has none, its
    TensorBoard event files (`*tfevents*`, as `jaxtalk.training` and other JAX trainers write). `run` is a run
    folder or one of those files."""
    from jaxtalk.training import tensorboard

    path = Path(run)
    jsonl = path / "metrics.jsonl" if path.is_dir() else path
    if not jsonl.is_file() or tensorboard.EVENTS_MARKER in jsonl.name:
        events = tensorboard.event_files(path) if path.exists() else []
        if not events:
            raise FileNotFoundError(f"{run}: no metrics.jsonl and no TensorBoard event files (give a training run "
                                    "folder, its metrics.jsonl or an event file)")
        rows: dict[int, dict[str, float]] = {}
        for tag, points in tensorboard.read_scalars(path).items():
            for step, value in points:
                rows.setdefault(step, {"step": step})[tag] = value
        return [rows[k] for k in sorted(rows)]
    rows_list = []
    for k, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows_list.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{jsonl}:{k}: not a JSON line") from None
    if not rows_list or "step" not in rows_list[0]:
        raise ValueError(f"{jsonl}: no rows with a 'step' field")
    return rows_list


def smooth(y: Sequence[float], k: int) -> np.ndarray:
    """Running mean over `k` points (edges use the points they have)."""
    y = np.asarray(y, np.float64)
    if k <= 1 or len(y) < 2:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(len(y))
    lo = np.maximum(0, idx - k + 1)
    return (c[idx + 1] - c[lo]) / (idx + 1 - lo)


def _draw_curves(ax: Any, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
                 log_y: bool | None, smoothing: int) -> None:
    """Lines of (steps, values) on `ax`; `log_y=None` uses a log scale when every value is positive."""
    positive = True
    for label, (steps, values) in curves.items():
        pts = [(s, v) for s, v in zip(steps, values) if np.isfinite(v)]
        if pts:
            x, y = zip(*pts)
            positive &= min(y) > 0
            ax.plot(x, smooth(y, smoothing), label=label, linewidth=1.5)
    if log_y or (log_y is None and positive):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def loss_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
                title: str = "", log_y: bool = True, smoothing: int = 5) -> Path:
    """One chart of several named (steps, values) curves, smoothed by a running mean over `smoothing` points."""
    if not any(np.isfinite(v) and (v > 0 or not log_y) for _, y in curves.values() for v in y):
        raise ValueError(f"{path}: no finite values to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    _draw_curves(ax, curves, title, log_y, smoothing)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_losses(runs: Sequence[str | os.PathLike], out: str | os.PathLike, keys: Sequence[str] = (),
                smoothing: int = 1) -> Path:
    """One panel per loss key (default: every key with 'loss' in its name), one line per run (metrics.jsonl or
    TensorBoard event files), log scale when the values are positive."""
    plt = _pyplot()
    data = [(Path(r).name if Path(r).is_dir() else Path(r).parent.name, read_metrics(r)) for r in runs]
    names = list(keys) or sorted({k for _, rows in data for row in rows for k in row if "loss" in k})
    if not names:
        raise ValueError("no loss columns found; name them with --keys")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, key in zip(axes[0], names):
        curves = {label: ([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r])
                  for label, rows in data}
        _draw_curves(ax, curves, key, None, smoothing)
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
        for level in (1,) if e == "neutral" else facs.INTENSITIES:  # MEAD's neutral has one level
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
                           label=e if level == max(b for a, b in zip(emotions, intensities) if a == e) else None,
                           edgecolors="none")
    ax.legend(fontsize=7, loc="best", markerscale=0.8, title="lighter = lower intensity", title_fontsize=7)
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
                       seed: int = 0, kps: str | None = None, steps: int | None = None) -> Path:
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
                                  kps=kps, steps=steps, models=models, seed=seed, progress=False)
            videos.append(o["video"])
        return plot_strip(videos, out, labels=[f"mix {w:g}" for w in weights], frames=frames)


def plot_kps(image: str | os.PathLike, kps: str | os.PathLike | np.ndarray, out: str | os.PathLike) -> Path:
    """Points drawn over the photo: 8 head keypoints with V-Express's colours and limbs, any other count
    (e.g. 68 or 478 face landmarks from `jaxtalk prepare`) as dots. Points are in the photo's pixels; a
    (frames, N, 2) array draws its first frame."""
    from jaxtalk.data import media
    from jaxtalk.data.kps import draw_head_kps

    plt = _pyplot()
    img = media.load_image(image)
    points = _load_points(kps)
    points = points[0] if points.ndim == 3 else points
    overlay = img
    if points.shape[0] == 8:
        drawn = draw_head_kps(points, img.shape[:2])
        mask = drawn.max(axis=-1, keepdims=True) > 0
        overlay = np.where(mask, (0.25 * img + 0.75 * drawn).astype(np.uint8), img)
    fig, ax = plt.subplots(figsize=(4, 4 * img.shape[0] / img.shape[1]))
    ax.imshow(overlay)
    size = 8 if points.shape[0] <= 68 else 2
    ax.scatter(points[:, 0], points[:, 1], s=size, c="white", edgecolors="black", linewidths=0.4)
    ax.set_axis_off()
    return _save(fig, out)


def _load_points(kps: str | os.PathLike | np.ndarray) -> np.ndarray:
    """(N, 2) or (frames, N, 2) pixel points from an array or a .npy / .npz file (its first array, or `kps`)."""
    if isinstance(kps, str | os.PathLike):
        path = Path(kps)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: keypoint file not found")
        if path.suffix.lower() not in (".npy", ".npz"):
            raise ValueError(f"{path}: keypoints are read from .npy or .npz files")
        loaded = np.load(path)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                names = loaded.files
                if not names:
                    raise ValueError(f"{path}: the .npz holds no array")
                kps = loaded["kps" if "kps" in names else names[0]]
        else:
            kps = loaded
    points = np.asarray(kps, np.float32)
    if points.ndim not in (2, 3) or points.shape[-1] < 2 or points.shape[-2] < 1:
        raise ValueError(f"keypoints: expected (N, 2) or (frames, N, 2) pixel coordinates, got shape {points.shape}")
    return points[..., :2]


# ------------------------------------------------------------------------------------------------ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="plot", required=True)
    q = sub.add_parser("losses", help="loss curves from training runs (metrics.jsonl or TensorBoard event files)")
    q.add_argument("runs", nargs="+", help="run folders (or their metrics.jsonl / event files)")
    q.add_argument("--keys", nargs="*", default=[], help="columns to plot (default: every *loss* column)")
    q.add_argument("--smooth", type=int, default=1, help="running mean over this many logged points")
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
    q.add_argument("--kps", help="head keypoints (.npy / .npz) as for jaxtalk generate")
    q.add_argument("--steps", type=int, help="sampler steps (default: the config's)")
    q.add_argument("--frames", type=int, default=4, help="moments shown per video")
    q.add_argument("--checkpoint")
    q.add_argument("--config")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default="style_interpolation.png")
    q = sub.add_parser("kps", help="head keypoints or face landmarks drawn on a photo")
    q.add_argument("image")
    q.add_argument("kps", help=".npy / .npz points (N, 2) in the photo's pixels (8: head keypoints)")
    q.add_argument("--out", default="kps.png")


def run(args: argparse.Namespace) -> int:
    if args.plot == "losses":
        path = plot_losses(args.runs, args.out, args.keys, args.smooth)
    elif args.plot == "tsne":
        from jaxtalk.svp.pipeline import resolve_models

        models = resolve_models(args.checkpoint, config=args.config, devices=1)
        points, emotions, levels = style_points(models, seed=args.seed, clips_per_cell=args.clips)
        path = plot_style_tsne(points, emotions, levels, args.out, seed=args.seed,
                               title="SVP style space (t-SNE), " + (f"checkpoint {Path(args.checkpoint).name}"
                                                                    if args.checkpoint else "shipped weights"))
    elif args.plot == "strip":
        path = plot_strip(args.inputs, args.out, labels=args.labels, frames=args.frames)
    elif args.plot == "interpolate":
        path = plot_interpolation(args.image, args.audio, args.style, args.out, weights=args.weights,
                                  checkpoint=args.checkpoint, config=args.config, seed=args.seed, kps=args.kps,
                                  steps=args.steps, frames=args.frames)
    else:
        path = plot_kps(args.image, args.kps, args.out)
    print(f"{args.plot}: {path}")
    return 0


# ------------------------------------------------------------------------------------------------ Pillow figures
# (no plotting library: the bench and demo figures)

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


class Canvas:
    """A plot area with data -> pixel mapping, axes, ticks and a legend."""

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float], title: str = "", size=(640, 400),
                 xlabel: str = "", ylabel: str = "", log_y: bool = False):
        self.img = Image.new("RGB", size, "white")
        self.draw = ImageDraw.Draw(self.img)
        self.box = (60, 30, size[0] - 20, size[1] - 45)
        self.log_y = log_y
        f = (lambda v: math.log10(max(v, 1e-12))) if log_y else float
        self.xlim, self.ylim = xlim, (f(ylim[0]), f(ylim[1]))
        if self.ylim[1] <= self.ylim[0]:
            self.ylim = (self.ylim[0] - 0.5, self.ylim[0] + 0.5)
        if self.xlim[1] <= self.xlim[0]:
            self.xlim = (self.xlim[0] - 0.5, self.xlim[0] + 0.5)
        x0, y0, x1, y1 = self.box
        self.draw.rectangle(self.box, outline="black")
        self.draw.text((x0, 8), title, fill="black")
        self.draw.text(((x0 + x1) // 2 - 3 * len(xlabel), size[1] - 18), xlabel, fill="black")
        self.draw.text((4, 8), ylabel, fill="black")
        for t in _ticks(*self.xlim):
            px = self.px(t, self.ylim[0], raw_y=True)[0]
            self.draw.line([(px, y1), (px, y1 + 4)], fill="black")
            self.draw.text((px - 12, y1 + 6), f"{t:g}", fill="black")
        for t in _ticks(*self.ylim):
            py = self.px(self.xlim[0], t, raw_y=True)[1]
            self.draw.line([(x0 - 4, py), (x0, py)], fill="black")
            label = f"{10 ** t:.3g}" if log_y else f"{t:.3g}"
            self.draw.text((4, py - 6), label, fill="black")
        self.legend: list[tuple[str, tuple[int, int, int]]] = []

    def px(self, x: float, y: float, raw_y: bool = False) -> tuple[float, float]:
        if self.log_y and not raw_y:
            y = math.log10(max(y, 1e-12))
        x0, y0, x1, y1 = self.box
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    def line(self, x: Sequence[float], y: Sequence[float], colour, label: str = "") -> None:
        pts = [self.px(a, b) for a, b in zip(x, y) if np.isfinite(b)]
        if len(pts) > 1:
            self.draw.line(pts, fill=colour, width=2)
        if label:
            self.legend.append((label, colour))

    def points(self, x: Sequence[float], y: Sequence[float], colours: Sequence, radius: int = 3) -> None:
        for a, b, c in zip(x, y, colours):
            px, py = self.px(a, b)
            self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=tuple(c))

    def save(self, path: str | Path) -> Path:
        x1, y0 = self.box[2], self.box[1]
        for i, (label, colour) in enumerate(self.legend):
            y = y0 + 6 + 14 * i
            self.draw.rectangle([x1 - 150, y, x1 - 140, y + 10], fill=colour)
            self.draw.text((x1 - 135, y - 1), label, fill="black")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.png")
        self.img.save(tmp)
        tmp.replace(path)
        return path


def image_strip(rows: Sequence[tuple[str, np.ndarray]], path: str | Path, scale: int = 2,
                label_width: int = 110) -> Path:
    """A PNG grid: one labelled row per (label, frames (N, H, W, 3) uint8), frames side by side, upscaled."""
    if not rows:
        raise ValueError("image_strip: no rows")
    h, w = (np.asarray(rows[0][1]).shape[-3:-1])
    n = max(len(np.asarray(f).reshape(-1, h, w, 3)) for _, f in rows)
    cell_h, cell_w = h * scale, w * scale
    img = Image.new("RGB", (label_width + n * (cell_w + 2), len(rows) * (cell_h + 4)), "white")
    draw = ImageDraw.Draw(img)
    for r, (label, frames) in enumerate(rows):
        frames = np.asarray(frames, np.uint8).reshape(-1, h, w, 3)
        y = r * (cell_h + 4)
        draw.text((4, y + cell_h // 2 - 6), label, fill="black")
        for c, frame in enumerate(frames):
            tile = Image.fromarray(frame).resize((cell_w, cell_h), Image.NEAREST)
            img.paste(tile, (label_width + c * (cell_w + 2), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    img.save(tmp)
    tmp.replace(path)
    return path
