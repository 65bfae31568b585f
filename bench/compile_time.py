"""Compile time of SVP sampling, and what the persistent compilation cache saves a second process.

    python bench/compile_time.py             # svp_tiny (the default CLI model without a checkpoint)
    python bench/compile_time.py --config svp_paper --frames 24   # SD1.5 sizes (minutes of compile on CPU)

Runs the same child three times with one fresh cache folder: (1) cache off, (2) cache on and empty (writes it),
(3) cache on and filled, as a second `jaxtalk generate` would find it. Each child builds random weights, then
times the first SVP clip (compile + run) and a second clip (run only); compile ≈ first − second.
Writes bench/results/compile_time.json.
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="svp_tiny")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "compile_time.json"))
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results: dict = {"config": args.config, "frames": args.frames, "load_avg_1m_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(pathlib.Path(tmp) / "xla")
        for name, folder in (("no_cache", "off"), ("cold_cache", cache), ("warm_cache", cache)):
            out = subprocess.run([sys.executable, "-c", CHILD, folder, args.config, str(args.frames)], env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{name} child failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            results[name]["load_avg_1m"] = os.getloadavg()[0]
            r = results[name]
            print(f"{name:10s}: init {r['random_init_s']:.1f} s, first clip {r['first_clip_s']:.1f} s, second "
                  f"{r['second_clip_s']:.1f} s (compile ~{r['compile_estimate_s']:.1f} s), process "
                  f"{r['process_total_s']:.1f} s, load {r['load_avg_1m']:.1f}", flush=True)
        results["cache_entries"] = len(list(pathlib.Path(cache).iterdir()))
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
