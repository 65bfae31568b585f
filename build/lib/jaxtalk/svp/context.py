"""Context windows for long videos: V-Express's `uniform` schedule and mean-overlap of window predictions.

The denoising UNet sees at most `context_frames` (W) frames at a time. A clip of L frames is covered by windows
`[j, j + W)` for `j = 0, W − o, 2(W − o), …` (o = `context_overlap`); at every sampling step each window is denoised
on its own, the predictions of all windows covering a frame are averaged ("mean overlap") and the sampler steps
once on the averaged prediction. V-Express steps a frame as soon as its last window has contributed; because its
windows are visited in order and each overlaps only its neighbours, no window ever reads a frame that was already
stepped, so for per-frame samplers (DDIM, Euler) that is the same as averaging first and stepping once.

`uniform_schedule` reproduces V-Express `pipelines/context.py uniform` (AnimateDiff's scheduler) for every
argument, including the `ordered_halving` shift for step > 0, the dilated passes for `context_stride > 1`, and the
reflection `e -> L − 2 − e mod L` of indices past the end. V-Express calls it with step 0, stride 1 and
`closed_loop=False`, and cuts the clip to `L = (n_ctx − 1)(W − o) + W` frames (`cut_length`) so no window runs
past the end. `WindowPlan` turns the schedule into static arrays for the compiled sampling loop.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def ordered_halving(step: int) -> float:
    """The 64-bit bit-reversal of `step` as a fraction in [0, 1): 0, 1/2, 1/4, 3/4, 1/8, … (van der Corput)."""
    if step < 0:
        raise ValueError(f"ordered_halving: step must be >= 0, got {step}")
    reversed_bits = int(f"{step:064b}"[::-1], 2)
    return reversed_bits / (1 << 64)


def uniform_schedule(step: int, num_frames: int, context_size: int, context_stride: int = 3,
                     context_overlap: int = 4, closed_loop: bool = True) -> list[list[int]]:
    """V-Express / AnimateDiff `uniform` context windows: a list of frame-index lists, in visiting order."""
    if num_frames < 1 or context_size < 1:
        raise ValueError(f"uniform_schedule: need num_frames >= 1 and context_size >= 1, got {num_frames}, "
                         f"{context_size}")
    if not 0 <= context_overlap < context_size:
        raise ValueError(f"uniform_schedule: context_overlap must be in [0, context_size), got {context_overlap} "
                         f"with context_size {context_size}")
    if num_frames <= context_size:
        return [list(range(num_frames))]
    stride = min(context_stride, int(np.ceil(np.log2(num_frames / context_size))) + 1)
    shift = ordered_halving(step)
    windows = []
    for dilation in (1 << np.arange(stride)).tolist():
        pad = int(round(num_frames * shift))
        start = int(shift * dilation) + pad
        stop = num_frames + pad + (0 if closed_loop else -context_overlap)
        for j in range(start, stop, context_size * dilation - context_overlap):
            window = []
            for e in range(j, j + context_size * dilation, dilation):
                window.append(num_frames - 2 - e % num_frames if e >= num_frames else e)
            windows.append(window)
    return windows


def num_contexts(num_frames: int, context_frames: int, context_overlap: int) -> int:
    """V-Express's window count for a clip of `num_frames`: (L0 − W) // (W − o) + 1 (at least 1)."""
    if num_frames <= context_frames:
        return 1
    return (num_frames - context_frames) // (context_frames - context_overlap) + 1


