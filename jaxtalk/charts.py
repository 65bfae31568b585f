"""Small PNG charts and image strips drawn with Pillow (loss curves, scatter plots) for the training record and
the fidelity benches: no plotting library needed at run time (`jaxtalk.plot` is the matplotlib CLI)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


def smooth(y: Sequence[float], k: int) -> np.ndarray:
    """Running mean over `k` points (edges use the points they have)."""
    y = np.asarray(y, np.float64)
    if k <= 1 or len(y) < 2:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(len(y))
    lo = np.maximum(0, idx - k + 1)
    return (c[idx + 1] - c[lo]) / (idx + 1 - lo)


def loss_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "",
                log_y: bool = True, smoothing: int = 5) -> Path:
    """One chart of several (steps, values) curves, smoothed by a running mean."""
    ys = [v for _, y in curves.values() for v in y if np.isfinite(v) and (v > 0 or not log_y)]
    xs = [v for x, _ in curves.values() for v in x]
    if not ys:
        raise ValueError(f"{path}: no finite values to plot")
    canvas = Canvas((min(xs), max(xs)), (min(ys), max(ys)), title, xlabel="step", log_y=log_y)
    for i, (name, (x, y)) in enumerate(curves.items()):
        canvas.line(x, smooth(y, smoothing), PALETTE[i % len(PALETTE)], name)
    return canvas.save(path)


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
