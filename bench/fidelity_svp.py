"""SVP fidelity on held-out synthetic talking faces: the synthetic analogue of the paper's Tables 1-3, Fig. 4-6.

    python bench/fidelity_svp.py --seed 0 --out outputs/fidelity_svp      # ~15 min on 2 CPU cores
    python bench/fidelity_svp.py --pool A/fidelity_svp.json B/fidelity_svp.json --out DIR   # runs as one set

Held-out data: identities of the population `EVAL_SEED` (the model trained on population `TRAIN_SEED`, the
evaluator nets on 90210), emotions / intensities / utterances drawn from `--seed`. For each of N identities the
generator renders a target clip (emotion e, intensity k), a second utterance with the same (e, k) (the style clip,
and the mismatched audio) and a neutral clip (the Table 2 reference). Metrics come from frames only, through the
evaluator nets (`jaxtalk.eval`): nothing of the ground truth enters the model but what the paper gives it
(reference image, audio, Head-Kps track of the target, a style clip of another utterance).

- table1 (reconstruction, reference = the target's first frame): `trained`, `wo_style` (style attention weight 0:
  the stage-2 model, since stage 3 trains only the style attention), `copy_reference` (the reference frame shown
  for every frame), `mismatched_audio` (trained model driven by the other utterance's audio).
- table2 (style transfer, neutral reference + emotional style clip): `trained` vs `wo_style`; StyleSim = cosine of
  the trained style extractor's mu over expression sequences regressed from generated vs ground-truth frames
  (`stylesim`), and of the evaluator's emotion-classifier features (`stylesim_eval`).
- dcls: d_inter / d_intra of the style priors per emotion for audio only, expression only and both.
- identity_leakage: reference identity A (neutral), style clip of identity B; the shipped probabilistic prior vs
  the deterministic-prior ablation trained with the same budget (`deterministic_prior.safetensors`).
- PNGs: a strip per table-1 clip, the t-SNE of priors (colour emotion, shade intensity), an interpolation strip.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxtalk.data import facs, synthetic
from jaxtalk.eval import load_evaluators, metrics
from jaxtalk.eval.embedding import tsne
from jaxtalk.plot import PALETTE, Canvas, image_strip

EVAL_SEED = 1000  # jaxtalk.training.svp_stack.EVAL_SEED
ROW_METRICS = ("psnr", "ssim", "f_lmd", "m_lmd", "lip_sync")


@dataclasses.dataclass
class Sample:
    identity: synthetic.Identity
    emotion: str
    intensity: int
    target: synthetic.SyntheticClip
    style: synthetic.SyntheticClip  # same identity and (emotion, intensity), another utterance
    neutral: synthetic.SyntheticClip


def eval_samples(seed: int, n: int, frames: int, resolution: int) -> list[Sample]:
    """N held-out identities with one emotional condition each, drawn from `seed` (never neutral)."""
    rng = np.random.default_rng([EVAL_SEED, seed])
    ids = rng.choice(1000, n, replace=False)
    emotions = [e for e in facs.EMOTIONS if e != "neutral"]
    out = []
    for i in ids:
        ident = synthetic.make_identity(EVAL_SEED, int(i))
        e = emotions[int(rng.integers(len(emotions)))]
        k = int(rng.integers(1, 4))
        seeds = rng.integers(2**31, size=3)
        clips = [synthetic.generate_clip(ident, em, it, int(s), num_frames=frames, resolution=resolution)
                 for em, it, s in ((e, k, seeds[0]), (e, k, seeds[1]), ("neutral", 1, seeds[2]))]
        out.append(Sample(ident, e, k, *clips))
    return out


def load_variants(weights: Path):
    """(trained, w/o style, deterministic-prior) model bundles over the same weights."""
    from safetensors.numpy import load_file

    from jaxtalk.svp.loading import load_models

    trained = load_models(weights)
    wo_style = load_models(weights, overrides=["guidance.style_weight=0"])
    det = load_models(weights, overrides=["style.extractor.deterministic=true", "style.sample=false"])
    delta_path = weights / "deterministic_prior.safetensors"
    if delta_path.is_file():
        from flax import traverse_util

        delta = load_file(str(delta_path))
        params = {k: traverse_util.flatten_dict(v, sep="/") for k, v in det.params.items()}
        for key, value in delta.items():
            comp, rest = key.split("/", 1)
            if rest not in params[comp] or params[comp][rest].shape != value.shape:
                raise ValueError(f"{delta_path}: {key} does not fit the model")
            params[comp][rest] = value.astype(np.float32)
        det.params = {k: traverse_util.unflatten_dict(v, sep="/") for k, v in params.items()}
    else:
        det = None
    return trained, wo_style, det


def generate(models, clips: list, seed: int) -> np.ndarray:
    """uint8 (B, F, H, W, 3) for a list of `ClipInputs` (one compiled call for the batch)."""
    from jaxtalk.svp.pipeline import SVPPipeline

    pipe = SVPPipeline(dataclasses.replace(models, config=dataclasses.replace(models.config, seed=seed)),
                       progress=False)
    return np.stack([r.frames for r in pipe(clips)])


def regressed_style(models, ev, frames: np.ndarray, audio: np.ndarray, fps: float) -> np.ndarray:
    """mu of the SVP style extractor over the expression sequence regressed from frames."""
    expression = ev.regress(frames)["expression"]
    return np.asarray(models.style_prior(expression, audio, fps).mu).reshape(-1)


def mean_rows(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def run(args: argparse.Namespace) -> dict:
    from jaxtalk.svp.pipeline import ClipInputs, StyleClip, StyleMix

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights) if args.weights else default_weights()
    ev = load_evaluators()
    trained, wo_style, det = load_variants(weights)
    cfg = trained.config
    if args.steps:
        for m in (trained, wo_style, det):
            if m is not None:
                m.config = dataclasses.replace(m.config, sampler=dataclasses.replace(m.config.sampler,
                                                                                       steps=args.steps))
    size = cfg.video.height
    samples = eval_samples(args.seed, args.identities, args.frames, size)
    fps = samples[0].target.fps
    style_of = lambda s: StyleClip(s.style.expression, s.style.audio, fps)  # noqa: E731

    # ---------------------------------------------------------------- table 1
    t1_inputs = [ClipInputs(s.target.frames[0], s.target.audio, s.target.head_kps, style_of(s)) for s in samples]
    mismatched = [ClipInputs(s.target.frames[0], s.style.audio, s.target.head_kps, style_of(s)) for s in samples]
    gen = {"trained": generate(trained, t1_inputs, args.seed),
           "wo_style": generate(wo_style, t1_inputs, args.seed),
           "mismatched_audio": generate(trained, mismatched, args.seed)}
    n_frames = gen["trained"].shape[1]
    gen["copy_reference"] = np.stack([np.repeat(s.target.frames[:1], n_frames, 0) for s in samples])
    table1, per_clip = {}, {"table1": {}, "table2": {}, "identity_leakage": {}}
    for method, frames in gen.items():
        rows = [ev.frame_metrics(frames[i], s.target.frames[:n_frames]) for i, s in enumerate(samples)]
        table1[method], per_clip["table1"][method] = mean_rows(rows), rows
    for i, s in enumerate(samples):
        image_strip([("reference", s.target.frames[:1]), ("generated", gen["trained"][i][::3]),
                     ("ground truth", s.target.frames[:n_frames:3]), ("w/o style", gen["wo_style"][i][::3]),
                     ("mismatched", gen["mismatched_audio"][i][::3])],
                    out / f"table1_clip{i}_{s.emotion}{s.intensity}.png")

    # ---------------------------------------------------------------- table 2
    t2_inputs = [ClipInputs(s.neutral.frames[0], s.target.audio, s.target.head_kps, style_of(s)) for s in samples]
    table2 = {}
    for method, models in (("trained", trained), ("wo_style", wo_style)):
        frames = generate(models, t2_inputs, args.seed)
        rows = []
        for i, s in enumerate(samples):
            gt = s.target.frames[:n_frames]
            row = {k: v for k, v in ev.frame_metrics(frames[i], gt).items() if k in ("f_lmd", "m_lmd", "psnr")}
            a, b = regressed_style(trained, ev, frames[i], s.target.audio, fps), \
                regressed_style(trained, ev, gt, s.target.audio, fps)
            row["stylesim"] = metrics.stylesim(a, b)
            row["stylesim_eval"] = metrics.stylesim(ev.style_code(ev.regress(frames[i])["expression"]),
                                                    ev.style_code(ev.regress(gt)["expression"]))
            row["emotion_recognised"] = float(ev.predict_emotion(ev.regress(frames[i])["expression"])
                                              == facs.EMOTIONS.index(s.emotion))
            rows.append(row)
        table2[method], per_clip["table2"][method] = mean_rows(rows), rows
        if method == "trained":
            image_strip([(f"{s.emotion}{s.intensity}", frames[i][::3]) for i, s in enumerate(samples)],
                        out / "table2_style_transfer.png")

    # ---------------------------------------------------------------- table 3 / fig. 5
    dcls, tsne_png = style_clusters(trained, args, out)

    # ---------------------------------------------------------------- fig. 4: identity leakage
    leakage = None
    if det is not None:
        leak_inputs = [ClipInputs(s.neutral.frames[0], s.target.audio, s.target.head_kps,
                                  style_of(samples[(i + 1) % len(samples)])) for i, s in enumerate(samples)]
        leakage = {}
        for name, models in (("probabilistic", trained), ("deterministic", det)):
            frames = generate(models, leak_inputs, args.seed)
            rows = []
            for i, s in enumerate(samples):
                other = samples[(i + 1) % len(samples)]
                rows.append(metrics.identity_leakage(ev.identity_embedding(frames[i]),
                                                     ev.identity_embedding(s.neutral.frames),
                                                     ev.identity_embedding(other.style.frames)))
            leakage[name], per_clip["identity_leakage"][name] = mean_rows(rows), rows

    # ---------------------------------------------------------------- fig. 6: interpolation
    s0, s1 = samples[0], samples[1 % len(samples)]
    pa, pb = trained.style_prior(s0.style.expression, s0.style.audio, fps), \
        trained.style_prior(s1.style.expression, s1.style.audio, fps)
    mixes = [ClipInputs(s0.neutral.frames[0], s0.target.audio, s0.target.head_kps, StyleMix(pa, pb, w))
             for w in np.linspace(0.0, 1.0, 5)]
    frames = generate(trained, mixes, args.seed)
    image_strip([(f"w={w:.2f}", frames[j][::4]) for j, w in enumerate(np.linspace(0, 1, 5))],
                out / f"interpolation_{s0.emotion}_to_{s1.emotion}.png")

    result = {
        "seed": args.seed, "eval_population_seed": EVAL_SEED, "weights": str(weights),
        "samples": [{"identity": s.identity.name, "emotion": s.emotion, "intensity": s.intensity} for s in samples],
        "frames": int(n_frames), "sampler": dataclasses.asdict(trained.config.sampler),
        "guidance_scale": trained.config.guidance.scale,
        "table1": table1, "table2": table2, "dcls": dcls, "identity_leakage": leakage,
        "regressor_accuracy": ev.manifest.get("heldout", ev.manifest.get("accuracy")),
        "figures": {"tsne": tsne_png.name}, "per_clip": per_clip, "wall_s": time.time() - t0,
    }
    result["targets"] = targets(result)
    (out / "fidelity_svp.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def style_clusters(models, args: argparse.Namespace, out: Path) -> tuple[dict, Path]:
    """d_cls per emotion of the priors of held-out clips (audio only / expression only / both) and a t-SNE PNG."""
    rng = np.random.default_rng([EVAL_SEED, args.seed, 3])
    ids = rng.choice(1000, args.cluster_identities, replace=False)
    conditions = [(e, k) for e in facs.EMOTIONS[1:] for k in (1, 2, 3)] + [("neutral", 1)] * 3
    codes: dict[str, list] = {"audio": [], "expression": [], "both": []}
    labels, intensities = [], []
    for i in ids:
        ident = synthetic.make_identity(EVAL_SEED, int(i))
        for e, k in conditions:
            clip = synthetic.generate_clip(ident, e, k, int(rng.integers(2**31)), num_frames=args.style_frames,
                                           render_video=False)
            exp, audio = clip.expression, clip.audio
            codes["both"].append(models.style_prior(exp, audio, clip.fps).mu.reshape(-1))
            codes["audio"].append(models.style_prior(np.zeros_like(exp), audio, clip.fps).mu.reshape(-1))
            codes["expression"].append(models.style_prior(exp, np.zeros_like(audio), clip.fps).mu.reshape(-1))
            labels.append(e)
            intensities.append(k)
    dcls = {branch: metrics.dcls(np.stack(c), np.array(labels)) for branch, c in codes.items()}
    y = tsne(np.stack(codes["both"]), seed=args.seed)
    canvas = Canvas((float(y[:, 0].min()), float(y[:, 0].max())), (float(y[:, 1].min()), float(y[:, 1].max())),
                    "t-SNE of style priors (colour: emotion, lighter: lower intensity)")
    colours = []
    for e, k in zip(labels, intensities):
        base = np.array(PALETTE[facs.EMOTIONS.index(e)], float)
        colours.append(tuple(int(v) for v in base + (255 - base) * (3 - k) / 4))
    canvas.points(y[:, 0], y[:, 1], colours)
    for e in facs.EMOTIONS:
        canvas.legend.append((e, PALETTE[facs.EMOTIONS.index(e)]))
    path = canvas.save(out / "tsne_style_priors.png")
    return dcls, path


def targets(r: dict) -> dict:
    """The issue's targets as measured: each paired comparison over the clips is "reached", "missed" or "within
    noise" (see `compare`); the d_cls ordering, which has no clip pairing, is "reached" or "missed"."""
    t1, t2, d = r["per_clip"]["table1"], r["per_clip"]["table2"], r["dcls"]
    mean = lambda branch: float(np.mean([v for v in d[branch].values() if np.isfinite(v)]))  # noqa: E731
    out = {
        "m_lmd_beats_copy_reference": metrics.paired_verdict(t1["trained"], t1["copy_reference"], "m_lmd", True),
        "m_lmd_beats_mismatched_audio": metrics.paired_verdict(t1["trained"], t1["mismatched_audio"], "m_lmd", True),
        "lip_sync_beats_copy_reference": metrics.paired_verdict(t1["trained"], t1["copy_reference"], "lip_sync", False),
        "lip_sync_beats_mismatched_audio": metrics.paired_verdict(t1["trained"], t1["mismatched_audio"], "lip_sync", False),
        "style_beats_wo_style_stylesim": metrics.paired_verdict(t2["trained"], t2["wo_style"], "stylesim", False),
        "style_beats_wo_style_f_lmd": metrics.paired_verdict(t2["trained"], t2["wo_style"], "f_lmd", True),
        "dcls_order_both_gt_expression_gt_audio": {
            "verdict": "reached" if mean("both") > mean("expression") > mean("audio") else "missed",
            **{branch: mean(branch) for branch in ("audio", "expression", "both")}},
    }
    leak = r["per_clip"]["identity_leakage"]
    if leak:
        out["probabilistic_leaks_less"] = metrics.paired_verdict(leak["probabilistic"], leak["deterministic"], "margin", True)
    return out


