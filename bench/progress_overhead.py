"""What the web page's progress listener costs: SVP's compiled denoising loop without any callback (what the CLI
with --quiet and the library with progress=False run), with the per-step tqdm callback (the CLI default), and
with the per-window listener (`generate(on_progress=...)`, what `jaxtalk serve` uses), same inputs and weights.

    python bench/progress_overhead.py                 # svp_tiny, 48 frames (several context windows), 4 steps
    python bench/progress_overhead.py --frames 96 --steps 8 --size 64

Each variant is compiled once (not timed), then `--repeats` runs of `sample_latents` are timed (wall and process
CPU seconds); medians go to bench/results/progress_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import statistics
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jaxtalk.svp import pipeline as P  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="svp_tiny")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "progress_overhead.json"))
    args = ap.parse_args()

    overrides = [f"sampler.steps={args.steps}", f"video.height={args.size}", f"video.width={args.size}",
                 "context.cut_to_windows=false"]
    models = P.resolve_models(None, config=args.config, overrides=overrides, devices=1)
    rng = np.random.default_rng(0)
    seconds = args.frames / models.config.video.fps
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    image = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    base = P.SVPPipeline(models, progress=False)
    frames, _ = base.num_frames(audio)
    keys = P.clip_keys(0, 1)
    cond = base.prepare([P.ClipInputs(reference=image, audio=audio)], keys, frames)
    events: list[tuple] = []
    variants = {"none": P.SVPPipeline(models, progress=False),
                "step (tqdm)": P.SVPPipeline(models, progress=True),
                "window (on_progress)": P.SVPPipeline(models, progress=False,
                                                      on_progress=lambda *e: events.append(e))}
    results = {}
    reference = None
    for name, pipe in variants.items():
        t0 = time.perf_counter()
        out = pipe.sample_latents(cond, keys, frames)  # compile + first run
        first = time.perf_counter() - t0
        out = np.asarray(out)
        reference = out if reference is None else reference
        walls, cpus = [], []
        for _ in range(args.repeats):
            w, c = time.perf_counter(), cpu_seconds()
            jax.block_until_ready(pipe.sample_latents(cond, keys, frames))
            walls.append(time.perf_counter() - w)
            cpus.append(cpu_seconds() - c)
        results[name] = {"compile_and_first_s": first, "median_wall_s": statistics.median(walls),
                         "median_cpu_s": statistics.median(cpus), "same_latents": bool(np.array_equal(out,
                                                                                                     reference))}
        print(name, results[name], flush=True)
    plan = base.window_plan(frames)
    report = {"bench": "progress_overhead", "config": args.config, "frames": frames, "steps": args.steps,
              "size": args.size, "windows": plan.num_windows, "repeats": args.repeats,
              "device": str(jax.devices()[0]), "machine": platform.machine(), "python": platform.python_version(),
              "jax": jax.__version__, "results": results,
              "window_vs_none_wall": results["window (on_progress)"]["median_wall_s"] / results["none"]["median_wall_s"],
              "listener_events_per_run": len(events) // (args.repeats + 1)}
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
