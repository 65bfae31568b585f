"""The embedded demo: a few synthetic clips written as one mp4 with sound and a PNG contact sheet.

Used by `jaxtalk demo` (jaxtalk/cli.py). No downloads; plots are drawn with Pillow.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxtalk.data import facs, media, synthetic
from jaxtalk.data.atomic import write_bytes_atomic
from jaxtalk.data.kps import draw_head_kps

_CURVE_COLOURS = [(230, 80, 60), (60, 140, 230), (70, 180, 90), (200, 150, 40), (150, 80, 200), (40, 180, 180)]
_THUMBS = 6
_NUM_FRAMES = 50
_FPS = 25.0


def frame_energy(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int = media.SAMPLE_RATE
                 ) -> np.ndarray:
    """RMS of the audio within each video frame, (num_frames,) float32."""
    hop = sample_rate / fps
    out = np.zeros(num_frames, np.float32)
    for f in range(num_frames):
        seg = audio[int(round(f * hop)):int(round((f + 1) * hop))]
        out[f] = np.sqrt(np.mean(seg.astype(np.float64) ** 2)) if seg.size else 0.0
    return out


def plot_curves(curves: np.ndarray, width: int, height: int, title: str) -> np.ndarray:
    """Line plot of (K, T) curves sharing one y-range, on a light panel with a title; uint8 (H, W, 3)."""
    curves = np.atleast_2d(np.asarray(curves, np.float64))
    img = Image.new("RGB", (width, height), (248, 248, 244))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((4, 2), title, fill=(20, 20, 20), font=font)
    x0, y0, x1, y1 = 4, 16, width - 4, height - 4
    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    lo, hi = float(curves.min()), float(curves.max())
    span = hi - lo if hi > lo else 1.0
    if lo < 0 < hi:
        zy = y1 - (0 - lo) / span * (y1 - y0)
        draw.line((x0, zy, x1, zy), fill=(200, 200, 200))
    t = np.linspace(x0 + 1, x1 - 1, curves.shape[1])
    for k, curve in enumerate(curves):
        ys = y1 - 1 - (curve - lo) / span * (y1 - y0 - 2)
        draw.line(list(zip(t.tolist(), ys.tolist())), fill=_CURVE_COLOURS[k % len(_CURVE_COLOURS)], width=1)
    return np.asarray(img)


def _label(text: str, width: int, height: int = 14) -> np.ndarray:
    img = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(img).text((4, 1), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(img)


def contact_sheet(clips: list[synthetic.SyntheticClip]) -> np.ndarray:
    """Per clip: a caption, frame thumbnails, their Head-Kps images, expression and audio-energy plots."""
    blocks = []
    for clip in clips:
        n, res = clip.frames.shape[0], clip.frames.shape[1]
        picks = np.linspace(0, n - 1, _THUMBS).round().astype(int)
        width = res * _THUMBS
        frames = np.concatenate([clip.frames[i] for i in picks], axis=1)
        kps = np.concatenate([draw_head_kps(clip.head_kps[i], res) for i in picks], axis=1)
        plot_h = max(70, res // 2)
        coeffs = plot_curves(clip.expression[:, :6].T, width, plot_h, "expression coefficients 0-5")
        energy = plot_curves(frame_energy(clip.audio, n, clip.fps)[None], width, plot_h, "audio RMS per frame")
        caption = _label(f"{clip.identity} | {clip.emotion} level {clip.intensity} | {clip.emotion_texts[0]}",
                         width)
        blocks.append(np.concatenate([caption, frames, kps, coeffs, energy,
                                      np.full((6, width, 3), 255, np.uint8)], axis=0))
    return np.concatenate(blocks, axis=0)


def write_demo(out_dir: str | os.PathLike, seed: int = 0, num_clips: int = 3, resolution: int = 128
               ) -> dict[str, Path]:
    """Generate `num_clips` synthetic clips and write `demo.mp4` (frames beside their Head-Kps images, with
    the speech) and `contact_sheet.png` into `out_dir`. Returns {"video": ..., "contact_sheet": ...}."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    synthetic.check_resolution(resolution)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE40]))
    conditions = facs.emotion_conditions()
    order = rng.permutation(len(conditions))
    clips = [
        synthetic.generate_clip(synthetic.make_identity(seed, k), *conditions[order[k % len(conditions)]],
                                seed=int(rng.integers(2**31)), num_frames=_NUM_FRAMES, fps=_FPS,
                                resolution=resolution)
        for k in range(num_clips)
    ]
    video = np.concatenate([
        np.concatenate([c.frames, np.stack([draw_head_kps(k, resolution) for k in c.head_kps])], axis=2)
        for c in clips])
    audio = np.concatenate([c.audio for c in clips])
    video_path = media.write_video(out_dir / "demo.mp4", video, _FPS, audio)
    buf = io.BytesIO()
    Image.fromarray(contact_sheet(clips)).save(buf, format="PNG")
    sheet_path = write_bytes_atomic(out_dir / "contact_sheet.png", buf.getvalue())
    return {"video": video_path, "contact_sheet": sheet_path}
