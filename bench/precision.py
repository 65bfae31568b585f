"""bfloat16 against float32 on the sampling path of the shipped trained models: fidelity (PSNR) and time per clip.

    python bench/precision.py                       # SVP (jaxtalk/weights/svp_synthetic), 3 held-out clips
    python bench/precision.py --clips 4 --style2talker

For each held-out synthetic clip the same inputs and the same seed (same initial noise) are sampled twice: with the
config's compute dtype float32 and with `dtype=bfloat16` (the params stay stored in float32 and are cast per op;
GroupNorm / LayerNorm statistics, the attention softmax, the timestep sinusoids, the CFG combination and every
sampler update stay float32 in both). Reported per model:
* PSNR of the bf16 frames against the fp32 frames (uint8 frames, as written to the video), mean and min over clips;
* PSNR of each against the ground-truth frames (how much bf16 moves the fidelity metric itself);
* seconds per clip after compilation for both dtypes, run interleaved (fp32 clip k, bf16 clip k, ...) in this one
  process, their ratio fp32/bf16, and the 1-minute load average next to every timing (a loaded machine inflates
  both; read the ratio).
First, one 1024^3 matrix product in both dtypes: GFLOP/s and the op XLA compiled it to (on XLA:CPU a bf16 product
is converted to f32 and multiplied in f32). With --style2talker the shipped Style2Talker (jaxtalk/assets/style2talker_synthetic) is compared the same way on
its rendered frames. Writes bench/results/precision.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench.common import write_results  # noqa: E402
from jaxtalk.eval import metrics  # noqa: E402


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _timed(fn: Callable[[int], np.ndarray], k: int) -> tuple[np.ndarray, float, float]:
    """(frames of fn(k), seconds, 1-minute load average when it finished)."""
    t0 = time.perf_counter()
    out = np.asarray(fn(k))
    return out, time.perf_counter() - t0, _load()


def compare(run: dict[str, Callable[[int], np.ndarray]], gts: list[np.ndarray], warmup: Callable[[str], Any]
            ) -> dict:
    """Run `run[dtype](k)` for every clip k, both dtypes interleaved after one warm-up (compile) call per dtype."""
    out: dict = {"compile_s": {}, "load_at_compile": {}}
    for dt in run:
        t0 = time.perf_counter()
        warmup(dt)
        out["compile_s"][dt] = time.perf_counter() - t0
        out["load_at_compile"][dt] = _load()
    frames: dict[str, list[np.ndarray]] = {dt: [] for dt in run}
    times: dict[str, list[dict]] = {dt: [] for dt in run}
    for k in range(len(gts)):
        for dt in run:
            f, s, load = _timed(run[dt], k)
            frames[dt].append(f)
            times[dt].append({"clip": k, "s": s, "load_1m": load})
            print(f"  clip {k} {dt:8s} {s:7.2f} s  (load {load})", flush=True)
    psnr_pair = [float(metrics.psnr(frames["bfloat16"][k], frames["float32"][k])) for k in range(len(gts))]
    max_abs = [int(np.max(np.abs(frames["bfloat16"][k].astype(np.int16) - frames["float32"][k].astype(np.int16))))
               for k in range(len(gts))]
    vs_gt = {dt: [float(metrics.psnr(frames[dt][k][:len(gts[k])], gts[k][:len(frames[dt][k])]))
                  for k in range(len(gts))] for dt in run}
    mean_s = {dt: float(np.mean([t["s"] for t in times[dt]])) for dt in run}
    out.update({
        "psnr_bf16_vs_fp32_db": {"mean": float(np.mean(psnr_pair)), "min": float(np.min(psnr_pair)),
                                 "per_clip": psnr_pair},
        "max_abs_pixel_diff": max_abs,
        "psnr_vs_ground_truth_db": {dt: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_clip": v}
                                    for dt, v in vs_gt.items()},
        "seconds_per_clip": mean_s,
        "ratio_fp32_over_bf16_time": mean_s["float32"] / mean_s["bfloat16"],
        "timings": times,
        "frames_per_clip": int(frames["float32"][0].shape[0]),
    })
    return out


def svp(clips: int, seed: int, checkpoint: str | None, frames: int | None) -> dict:
    """The shipped SVP (or `checkpoint`) sampled with its own sampler config in float32 and in bfloat16."""
    from svp_steps import eval_clips

    from jaxtalk.svp import loading
    from jaxtalk.svp import pipeline as P

    ckpt = checkpoint or str(loading.packaged_weights())
    fp32 = loading.load_models(ckpt, overrides=["dtype=float32"])
    bf16 = dataclasses.replace(fp32, config=dataclasses.replace(fp32.config, dtype="bfloat16"))
    bf16 = dataclasses.replace(bf16, modules=loading.build_modules(bf16.config))  # same params, bf16 compute
    cfg = fp32.config
    frames = frames or cfg.context.frames
    data = eval_clips(seed, clips, frames, cfg.video.fps, cfg.video.height, cfg.style.enabled)
    pipes = {"float32": P.SVPPipeline(fp32, progress=False), "bfloat16": P.SVPPipeline(bf16, progress=False)}
    run = {dt: (lambda k, p=p: p(data[k][0], seed=seed + k).frames) for dt, p in pipes.items()}
    res = compare(run, [d[1] for d in data], warmup=lambda dt: run[dt](0))
    s = cfg.sampler
    res.update({"weights": ckpt, "sampler": f"{s.kind} {s.steps} steps", "guidance_scale": cfg.guidance.scale,
                "resolution": cfg.video.height, "clips": clips, "seed": seed, "frames": frames})
    return res


def style2talker(clips: int, seed: int, frames: int) -> dict:
    """The shipped Style2Talker, whole path (audio2exp, Style-E sampling, Style-A rendering) in float32 and in
    bfloat16: same held-out synthetic inputs, same seed; compared on the rendered frames."""
    from jaxtalk.data import synthetic
    from jaxtalk.style2talker import models as s2t_models
    from jaxtalk.style2talker.emotion_phrases import descriptions
    from jaxtalk.style2talker.pipeline import Style2TalkerInputs, Style2TalkerPipeline
    from jaxtalk.style2talker.shipped import load_shipped

    fp32 = load_shipped()
    if fp32.config.dtype != "float32":
        fp32 = dataclasses.replace(fp32, config=dataclasses.replace(fp32.config, dtype="float32"))
        fp32 = dataclasses.replace(fp32, modules=s2t_models.build_modules(fp32.config))
    bf16_cfg = dataclasses.replace(fp32.config, dtype="bfloat16")
    bf16 = dataclasses.replace(fp32, config=bf16_cfg, modules=s2t_models.build_modules(bf16_cfg))
    size = fp32.config.style_a.out_size
    emotions = ("happy", "sad", "angry", "surprised")
    data = []
    for k in range(clips):
        ident = synthetic.make_identity(seed, k)
        emo = emotions[k % len(emotions)]
        clip = synthetic.generate_clip(ident, emo, 2, seed=seed * 100 + k, num_frames=frames, fps=25.0,
                                       resolution=max(size, synthetic.MIN_RESOLUTION))
        gt = clip.frames
        if gt.shape[1] != size:
            from PIL import Image

            gt = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)) for f in gt])
        text = descriptions(emo, 2, split="heldout")[0]
        data.append((Style2TalkerInputs(image=clip.frames[0], audio=clip.audio, emotion=text, pose=clip.pose), gt))
    pipes = {"float32": Style2TalkerPipeline(fp32, progress=False),
             "bfloat16": Style2TalkerPipeline(bf16, progress=False)}
    run = {dt: (lambda k, p=p: p(data[k][0], seed=seed + k).frames) for dt, p in pipes.items()}
    res = compare(run, [d[1] for d in data], warmup=lambda dt: run[dt](0))
    res.update({"weights": "jaxtalk/assets/style2talker_synthetic", "resolution": size, "clips": clips,
                "seed": seed, "sampler": f"Style-E {fp32.config.sampler.method} {fp32.config.sampler.respacing}", "frames": frames})
    return res


def matmul_rates(n: int = 1024, repeats: int = 7) -> dict:
    """GFLOP/s of one jitted (n, n) @ (n, n) product in float32 and in bfloat16 (median of `repeats`, interleaved),
    and the op XLA compiled it to: shows whether bf16 reaches the CPU's bf16 units (AMX / AVX512-BF16) at all."""
    import jax
    import jax.numpy as jnp

    out: dict = {"n": n}
    fns, args = {}, {}
    for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        a = jax.random.normal(jax.random.key(0), (n, n), dt)
        fns[name] = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
        args[name] = (a, a)
        header, ops = "", []  # the computation (with its operand types) that holds each dot / custom call
        for ln in fns[name].as_text().splitlines():
            if ln.startswith(("%", "ENTRY")) and ln.rstrip().endswith("{"):
                header = ln.split("{")[0].strip()
            elif " dot(" in ln or "custom-call" in ln:
                ops.append(f"{header}: {ln.strip().split(',')[0]}")
        out[f"{name}_ops"] = ops
        jax.block_until_ready(fns[name](*args[name]))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k in fns:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[k](*args[k]))
            times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        out[f"{k}_gflops"] = 2 * n ** 3 / float(np.median(v)) / 1e9
    out["ratio_fp32_over_bf16_time"] = out["bfloat16_gflops"] / out["float32_gflops"]
    out["load_1m"] = _load()
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--seed", type=int, default=4242, help="held-out identity population")
    p.add_argument("--checkpoint", help="SVP bundle (default: the shipped jaxtalk/weights/svp_synthetic)")
    p.add_argument("--style2talker", action="store_true", help="also the shipped Style2Talker")
    p.add_argument("--no-svp", action="store_true", help="leave SVP out (with --style2talker: that model only)")
    p.add_argument("--frames", type=int, help="frames per SVP clip (default: one context window)")
    p.add_argument("--s2t-frames", type=int, default=50, help="frames per Style2Talker clip")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "precision.json"))
    args = p.parse_args(argv)
    import jax

    results: dict = {"backend": jax.default_backend(), "devices": str(jax.devices()[0]),
                     "cpu_count": os.cpu_count(), "load_1m_at_start": _load()}
    results["matmul"] = m = matmul_rates()
    print(f"matmul {m['n']}^3: fp32 {m['float32_gflops']:.1f} GFLOP/s, bf16 {m['bfloat16_gflops']:.1f} GFLOP/s, "
          f"ratio fp32/bf16 time {m['ratio_fp32_over_bf16_time']:.3f} (load {m['load_1m']}); bf16 product compiled "
          f"as: {m['bfloat16_ops']}", flush=True)
    if not args.no_svp:
        print("SVP", flush=True)
        results["svp"] = svp(args.clips, args.seed, args.checkpoint, args.frames)
        r = results["svp"]
        print(f"SVP bf16 vs fp32: PSNR {r['psnr_bf16_vs_fp32_db']['mean']:.2f} dB (min "
              f"{r['psnr_bf16_vs_fp32_db']['min']:.2f}); s/clip fp32 {r['seconds_per_clip']['float32']:.2f} bf16 "
              f"{r['seconds_per_clip']['bfloat16']:.2f}; ratio fp32/bf16 {r['ratio_fp32_over_bf16_time']:.3f}",
              flush=True)
    if args.style2talker:
        print("Style2Talker", flush=True)
        results["style2talker"] = style2talker(args.clips, args.seed, args.s2t_frames)
        r = results["style2talker"]
        print(f"Style2Talker bf16 vs fp32: PSNR {r['psnr_bf16_vs_fp32_db']['mean']:.2f} dB; s/clip fp32 "
              f"{r['seconds_per_clip']['float32']:.2f} bf16 {r['seconds_per_clip']['bfloat16']:.2f}; "
              f"ratio fp32/bf16 {r['ratio_fp32_over_bf16_time']:.3f}", flush=True)
    results["load_1m_at_end"] = _load()
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
