"""A deterministic family of art styles for synthetic frames: the extrinsic style domain Style-A learns.

The paper's art styles come from DualStyleGAN exemplars (cartoon, caricature, ...), which need pretrained
StyleGANs that jaxtalk does not ship. Here the "style domain" is a parameterised image filter, so the extrinsic
style code has something real and checkable to learn:

- `photo`: the frame itself (the reconstruction setting, style degree irrelevant);
- `cartoon`: smoothed colours quantised to a few levels per channel, with dark outlines where luminance edges are;
- `posterise`: hard colour quantisation with boosted saturation (flat poster areas);
- `ink`: a sepia ink drawing: luminance edges and shadows in ink colour on paper;
- `pop`: hue-rotated, saturated, two-level colours (a pop-art print).

`stylise(frames, name, degree)` blends the filtered frames with the originals by the style degree d_s (the
VToonify-D style degree), which is also the training target Style-A learns for that degree. Everything is numpy
and a pure function of its inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArtStyle:
    """One member of the filter family (see the module docstring); unused fields are ignored by its kind."""

    name: str
    kind: str  # photo | cartoon | posterise | ink | pop
    levels: int = 4
    edge: float = 0.12  # luminance-gradient threshold of outlines
    saturation: float = 1.0
    hue_shift: float = 0.0  # fraction of a turn
    ink: tuple[float, float, float] = (0.12, 0.08, 0.05)
    paper: tuple[float, float, float] = (0.96, 0.9, 0.78)


STYLES: tuple[ArtStyle, ...] = (
    ArtStyle("photo", "photo"),
    ArtStyle("cartoon", "cartoon", levels=5, edge=0.10, saturation=1.3),
    ArtStyle("posterise", "posterise", levels=3, saturation=1.8),
    ArtStyle("ink", "ink", edge=0.07),
    ArtStyle("pop", "pop", levels=2, saturation=2.0, hue_shift=0.45),
)
STYLE_NAMES: tuple[str, ...] = tuple(s.name for s in STYLES)


def style_index(name: str) -> int:
    """Index of a style name in `STYLES`."""
    if name not in STYLE_NAMES:
        raise ValueError(f"unknown art style {name!r}; choose one of {', '.join(STYLE_NAMES)}")
    return STYLE_NAMES.index(name)


def _luminance(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def _blur(x: np.ndarray) -> np.ndarray:
    """3x3 binomial blur over the two image axes (edge padding)."""
    k = np.array([0.25, 0.5, 0.25], np.float32)
    pad = [(0, 0)] * x.ndim
    pad[-3], pad[-2] = (1, 1), (1, 1)
    p = np.pad(x, pad, mode="edge")
    h = x.shape[-3]
    w = x.shape[-2]
    y = k[0] * p[..., :h, :, :] + k[1] * p[..., 1:h + 1, :, :] + k[2] * p[..., 2:h + 2, :, :]
    return k[0] * y[..., :w, :] + k[1] * y[..., 1:w + 1, :] + k[2] * y[..., 2:w + 2, :]


def _edges(lum: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a luminance image (..., H, W) by central differences."""
    p = np.pad(lum, [(0, 0)] * (lum.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    gx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    gy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    return np.sqrt(gx * gx + gy * gy)


def _saturate(x: np.ndarray, amount: float) -> np.ndarray:
    lum = _luminance(x)[..., None]
    return np.clip(lum + amount * (x - lum), 0.0, 1.0)


def _quantise(x: np.ndarray, levels: int) -> np.ndarray:
    return np.round(x * (levels - 1)) / (levels - 1)


def _rotate_hue(x: np.ndarray, turns: float) -> np.ndarray:
    """Rotation about the grey axis in RGB (a hue shift that keeps luminance roughly)."""
    a = 2.0 * np.pi * turns
    c, s = np.cos(a), np.sin(a)
    k = 1.0 / 3.0
    sq = np.sqrt(k)
    m = np.array([[c + (1 - c) * k, k * (1 - c) - sq * s, k * (1 - c) + sq * s],
                  [k * (1 - c) + sq * s, c + k * (1 - c), k * (1 - c) - sq * s],
                  [k * (1 - c) - sq * s, k * (1 - c) + sq * s, c + k * (1 - c)]], np.float32)
    return np.clip(x @ m.T, 0.0, 1.0)


def apply_style(frames: np.ndarray, style: ArtStyle) -> np.ndarray:
    """The filtered frames (..., H, W, 3) float32 in [0, 1] at full strength."""
    x = np.asarray(frames, np.float32)
    if style.kind == "photo":
        return x
    if style.kind == "cartoon":
        smooth = _blur(_blur(x))
        flat = _quantise(_saturate(smooth, style.saturation), style.levels)
        lines = (_edges(_luminance(smooth)) > style.edge)[..., None]
        return np.where(lines, 0.08, flat).astype(np.float32)
    if style.kind == "posterise":
        return _quantise(_saturate(_blur(x), style.saturation), style.levels).astype(np.float32)
    if style.kind == "ink":
        lum = _luminance(_blur(x))
        strokes = np.clip((_edges(lum) - 0.5 * style.edge) / style.edge, 0.0, 1.0)
        shade = np.clip((0.35 - lum) / 0.2, 0.0, 1.0) * 0.7
        amount = np.maximum(strokes, shade)[..., None]
        ink, paper = np.asarray(style.ink, np.float32), np.asarray(style.paper, np.float32)
        return (paper + amount * (ink - paper)).astype(np.float32)
    if style.kind == "pop":
        return _quantise(_saturate(_rotate_hue(_blur(x), style.hue_shift), style.saturation),
                         style.levels).astype(np.float32)
    raise ValueError(f"art style {style.name!r}: unknown kind {style.kind!r}")


def stylise(frames: np.ndarray, name: str | int, degree: float | np.ndarray = 1.0) -> np.ndarray:
    """uint8 or [0, 1] float frames (..., H, W, 3) -> float32 [0, 1]: (1 - d) * frame + d * filter(frame)."""
    style = STYLES[name] if isinstance(name, (int, np.integer)) else STYLES[style_index(name)]
    x = np.asarray(frames)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    d = np.asarray(degree, np.float32)
    if d.ndim:
        d = d.reshape(d.shape + (1,) * (x.ndim - d.ndim))
    return (1.0 - d) * x + d * apply_style(x, style)


def style_statistics(frames: np.ndarray) -> np.ndarray:
    """A style descriptor of frames (..., H, W, 3) in [0, 1]: per-channel mean and std, mean edge strength and
    the fraction of distinct colour levels (a Gram-free summary used for art-style strength)."""
    x = np.asarray(frames, np.float32)
    axes = (-3, -2)
    lum = _luminance(x)
    flat = np.mean(np.abs(x - _blur(x)), axis=(-3, -2, -1))
    return np.concatenate([x.mean(axes), x.std(axes), _edges(lum).mean((-2, -1))[..., None], flat[..., None]],
                          axis=-1)
