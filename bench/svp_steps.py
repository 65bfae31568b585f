"""Fidelity against sampler steps: which solver reaches 25-step Euler's fidelity in the fewest steps.

    python bench/svp_steps.py --checkpoint runs/svp_trained --steps 25 15 10 8 6     # a trained SVP bundle
    python bench/svp_steps.py --steps 25 10 5                                        # svp_tiny, random weights

For every (solver, steps) the same held-out synthetic clips (identities from `--seed`, never the evaluators'
training population) are generated from the same noise (same seed per clip) and scored:
* against the ground-truth frames with the fidelity metrics of `jaxtalk.eval` (PSNR, SSIM, F-LMD, M-LMD, lip-sync;
  the landmark / lip metrics need the evaluator weights: without them only PSNR / SSIM are reported);
* against the 25-step Euler video of the same clip (PSNR): how far the cheaper solver lands from the baseline.
"Within noise" = every metric's mean within one standard error (over clips) of 25-step Euler's mean; the smallest
such step count per solver is reported as `fewest_steps_within_noise`. With random weights (no --checkpoint) the
numbers only show that the script runs: the comparison means something on trained weights only.
Writes bench/results/svp_steps.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jaxtalk import config  # noqa: E402
from jaxtalk.data import synthetic  # noqa: E402
from jaxtalk.eval import metrics  # noqa: E402
from jaxtalk.svp import models as svp_models  # noqa: E402
from jaxtalk.svp import pipeline as P  # noqa: E402

SOLVERS = ("euler", "dpmsolver++", "unipc", "ddim")
EMOTIONS = ("happy", "sad", "angry", "surprised")


def eval_clips(seed: int, count: int, frames: int, fps: float, resolution: int, with_style: bool):
    """(inputs, ground-truth frames, ground-truth landmarks) for `count` held-out clips."""
    from jaxtalk.eval.data import TRAIN_SEED, clip_landmarks

    if seed == TRAIN_SEED:
        raise ValueError(f"--seed {seed} is the evaluators' training population; choose another")
    from PIL import Image

    render = max(resolution, synthetic.MIN_RESOLUTION)  # the renderer's smallest size; resized to the video's
    out = []
    for k in range(count):
        ident = synthetic.make_identity(seed, k)
        clip = synthetic.generate_clip(ident, EMOTIONS[k % len(EMOTIONS)], 2, seed=seed * 100 + k, num_frames=frames,
                                       fps=fps, resolution=render)
        gt = clip.frames
        if render != resolution:
            gt = np.stack([np.asarray(Image.fromarray(f).resize((resolution, resolution), Image.Resampling.BICUBIC))
                           for f in gt])
        style = None
        if with_style:
            sc = synthetic.generate_clip(ident, EMOTIONS[(k + 1) % len(EMOTIONS)], 2, seed=seed * 100 + 50 + k,
                                         num_frames=40, fps=fps, resolution=64, render_video=False)
            style = P.StyleClip(sc.expression, sc.audio, fps)
        inputs = P.ClipInputs(reference=clip.frames[0], audio=clip.audio, kps=clip.head_kps, style=style)
        landmarks = clip_landmarks(ident, clip, render) * np.float32(resolution / render)
        out.append((inputs, gt, landmarks))
    return out


def within_noise(candidate: dict, baseline: dict) -> bool:
    for name, base in baseline.items():
        c = candidate.get(name)
        if c is None:
            continue
        se = base["std"] / np.sqrt(max(base["n"], 1))
        if abs(c["mean"] - base["mean"]) > max(se, 1e-12):
            return False
    return True


def fewest_within_noise(runs: dict, solvers: list[str], steps: list[int]) -> dict:
    """Per solver, the smallest step count run so far whose metrics are all within noise of 25-step Euler."""
    baseline = {k: v for k, v in runs["euler@25"].items() if isinstance(v, dict)}
    fewest = {}
    for solver in solvers:
        ok = [n for n in steps if f"{solver}@{n}" in runs and within_noise(runs[f"{solver}@{n}"], baseline)]
        fewest[solver] = min(ok) if ok else None
    return fewest


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="saved SVP bundle (default: svp_tiny with random weights)")
    p.add_argument("--steps", type=int, nargs="+", default=[25, 15, 10, 8])
    p.add_argument("--solvers", nargs="+", choices=SOLVERS, default=["euler", "dpmsolver++", "unipc"])
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: two context windows)")
    p.add_argument("--runs", nargs="+", help="explicit solver@steps list in this order (instead of --solvers x "
                   "--steps), e.g. dpmsolver++@10 unipc@10 euler@10; 25-step Euler always runs first")
    p.add_argument("--batch", type=int, default=4, help="clips sampled together in one call")
    p.add_argument("--seed", type=int, default=4242, help="held-out identity population")
    p.add_argument("--evaluators", help="evaluator weights folder (default: the shipped ones)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "svp_steps.json"))
    args = p.parse_args(argv)
    from jaxtalk.compile_cache import enable_compile_cache

    enable_compile_cache()  # the per-clip programs (reference, audio, decode) are the same for every solver
    if args.checkpoint:
        models = svp_models.load_models(args.checkpoint)
    else:
        models = svp_models.build_models(config.load("svp_tiny"), seed=0)
    base_cfg = models.config
    frames = args.frames or (2 * base_cfg.context.frames - base_cfg.context.overlap)
    clips = eval_clips(args.seed, args.clips, frames, base_cfg.video.fps, base_cfg.video.height,
                       base_cfg.style.enabled)
    try:
        from jaxtalk.eval import load_evaluators

        ev = load_evaluators(args.evaluators)
    except (FileNotFoundError, ImportError) as e:
        ev = None
        print(f"evaluators unavailable ({e}); PSNR / SSIM only", flush=True)
    results: dict = {"checkpoint": args.checkpoint or "svp_tiny random init", "clips": args.clips, "frames": frames,
                     "seed": args.seed, "evaluators": ev is not None, "load_avg_1m_at_start": os.getloadavg()[0],
                     "runs": {}}
    videos: dict[tuple[str, int], list[np.ndarray]] = {}
    all_keys = P.clip_keys(args.seed, len(clips))
    if args.runs:  # an explicit order (most informative first: the JSON is rewritten after every run)
        runs = [("euler", 25)] + [(r.split("@")[0], int(r.split("@")[1])) for r in args.runs if r != "euler@25"]
        args.solvers = list(dict.fromkeys(s for s, _ in runs[1:]))
        args.steps = sorted({n for _, n in runs})
    else:
        runs = [("euler", 25)] + [(s, n) for s in args.solvers for n in sorted(set(args.steps), reverse=True)
                                  if (s, n) != ("euler", 25)]
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for solver, steps in runs:
        sampler = dataclasses.replace(base_cfg.sampler, kind=solver, steps=steps, eta=0.0)
        m = dataclasses.replace(models, config=dataclasses.replace(base_cfg, sampler=sampler))
        pipe = P.SVPPipeline(m, progress=False)
        t0 = time.perf_counter()
        per_clip: dict[str, list[float]] = {}
        vids = []
        for b in range(0, len(clips), args.batch):  # clip k samples with key fold_in(key(seed), k) in every run
            chunk = [c[0] for c in clips[b:b + args.batch]]
            vids += [r.frames for r in pipe(chunk, keys=all_keys[b:b + len(chunk)])]
        for k, (_, gt, gt_lm) in enumerate(clips):
            out = vids[k]
            n = min(len(out), len(gt))
            scores = (ev.frame_metrics(out[:n], gt[:n], gt_lm[:n]) if ev is not None else
                      {"psnr": metrics.psnr(out[:n], gt[:n]), "ssim": metrics.ssim(out[:n], gt[:n])})
            if (solver, steps) != ("euler", 25):
                scores["psnr_vs_euler25"] = metrics.psnr(out, videos["euler", 25][k])
            for name, v in scores.items():
                per_clip.setdefault(name, []).append(float(v))
        videos[solver, steps] = vids
        summary = {name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
                   for name, v in per_clip.items()}
        summary["wall_s"] = time.perf_counter() - t0
        results["runs"][f"{solver}@{steps}"] = summary
        summary["load_1m_at_end"] = os.getloadavg()[0]
        results["fewest_steps_within_noise"] = fewest_within_noise(results["runs"], args.solvers, args.steps)
        path.write_text(json.dumps(results, indent=1))
        print(f"{solver:12s} {steps:3d} steps ({summary['wall_s']:.0f} s, load {os.getloadavg()[0]:.1f}): " + ", ".join(
            f"{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in summary.items() if isinstance(v, dict)), flush=True)
    fewest = results["fewest_steps_within_noise"]
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    print(f"fewest steps within noise of 25-step Euler: {fewest}")
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