def pool(paths: list[Path]) -> dict:
    """Several runs (other `--seed`s, the same weights) as one larger set of clips: per-clip rows concatenated, the
    table means and the paired targets recomputed over all clips; d_cls (not per clip) is each branch's per-emotion
    value averaged over the runs."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    weights = {r["weights"] for r in runs}
    if len(weights) != 1:
        raise SystemExit(f"fidelity_svp --pool: the runs come from different weights ({sorted(weights)}); pool runs "
                         "of one model")
    per_clip: dict = {}
    for section in ("table1", "table2", "identity_leakage"):
        methods = runs[0]["per_clip"][section]
        per_clip[section] = {m: [row for r in runs for row in r["per_clip"][section][m]] for m in methods}
    dcls = {branch: {e: float(np.mean([r["dcls"][branch][e] for r in runs])) for e in runs[0]["dcls"][branch]}
            for branch in runs[0]["dcls"]}
    tables = {t: {m: mean_rows(rows) for m, rows in per_clip[t].items()} for t in ("table1", "table2")}
    pooled = {"runs": [str(p) for p in paths], "seeds": [r["seed"] for r in runs], "weights": weights.pop(),
              "clips": len(per_clip["table1"]["trained"]), **tables, "dcls": dcls, "per_clip": per_clip}
    pooled["targets"] = targets(pooled)
    return pooled


def default_weights() -> Path:
    from jaxtalk.svp.loading import packaged_weights

    return packaged_weights()


def print_summary(r: dict) -> None:
    for table in ("table1", "table2"):
        for method, row in r[table].items():
            print(f"{table} {method:17s} " + " ".join(f"{k} {v:.4f}" for k, v in row.items()))
    for branch, per in r["dcls"].items():
        print(f"dcls {branch:10s} mean {np.mean([v for v in per.values() if np.isfinite(v)]):.3f}")
    for k, v in r.get("identity_leakage", {}).items():
        print(f"identity_leakage {k:13s} margin {v['margin']:.4f} fraction {v['fraction']:.3f}")
    for k, v in r["targets"].items():
        print(f"target {k}: {v['verdict']}" + (f" ({v['mean_difference']:+.4f} +- {v['standard_error']:.4f} over "
                                                 f"{v['clips']} clips)" if "clips" in v else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="draws the held-out identities, conditions, utterances")
    parser.add_argument("--out", default="outputs/fidelity_svp", help="folder for fidelity_svp.json and PNGs")
    parser.add_argument("--weights", help="trained SVP checkpoint folder (default: the shipped weights)")
    parser.add_argument("--identities", type=int, default=4, help="held-out identities (one condition each)")
    parser.add_argument("--frames", type=int, default=28, help="frames per clip (28 = two 16-frame windows)")
    parser.add_argument("--steps", type=int, default=12, help="sampler steps (0: the config's 25; 12 keeps the "
                        "default run near 15 minutes on 2 cores)")
    parser.add_argument("--cluster-identities", type=int, default=6, help="identities for d_cls / t-SNE")
    parser.add_argument("--style-frames", type=int, default=48, help="frames per style clip for d_cls")
    parser.add_argument("--update-manifest", action="store_true",
                        help="write the figures into the weights' manifest.json (evaluation)")
    parser.add_argument("--pool", nargs="+", metavar="JSON",
                        help="no generation: pool the clips of these fidelity_svp.json runs (other seeds) and write "
                             "OUT/fidelity_svp_pooled.json with the targets over all of them")
    args = parser.parse_args(argv)
    if args.pool:
        r = pool([Path(p) for p in args.pool])
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fidelity_svp_pooled.json").write_text(json.dumps(r, indent=1, default=float))
        print_summary(r)
        print(f"wrote {out / 'fidelity_svp_pooled.json'} ({r['clips']} clips)")
        return 0
    r = run(args)
    print_summary(r)
    if args.update_manifest:
        weights = Path(r["weights"])
        manifest = json.loads((weights / "manifest.json").read_text())
        manifest["evaluation"] = {k: r[k] for k in ("seed", "samples", "frames", "table1", "table2", "dcls",
                                                    "identity_leakage", "regressor_accuracy", "targets")}
        tmp = weights / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1, default=float))
        tmp.replace(weights / "manifest.json")
    print(f"wrote {Path(args.out) / 'fidelity_svp.json'} in {r['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
