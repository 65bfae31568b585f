"""Throughput of the synthetic talking-face generator on one CPU core.

Prints frames/s for the whole clip generator (speech synthesis, motion, keypoints, rendering) and for rendering
alone, at each requested resolution, and writes the figures as JSON with --json.

    python bench/synthetic_data.py --resolutions 128 256 --frames 250
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

from jaxtalk.data import synthetic  # noqa: E402


def _pin_one_core() -> str:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    except (AttributeError, OSError):
        return "not pinned (sched_setaffinity unavailable)"


def measure(resolution: int, num_frames: int, repeats: int) -> dict[str, float]:
    identity = synthetic.make_identity(0, 0)
    synthetic.generate_clip(identity, "happy", 2, seed=0, num_frames=10, resolution=resolution)  # warm caches
    best_full = best_render = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        synthetic.generate_clip(identity, "happy", 2, seed=r, num_frames=num_frames, resolution=resolution)
        best_full = min(best_full, time.perf_counter() - t0)
        controls, pose, gaze, _ = synthetic.motion(identity, "happy", 2, r, num_frames, 25.0)
        t0 = time.perf_counter()
        synthetic.render_frames(identity, controls, pose, gaze, resolution)
        best_render = min(best_render, time.perf_counter() - t0)
    return {"resolution": resolution, "num_frames": num_frames,
            "generate_clip_fps": num_frames / best_full, "render_only_fps": num_frames / best_render}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128])
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    pinned = _pin_one_core()
    results = [measure(r, args.frames, args.repeats) for r in args.resolutions]
    for res in results:
        print(f"{res['resolution']}x{res['resolution']}: generate_clip {res['generate_clip_fps']:.1f} frames/s, "
              f"render only {res['render_only_fps']:.1f} frames/s ({res['num_frames']} frames, best of "
              f"{args.repeats}, {pinned}, {platform.processor() or platform.machine()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pinning": pinned, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
