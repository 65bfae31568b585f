"""Compile time of SVP sampling and training steps, and what the persistent compilation cache saves a second process.

    python bench/compile_time.py             # svp_tiny sampling + the tiny stage-1 / stage-2 train steps
    python bench/compile_time.py --config svp_paper --frames 24 --train train_svp_stage1_paper
                                             # SD1.5 sizes (tens of minutes of compile on 2 CPU cores)
    python bench/compile_time.py --train     # sampling only

Sampling: runs the same child three times with one fresh cache folder: (1) cache off, (2) cache on and empty
(writes it), (3) cache on and filled, as a second `jaxtalk generate` would find it. Each child builds random
weights, then times the first SVP clip (compile + run) and a second clip (run only); compile ≈ first − second.
Training: per preset, a child lowers and compiles the train step (the trainer's step: loss, grads, clipped AdamW,
non-finite guard; abstract state, one device, the preset's batch) with the cache off, then cold, then warm.
Writes bench/results/compile_time.json with the load average next to every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402

CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
cache, preset, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
from jaxtalk.compile_cache import enable_compile_cache
if cache != "off":
    enable_compile_cache(cache)
import numpy as np
from jaxtalk import config
from jaxtalk.data import media
from jaxtalk.svp import models as svp_models, pipeline as P
cfg = config.load(preset, overrides=["context.cut_to_windows=false"])
t0 = time.perf_counter()
models = svp_models.build_models(cfg, seed=0)
init_s = time.perf_counter() - t0
rng = np.random.default_rng(0)
clip = P.ClipInputs(reference=rng.integers(0, 256, (cfg.video.height, cfg.video.width, 3), dtype=np.uint8),
                    audio=(0.1 * rng.standard_normal(int(frames / cfg.video.fps * media.SAMPLE_RATE) + 1)
                           ).astype(np.float32),
                    style=svp_models.StyleGaussian(np.zeros((1, cfg.unet.style_dim), np.float32),
                                                   np.ones((1, cfg.unet.style_dim), np.float32))
                    if cfg.style.enabled else None)
pipe = P.SVPPipeline(models, progress=False)
t0 = time.perf_counter(); pipe([clip], seed=0); first = time.perf_counter() - t0
t0 = time.perf_counter(); pipe([clip], seed=1); second = time.perf_counter() - t0
print(json.dumps({"random_init_s": init_s, "first_clip_s": first, "second_clip_s": second,
                  "compile_estimate_s": first - second, "process_total_s": time.perf_counter() - t_start}))
"""

TRAIN_CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
cache, preset, repo = sys.argv[1], sys.argv[2], sys.argv[3]
from jaxtalk.compile_cache import enable_compile_cache
if cache != "off":
    enable_compile_cache(cache)
import jax
sys.path.insert(0, repo + "/bench")
from scale_plan import lower_train_step
from jaxtalk import config, parallel
from jaxtalk.training.svp import SVPTask
cfg = config.load(preset, ["init=[]"])
task = SVPTask.from_config(cfg)
mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
t0 = time.perf_counter()
lowered, _ = lower_train_step("svp", cfg, task, mesh, cfg.data.batch_size)
t1 = time.perf_counter()
lowered.compile()
t2 = time.perf_counter()
print(json.dumps({"batch": cfg.data.batch_size, "lower_s": t1 - t0, "compile_s": t2 - t1,
                  "process_total_s": time.perf_counter() - t_start}))
"""


def _entries(folder: pathlib.Path) -> int:
    return len(list(folder.iterdir())) if folder.exists() else 0


def _three_runs(label: str, child: str, child_args: list[str], cache: pathlib.Path, env: dict, show) -> dict:
    """The child with the cache off, then on with an empty folder, then on with what the second run wrote."""
    out: dict = {}
    for name, folder in (("no_cache", "off"), ("cold_cache", str(cache)), ("warm_cache", str(cache))):
        before = _entries(cache)
        run = subprocess.run([sys.executable, "-c", child, folder, *child_args], env=env, capture_output=True,
                             text=True)
        if run.returncode:
            raise SystemExit(f"{label} {name} child failed:\n{run.stderr[-3000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
        r["load_avg_1m"] = os.getloadavg()[0]
        r["cache_entries_written"] = _entries(cache) - before
        out[name] = r
        print(f"{label} {name:10s}: {show(r)}, cache entries +{r['cache_entries_written']}, load "
              f"{r['load_avg_1m']:.1f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="svp_tiny", help="SVP sampling preset ('none' to skip sampling)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--train", nargs="*", default=["train_svp_stage1_tiny", "train_svp_stage2_tiny"],
                   help="SVP training presets whose train step is compiled (none: sampling only)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "compile_time.json"))
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results: dict = {"config": args.config, "frames": args.frames, "cpu_count": os.cpu_count(),
                     "load_avg_1m_at_start": os.getloadavg()[0], "train": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.config != "none":
            cache = pathlib.Path(tmp) / "sample"
            results["sampling"] = _three_runs(
                f"sampling {args.config}", CHILD, [args.config, str(args.frames)], cache, env,
                lambda r: (f"init {r['random_init_s']:.1f} s, first clip {r['first_clip_s']:.1f} s, second "
                           f"{r['second_clip_s']:.1f} s (compile ~{r['compile_estimate_s']:.1f} s), process "
                           f"{r['process_total_s']:.1f} s"))
        for preset in args.train:
            cache = pathlib.Path(tmp) / preset
            results["train"][preset] = _three_runs(
                f"train step {preset}", TRAIN_CHILD, [preset, str(REPO)], cache, env,
                lambda r: (f"batch {r['batch']}, lower {r['lower_s']:.1f} s, compile {r['compile_s']:.1f} s, "
                           f"process {r['process_total_s']:.1f} s"))
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