def cut_length(num_frames: int, context_frames: int, context_overlap: int) -> int:
    """V-Express's clip length rule: L = (n_ctx − 1)(W − o) + W, the longest length ≤ `num_frames` that whole
    windows tile exactly. Clips no longer than one window are kept as they are (V-Express's formula would shorten
    or empty them)."""
    if not 0 <= context_overlap < context_frames:
        raise ValueError(f"cut_length: context_overlap must be in [0, {context_frames}), got {context_overlap}")
    if num_frames <= context_frames:
        return num_frames
    n_ctx = num_contexts(num_frames, context_frames, context_overlap)
    return (n_ctx - 1) * (context_frames - context_overlap) + context_frames


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Static window layout for one clip length: `indices` (n_windows, W) int32 frame indices (a window may hold a
    frame twice after reflection) and `counts` (F,) how many (window, position) slots cover each frame."""

    num_frames: int
    indices: np.ndarray
    counts: np.ndarray

    @property
    def num_windows(self) -> int:
        return int(self.indices.shape[0])

    @property
    def window(self) -> int:
        return int(self.indices.shape[1])


def window_plan(num_frames: int, context_frames: int, context_overlap: int, *, step: int = 0,
                context_stride: int = 1, closed_loop: bool = False) -> WindowPlan:
    """The windows V-Express samples with (step 0, stride 1, open loop by default) as a `WindowPlan`."""
    windows = uniform_schedule(step, num_frames, context_frames, context_stride, context_overlap, closed_loop)
    width = len(windows[0])
    if any(len(w) != width for w in windows):
        raise ValueError(f"window_plan: windows of different sizes {sorted({len(w) for w in windows})}")
    indices = np.asarray(windows, np.int64)
    indices = np.where(indices < 0, indices + num_frames, indices).astype(np.int32)  # python's negative indexing
    counts = np.zeros(num_frames, np.int32)
    np.add.at(counts, indices.reshape(-1), 1)
    if counts.min() == 0:
        missing = np.flatnonzero(counts == 0)[:8].tolist()
        raise ValueError(f"window_plan: frames {missing} are covered by no window (L={num_frames}, "
                         f"W={context_frames}, overlap={context_overlap}); cut the clip with cut_length()")
    return WindowPlan(num_frames, indices, counts)


def accumulate_window(acc: jax.Array, window_prediction: jax.Array, frame_indices: jax.Array) -> jax.Array:
    """Add a window's prediction (B, W, ...) into the clip accumulator (B, F, ...) at its frames (scatter-add)."""
    return acc.at[:, frame_indices].add(window_prediction.astype(acc.dtype))


def mean_overlap(window_predictions: jax.Array, plan: WindowPlan) -> jax.Array:
    """Average per-window predictions (n_windows, B, W, ...) into per-frame predictions (B, F, ...)."""
    n, b = window_predictions.shape[:2]
    if n != plan.num_windows or window_predictions.shape[2] != plan.window:
        raise ValueError(f"mean_overlap: predictions {window_predictions.shape[:3]} do not match the plan's "
                         f"({plan.num_windows} windows, B, {plan.window})")
    acc = jnp.zeros((b, plan.num_frames, *window_predictions.shape[3:]), jnp.float32)
    for k in range(n):
        acc = accumulate_window(acc, window_predictions[k], jnp.asarray(plan.indices[k]))
    return normalise(acc, plan)


def normalise(acc: jax.Array, plan: WindowPlan) -> jax.Array:
    """Divide an accumulator (B, F, ...) by each frame's window count."""
    inv = jnp.asarray(1.0 / plan.counts.astype(np.float32))
    return acc * inv.reshape((1, -1) + (1,) * (acc.ndim - 2))


def video_duration_frames(duration_s: float, fps: float, context_frames: int, context_overlap: int
                          ) -> tuple[int, float]:
    """V-Express's frame count and effective fps for audio of `duration_s`: L0 = int(duration · fps), cut by
    `cut_length`, and fps = L / duration so the video spans the audio exactly."""
    if duration_s <= 0 or fps <= 0:
        raise ValueError(f"need a positive duration and fps, got {duration_s} s at {fps} fps")
    frames0 = int(duration_s * fps)
    if frames0 < 1:
        raise ValueError(f"{duration_s:.3f} s of audio at {fps:g} fps is shorter than one frame")
    frames = cut_length(frames0, context_frames, context_overlap)
    return frames, frames / duration_s if frames != frames0 else float(fps)


__all__ = [
    "WindowPlan", "accumulate_window", "cut_length", "mean_overlap", "normalise", "num_contexts", "ordered_halving",
    "uniform_schedule", "video_duration_frames", "window_plan",
]
