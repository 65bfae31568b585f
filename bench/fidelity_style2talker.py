"""Style2Talker fidelity on synthetic ground truth: the analogue of the paper's Tables 1-2 and Fig. 5.

    python bench/fidelity_style2talker.py --seed 0 --out outputs/bench/fidelity_style2talker

Weights: the shipped ones (`jaxtalk/assets/style2talker_synthetic`) unless `--checkpoint` names a folder.
Evaluators: `jaxtalk.eval.load_evaluators()` (regressor, emotion classifier and identity encoder trained on
ground-truth synthetic data of their own seeds). Evaluation data: identities and utterances of the population
`identity seed = 2000 + 10 * S` (`--seed S`; S = 0 is the evaluation split of the training config), never the
training population (seed 1000) nor the evaluators' (90210).

Writes `<out>/fidelity_style2talker.json` and PNGs (`style_a_examples.png`: reference, ground truth, full,
w/o refinement, w/o flow warp; `art_styles.png`: every art style against its filter of the ground truth;
`style_e_emotions.png`: generated vs ground-truth mouth and emotion coefficients).

JSON:
  style_e: emotion_accuracy (texts in training phrasings, held-out identities and utterances),
           paraphrase_emotion_accuracy (held-out phrasings), intensity_order (fraction of (identity, emotion)
           where the generated expression's distance from the neutral-text generation grows 1 < 2 < 3),
           lip_sync (mouth-control correlation of generated vs ground-truth coefficients, `metrics.
           mouth_coefficient_correlation`), lip_sync_video / lip_sync_video_gt (Pearson correlation of the mouth
           opening read by the evaluation regressor's landmarks with the true mouth opening: for frames Style-A
           renders from the generated coefficients, and for the ground-truth frames), lip_sync_ratio
           (= lip_sync_video / lip_sync_video_gt: what the generated video scores relative to what ground truth
           scores under the same regressor), video_emotion_accuracy / video_emotion_accuracy_gt (the emotion
           classifier on the regressor's coefficients of those videos / of the ground-truth frames), video_clips,
           lip_sync_video_gt_driven / video_emotion_accuracy_gt_driven (the same two reads of Style-A driven by
           the clips' ground-truth coefficients: what the renderer alone carries, apart from Style-E),
           audio_only (no text: zero text feature), text_only (silent audio), diversity (std over sampling
           seeds, also relative to the ground truth's std over clips);
  style_a: full | wo_refinement | wo_flow_warp: ssim, psnr, f_lmd (reconstruction of ground-truth frames from
           another frame of the identity + ground-truth coefficients), upper_face_psnr (PSNR inside the box of
           the true eyes and brows, `metrics.upper_face_box`: the pixels that carry the emotion besides the
           mouth, read without any trained network), identity (identity-encoder cosine of
           output vs reference), style_strength (1 - |S(out) - S(target)| / |S(photo) - S(target)| with S the
           `art_styles.style_statistics` and target the filtered ground truth; 1 = target statistics reached),
           content (SSIM of the stylised output vs the filtered ground truth). The ablations switch the module
           off in the trained model at evaluation time (refinement SFT outputs zero; flow field zero, i.e. an
           identity warp); they are not separately trained models.
  classifier_accuracy: the emotion classifier on the ground-truth coefficients of the same clips (and its
           manifest's held-out accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxtalk.data import facs, synthetic
from jaxtalk.data.atomic import atomic_path
from jaxtalk.eval import load_evaluators, metrics
from jaxtalk.eval.data import clip_landmarks
from jaxtalk.style2talker import art_styles
from jaxtalk.style2talker.emotion_phrases import CONDITIONS, descriptions
from jaxtalk.style2talker.motion_generator import MotionGenerator
from jaxtalk.style2talker.pipeline import Style2TalkerPipeline, to_model_image
from jaxtalk.style2talker.refinement import CalibrationNet
from jaxtalk.training import style2talker_data as sd

ABLATIONS = ("full", "wo_refinement", "wo_flow_warp")


def load(checkpoint: str | None):
    if checkpoint:
        from jaxtalk.style2talker.models import load_models

        return load_models(checkpoint)
    from jaxtalk.style2talker.shipped import load_shipped

    return load_shipped()


def _ablate(keep_refinement: jax.Array, keep_flow: jax.Array):
    """Method interceptor scaling the refinement's SFT outputs and the motion generator's flow field by runtime
    scalars (0 switches the part off: SFT scale/shift zero = f unchanged; zero flow = identity warp), so the full
    model and both ablations share one compiled function."""

    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        if isinstance(context.module, CalibrationNet):
            return [o * keep_refinement.astype(o.dtype) for o in out]
        if isinstance(context.module, MotionGenerator):
            return {**out, "flow_field": out["flow_field"] * keep_flow.astype(out["flow_field"].dtype)}
        return out

    return intercept


def make_renderer(models):
    """(reference uint8 (H, W, 3), windows (N, 27, 73), style index, degree, ablation) -> uint8 frames (N, S, S, 3),
    in batches of 8 through one compiled function."""
    sa, psp = models.modules["style_a"], models.modules["psp"]
    cfg = models.config
    bank = jnp.asarray(models.style_bank)
    a = cfg.style_a

    @jax.jit
    def render(params, psp_vars, ref, motion_ref, windows, style_idx, degree, keep_refinement, keep_flow):
        to_w = lambda z: sa.apply({"params": params}, z, method="zplus2wplus")
        psp_in = jax.image.resize(ref, (ref.shape[0], cfg.psp.input_size, cfg.psp.input_size, 3), "linear")
        w_id = to_w(psp.apply(psp_vars, psp_in))
        w_ex = to_w(bank[style_idx])
        style = jnp.concatenate([w_ex[:, :7], w_id[:, 7:]], axis=1)
        with nn.intercept_methods(_ablate(keep_refinement, keep_flow)):
            out = sa.apply({"params": params}, ref, style, motion_ref, windows, degree)
        return jnp.round((jnp.clip(out, -1, 1) + 1) * 127.5).astype(jnp.uint8)

    def run(ref_u8: np.ndarray, windows: np.ndarray, style: int, degree: float, ablation: str = "full",
            batch: int = 8) -> np.ndarray:
        ref = to_model_image(ref_u8, a.in_size)
        motion_ref = to_model_image(ref_u8, a.motion_input_size)
        keep_ref = np.float32(ablation != "wo_refinement")
        keep_flow = np.float32(ablation != "wo_flow_warp")
        out = []
        for i in range(0, len(windows), batch):
            w = windows[i:i + batch]
            n = len(w)
            w = np.concatenate([w, np.repeat(w[-1:], batch - n, 0)]) if n < batch else w
            got = render(models.params["style_a"], models.params["psp"], np.repeat(ref, batch, 0),
                         np.repeat(motion_ref, batch, 0), w,
                         np.full(batch, style, np.int32), np.full(batch, degree, np.float32), keep_ref, keep_flow)
            out.append(np.asarray(got)[:n])
        return np.concatenate(out)

    return run


def _strip(rows: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def _save_png(path: Path, image: np.ndarray, scale: int = 2) -> None:
    img = Image.fromarray(image)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def evaluate_style_e(models, ev, split: sd.SplitConfig, seed: int, num_seeds: int, diversity_clips: int) -> dict:
    pipe = Style2TalkerPipeline(models, progress=False)
    ids = synthetic.make_identities(split.num_identities, split.identity_seed)
    n = split.num_frames
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    feat_cache: dict[str, np.ndarray] = {}

    def text_feature(text: str) -> np.ndarray:
        if text not in feat_cache:
            feat_cache[text] = pipe.text_feature(text)
        return feat_cache[text]

    zero_text = np.zeros_like(text_feature("She is calm."))
    rows = []
    for i, ident in enumerate(ids):
        ref_exp = synthetic.generate_clip(ident, "neutral", 1, split.utterance_seed, num_frames=n, fps=split.fps,
                                          render_video=False).expression[0]
        for emotion, intensity in CONDITIONS:
            clip = synthetic.generate_clip(ident, emotion, intensity, split.utterance_seed, num_frames=n,
                                           fps=split.fps, render_video=False)
            seen = descriptions(emotion, intensity, ident.gender, "train")
            held = descriptions(emotion, intensity, ident.gender, "heldout")
            rows.append({"identity": i, "emotion": emotion, "intensity": intensity, "clip": clip, "ref": ref_exp,
                         "seen": seen[int(rng.integers(len(seen)))], "held": held[int(rng.integers(len(held)))]})
    silent = np.zeros_like(rows[0]["clip"].audio)
    gen: dict[str, list] = {k: [] for k in ("seen", "held", "audio_only", "text_only_seen", "text_only_held")}
    for k, r in enumerate(rows):
        s = seed * 100003 + k
        clip = r["clip"]
        gen["seen"].append(pipe.expression(clip.audio, text_feature(r["seen"]), r["ref"], s))
        gen["held"].append(pipe.expression(clip.audio, text_feature(r["held"]), r["ref"], s))
        gen["audio_only"].append(pipe.expression(clip.audio, zero_text, r["ref"], s))
        gen["text_only_seen"].append(pipe.expression(silent, text_feature(r["seen"]), r["ref"], s))
        gen["text_only_held"].append(pipe.expression(silent, text_feature(r["held"]), r["ref"], s))
    target = np.array([facs.EMOTIONS.index(r["emotion"]) for r in rows])
    gt = np.stack([r["clip"].expression[:len(gen["seen"][0])] for r in rows])

    def acc(seqs, labels=target) -> float:
        return metrics.emotion_accuracy(ev.predict_emotion(np.stack(seqs)), labels)

    def lips(seqs) -> float:
        return float(np.mean([metrics.mouth_coefficient_correlation(g, t) for g, t in zip(seqs, gt)]))

    # intensity ordering: one utterance per identity (its neutral clip), texts of intensity 1, 2, 3 and neutral
    ordered, total = 0, 0
    for i, ident in enumerate(ids):
        base = synthetic.generate_clip(ident, "neutral", 1, split.utterance_seed, num_frames=n, fps=split.fps,
                                       render_video=False)
        s = seed * 100003 + 50000 + i
        neutral = pipe.expression(base.audio, text_feature(descriptions("neutral", 1, ident.gender, "train")[0]),
                                  base.expression[0], s).mean(0)
        for emotion in facs.EMOTIONS[1:]:
            strength = [np.linalg.norm(pipe.expression(base.audio, text_feature(
                descriptions(emotion, k, ident.gender, "train")[0]), base.expression[0], s).mean(0) - neutral)
                for k in (1, 2, 3)]
            ordered += int(strength[0] < strength[1] < strength[2])
            total += 1
    # diversity: the same inputs under several sampling seeds
    stds = []
    for r in rows[:diversity_clips]:
        outs = np.stack([pipe.expression(r["clip"].audio, text_feature(r["seen"]), r["ref"], seed * 7919 + j)
                         for j in range(num_seeds)])
        stds.append(outs.std(axis=0).mean())
    gt_std = float(gt.std(axis=0).mean())
    out = {
        "emotion_accuracy": acc(gen["seen"]),
        "paraphrase_emotion_accuracy": acc(gen["held"]),
        "intensity_order": ordered / max(total, 1),
        "lip_sync": lips(gen["seen"]),
        "audio_only": {"emotion_accuracy": acc(gen["audio_only"]), "lip_sync": lips(gen["audio_only"])},
        "text_only": {"emotion_accuracy": acc(gen["text_only_seen"]),
                      "paraphrase_emotion_accuracy": acc(gen["text_only_held"]),
                      "lip_sync": lips(gen["text_only_seen"])},
        "diversity": float(np.mean(stds)),
        "diversity_relative_to_gt_std": float(np.mean(stds)) / gt_std,
        "num_sequences": len(rows),
        "classifier_accuracy_gt": metrics.emotion_accuracy(ev.predict_emotion(gt), target),
    }
    per_emotion = {}
    for e in facs.EMOTIONS:
        idx = [k for k, r in enumerate(rows) if r["emotion"] == e]
        per_emotion[e] = {"seen": acc([gen["seen"][k] for k in idx], target[idx]),
                          "paraphrase": acc([gen["held"][k] for k in idx], target[idx])}
    out["per_emotion_accuracy"] = per_emotion
    return out, rows, gen


def evaluate_style_a(models, ev, split: sd.SplitConfig, seed: int, frames_per_clip: int, out_dir: Path) -> dict:
    render = make_renderer(models)
    ids = synthetic.make_identities(split.rendered_identities, split.identity_seed)
    degree = float(models.config.inference.style_degree)
    radius = models.config.inference.radius
    results = {ab: {k: [] for k in ("ssim", "psnr", "f_lmd", "upper_face_psnr", "identity", "style_strength",
                                    "content")}
               for ab in ABLATIONS}
    examples, style_rows = [], []
    for i, ident in enumerate(ids):
        conds = sd.identity_conditions(split, i, split.rendered_conditions)
        clips = [synthetic.generate_clip(ident, *CONDITIONS[c], split.utterance_seed, num_frames=split.num_frames,
                                         fps=split.fps, resolution=split.resolution) for c in conds]
        for j, clip in enumerate(clips):
            ref = clips[(j + 1) % len(clips)].frames[0]  # another clip of the identity as the reference
            picks = np.linspace(0, split.num_frames - 1, frames_per_clip).round().astype(int)
            windows = sd.coefficient_windows(clip.expression, clip.pose, picks, radius)
            gt = clip.frames[picks]
            gt_lm = clip_landmarks(ident, clip, split.resolution)[picks]
            ref_emb = ev.identity_embedding(ref)
            for ab in ABLATIONS:
                out = render(ref, windows, 0, degree, ab)
                row = ev.frame_metrics(out, gt, gt_lm)
                r = results[ab]
                r["ssim"].append(row["ssim"])
                r["psnr"].append(row["psnr"])
                r["f_lmd"].append(row["f_lmd"])
                r["upper_face_psnr"].append(metrics.region_psnr(out, gt, metrics.upper_face_box(gt_lm)))
                r["identity"].append(metrics.identity_similarity(ev.identity_embedding(out), ref_emb))
                if j == 0:  # art styles on the first clip of every identity
                    strengths, contents = [], []
                    for k in range(1, len(art_styles.STYLES)):
                        styled = render(ref, windows, k, 1.0, ab)
                        target = art_styles.stylise(gt, k, 1.0)
                        s_out = art_styles.style_statistics(styled.astype(np.float32) / 255.0)
                        s_tgt = art_styles.style_statistics(target)
                        s_photo = art_styles.style_statistics(gt.astype(np.float32) / 255.0)
                        gap = np.linalg.norm(s_photo - s_tgt, axis=-1)
                        strengths.append(float(np.mean(1.0 - np.linalg.norm(s_out - s_tgt, axis=-1)
                                                       / np.maximum(gap, 1e-6))))
                        contents.append(metrics.ssim(styled, np.round(target * 255).astype(np.uint8)))
                        if ab == "full" and i < 3:
                            style_rows.append([gt[0], np.round(target[0] * 255).astype(np.uint8), styled[0]])
                    r["style_strength"].append(float(np.mean(strengths)))
                    r["content"].append(float(np.mean(contents)))
                if j == 0 and i < 4:
                    examples.append((ab, ref, gt, out))
    summary = {ab: {k: float(np.mean(v)) for k, v in r.items()} for ab, r in results.items()}
    # figure: per identity, reference | ground truth frames | full | w/o refinement | w/o flow warp
    rows = []
    for i in range(0, len(examples), len(ABLATIONS)):
        group = examples[i:i + len(ABLATIONS)]
        ref, gt = group[0][1], group[0][2][:4]
        rows.append(np.concatenate([ref, *gt, *[o for _, _, _, o in group for o in o[:4]]], axis=1))
    if rows:
        _save_png(out_dir / "style_a_examples.png", np.concatenate(rows, axis=0))
    if style_rows:
        _save_png(out_dir / "art_styles.png", _strip([np.stack(r) for r in style_rows]))
    return summary


def coefficient_figure(rows, gen, path: Path) -> None:
    from jaxtalk.data.demo import plot_curves

    jaw = facs.CONTROL_INDEX["jaw_open"]
    panels = []
    for k in range(0, min(len(rows), 22 * 2), 11)[:4]:
        r = rows[k]
        g = facs.controls_from_expression(gen["seen"][k])
        t = facs.controls_from_expression(r["clip"].expression[:len(g)])
        panels.append(plot_curves(np.stack([t[:, jaw], g[:, jaw]]), 420, 110,
                                  f"jaw_open: gt vs generated ({r['emotion']} {r['intensity']})"))
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(panels, axis=0)).save(tmp, format="PNG")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="evaluation population: identity seed 2000 + 10 S")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--checkpoint", help="Style2Talker checkpoint folder (default: the shipped weights)")
    parser.add_argument("--evaluators", help="evaluator weights folder (default: shipped in jaxtalk.eval)")
    parser.add_argument("--identities", type=int, default=8, help="held-out identities (22 conditions each)")
    parser.add_argument("--frames", type=int, default=50, help="frames per Style-E clip (25 fps)")
    parser.add_argument("--style-a-identities", type=int, default=6)
    parser.add_argument("--style-a-clips", type=int, default=3, help="rendered clips per Style-A identity")
    parser.add_argument("--style-a-frames", type=int, default=12, help="frames per rendered clip")
    parser.add_argument("--video-clips", type=int, default=24,
                        help="clips rendered for the video lip-sync and video emotion accuracy")
    parser.add_argument("--seeds", type=int, default=5, help="sampling seeds for diversity")
    parser.add_argument("--diversity-clips", type=int, default=16)
    args = parser.parse_args(argv)
    if args.seed < 0:
        print("error: --seed must be >= 0", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from jaxtalk.compile_cache import enable_compile_cache

    enable_compile_cache()
    t0 = time.perf_counter()
    models = load(args.checkpoint)
    ev = load_evaluators(args.evaluators)
    base = 2000 + 10 * args.seed
    split = sd.SplitConfig.eval(identity_seed=base, utterance_seed=base + 1, num_identities=args.identities,
                                rendered_identities=args.style_a_identities,
                                rendered_conditions=args.style_a_clips, seconds=args.frames / 25.0)
    style_e, rows, gen = evaluate_style_e(models, ev, split, args.seed, args.seeds, args.diversity_clips)
    t_e = time.perf_counter() - t0

    # video lip-sync: Style-A renders the generated (and the ground-truth) coefficients, the regressor reads them
    render = make_renderer(models)
    degree = float(models.config.inference.style_degree)
    picks = np.linspace(0, len(rows) - 1, args.video_clips).round().astype(int)
    reads = {"generated": [], "ground_truth": [], "gt_driven": []}  # (lip-sync, emotion read right) per clip
    for k in picks:
        r = rows[k]
        ident = synthetic.make_identity(split.identity_seed, r["identity"])
        clip = synthetic.generate_clip(ident, r["emotion"], r["intensity"], split.utterance_seed,
                                       num_frames=split.num_frames, fps=split.fps, resolution=split.resolution)
        ref = synthetic.generate_clip(ident, "neutral", 1, split.utterance_seed, num_frames=1,
                                      resolution=split.resolution).frames[0]
        frames_idx = np.arange(len(gen["seen"][k]))
        true_open = metrics.mouth_opening(clip_landmarks(ident, clip, split.resolution)[frames_idx], split.resolution)
        label = facs.EMOTIONS.index(r["emotion"])

        def driven(expression, clip=clip, frames_idx=frames_idx, ref=ref):
            """Style-A's frames for these coefficients on the clip's pose."""
            windows = sd.coefficient_windows(expression, clip.pose[frames_idx], frames_idx,
                                             models.config.inference.radius)
            return render(ref, windows, 0, degree)

        # Style-E's coefficients rendered, the real frames, and Style-A driven by the clip's own coefficients
        # (what the renderer alone carries, apart from Style-E); the evaluators read mouth and emotion back
        for name, frames in (("generated", driven(gen["seen"][k])), ("ground_truth", clip.frames[frames_idx]),
                             ("gt_driven", driven(clip.expression[frames_idx]))):
            read = ev.analyse(frames)
            reads[name].append((metrics.pearson(read["mouth_opening"], true_open),
                                int(ev.predict_emotion(read["expression"])) == label))
    lip = {name: float(np.mean([sync for sync, _ in v])) for name, v in reads.items()}
    emo = {name: float(np.mean([right for _, right in v])) for name, v in reads.items()}
    style_e["lip_sync_video"] = lip["generated"]
    style_e["lip_sync_video_gt"] = lip["ground_truth"]
    style_e["lip_sync_ratio"] = style_e["lip_sync_video"] / max(style_e["lip_sync_video_gt"], 1e-6)
    style_e["video_emotion_accuracy"] = emo["generated"]
    style_e["video_emotion_accuracy_gt"] = emo["ground_truth"]
    style_e["video_clips"] = len(picks)
    style_e["lip_sync_video_gt_driven"] = lip["gt_driven"]
    style_e["video_emotion_accuracy_gt_driven"] = emo["gt_driven"]
    style_a = evaluate_style_a(models, ev, split, args.seed, args.style_a_frames, out_dir)
    coefficient_figure(rows, gen, out_dir / "style_e_emotions.png")
    result = {
        "style_e": style_e,
        "style_a": style_a,
        "classifier_accuracy": style_e.pop("classifier_accuracy_gt"),
        "classifier_heldout_manifest": ev.manifest.get("heldout", {}).get("emotion"),
        "weights": models.source,
        "seed": args.seed,
        "eval_split": {"identity_seed": split.identity_seed, "utterance_seed": split.utterance_seed,
                       "identities": args.identities, "frames": args.frames},
        "wall_seconds": {"style_e": round(t_e, 1), "total": round(time.perf_counter() - t0, 1)},
        "devices": [str(d) for d in jax.devices()],
    }
    path = out_dir / "fidelity_style2talker.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    print(json.dumps({"style_e": {k: v for k, v in style_e.items() if k != "per_emotion_accuracy"},
                      "style_a": style_a, "classifier_accuracy": result["classifier_accuracy"]}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
