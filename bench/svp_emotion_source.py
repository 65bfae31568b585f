"""Where does the trained SVP take a clip's emotion from: the audio, the Head-Kps track or the style clip?

    python bench/svp_emotion_source.py --seed 0 --out docs/svp      # 8 held-out identities, ~9 minutes
    python bench/svp_emotion_source.py --seed 0 --identities 24 --ground-truth-only   # the ground truth alone
    python bench/svp_emotion_source.py --seed 0 --identities 24 --combinations emotional   # 2 of 8, ~12 minutes

The synthetic generator ties every emotion to its speech prosody (pitch, range, energy, rate, tremor) and to a
head-pose offset as well as to the face, so at inference the audio and the Head-Kps track of an emotional clip
carry the emotion before any style clip is read. This bench separates the three sources. Each held-out identity
(population of `fidelity_svp.EVAL_SEED`, never seen in training) gets an emotional condition (e, k), a clip in
it, a second utterance in it (the style clip) and a neutral clip; the reference is always the neutral clip's first
frame. The trained model generates one clip per combination of

    audio from the emotional / the neutral clip  x  Head-Kps from the emotional / the neutral clip
    x  style clip emotional / neutral (the style prior of that clip)

and the evaluator's emotion classifier reads the expression regressed from the generated frames. Reported per
combination: the fraction of clips read as e (`emotion_accuracy`) and as neutral (`neutral_rate`), plus the mean
absolute pixel change that switching only the style clip from neutral to emotional causes (`style_effect_px`),
next to the change between the emotional and the neutral ground-truth clips (`ground_truth_gap_px`). The
ground-truth clips are also read after an encode-decode through the model's own VAE (`vae_roundtrip_*`): what
the evaluator can still read from frames that pass through the latent space the denoiser works in, the ceiling
of a perfect denoiser (with the classifier's mean probability of the true emotion, a finer reading than the
count, and the round trip's PSNR).
Writes DIR/svp_emotion_source.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench import fidelity_svp as fid  # noqa: E402
from bench.common import write_results  # noqa: E402
from jaxtalk.data import facs  # noqa: E402
from jaxtalk.eval import load_evaluators, metrics  # noqa: E402

SOURCES = ("emotional", "neutral")


def vae_roundtrip(models) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames (N, H, W, 3) -> the same frames encoded (posterior mean) and decoded by the model's VAE."""
    import jax
    import jax.numpy as jnp

    vae, params = models.vae, models.params["vae"]

    @jax.jit
    def run(frames: jax.Array) -> jax.Array:
        x = frames.astype(jnp.float32) / 127.5 - 1.0
        mean, _ = vae.apply({"params": params}, x.astype(vae.dtype), method="encode")
        img = vae.apply({"params": params}, mean, method="decode").astype(jnp.float32)
        return jnp.round(jnp.clip(img / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)

    return lambda frames: np.asarray(run(frames))


def run(args: argparse.Namespace) -> dict:
    from jaxtalk.svp.pipeline import ClipInputs, StyleClip

    t0 = time.time()
    weights = Path(args.weights) if args.weights else fid.default_weights()
    ev = load_evaluators()
    models, _, _ = fid.load_variants(weights)
    models.config = dataclasses.replace(models.config, sampler=dataclasses.replace(models.config.sampler,
                                                                                   steps=args.steps))
    samples = fid.eval_samples(args.seed, args.identities, args.frames, models.config.video.height)
    fps = samples[0].target.fps
    clip_of = {"emotional": lambda s: s.target, "neutral": lambda s: s.neutral}
    style_of = {"emotional": lambda s: s.style, "neutral": lambda s: s.neutral}
    emotions = list(facs.EMOTIONS)

    def read(frames: np.ndarray) -> int:
        return int(ev.predict_emotion(ev.regress(frames)["expression"]))

    combos, generated = {}, {}
    grids = {"all": list(itertools.product(SOURCES, SOURCES, SOURCES)),
             "emotional": [("emotional", "emotional", style) for style in SOURCES],
             "neutral": [("neutral", "neutral", "neutral")]}
    grid = [] if args.ground_truth_only else grids[args.combinations]
    for audio_src, kps_src, style_src in grid:
        inputs = [ClipInputs(s.neutral.frames[0], clip_of[audio_src](s).audio, clip_of[kps_src](s).head_kps,
                             StyleClip(style_of[style_src](s).expression, style_of[style_src](s).audio, fps))
                  for s in samples]
        frames = fid.generate(models, inputs, args.seed)
        name = f"audio_{audio_src}+kps_{kps_src}+style_{style_src}"
        generated[name] = frames
        read_as = [read(f) for f in frames]
        combos[name] = {
            "emotion_accuracy": float(np.mean([r == emotions.index(s.emotion) for r, s in zip(read_as, samples)])),
            "neutral_rate": float(np.mean([r == emotions.index("neutral") for r in read_as])),
            "read_as": [emotions[r] for r in read_as]}
        print(f"{name:48s} emotion read {combos[name]['emotion_accuracy']:.2f}  neutral "
              f"{combos[name]['neutral_rate']:.2f}", flush=True)
    for audio_src, kps_src in {(a, k) for a, k, st in grid if st == "neutral" and (a, k, "emotional") in grid}:
        a = generated[f"audio_{audio_src}+kps_{kps_src}+style_emotional"].astype(np.float64)
        b = generated[f"audio_{audio_src}+kps_{kps_src}+style_neutral"].astype(np.float64)
        combos[f"audio_{audio_src}+kps_{kps_src}+style_emotional"]["style_effect_px"] = float(np.abs(a - b).mean())
    n = args.frames
    roundtrip = vae_roundtrip(models)
    truth = [s.target.frames[:n] for s in samples]
    through_vae = [roundtrip(f) for f in truth]

    def true_probability(clips: list[np.ndarray]) -> list[float]:  # per clip, the classifier's probability of
        return [float(ev.emotion_probs(ev.regress(f)["expression"])[emotions.index(s.emotion)])  # the true emotion
                for f, s in zip(clips, samples)]

    per_clip = {"emotional_clip_true_probability": true_probability(truth),
                "vae_roundtrip_true_probability": true_probability(through_vae)}
    gt = {
        **{k: float(np.mean(v)) for k, v in per_clip.items()},
        "per_clip": per_clip,
        "vae_roundtrip_psnr": float(np.mean([metrics.psnr(r, f) for r, f in zip(through_vae, truth)])),
        "emotional_clip": float(np.mean([read(s.target.frames[:n]) == emotions.index(s.emotion) for s in samples])),
        "neutral_clip_read_neutral": float(np.mean([read(s.neutral.frames[:n]) == emotions.index("neutral")
                                                    for s in samples])),
        "vae_roundtrip_emotional_clip": float(np.mean([read(r) == emotions.index(s.emotion)
                                                       for r, s in zip(through_vae, samples)])),
        "vae_roundtrip_neutral_read_neutral": float(np.mean([read(roundtrip(s.neutral.frames[:n]))
                                                             == emotions.index("neutral") for s in samples])),
        "ground_truth_gap_px": float(np.mean([np.abs(s.target.frames[:n].astype(np.float64)
                                                     - s.neutral.frames[:n]).mean() for s in samples]))}
    return {"seed": args.seed, "identities": args.identities, "frames": args.frames, "steps": args.steps,
            "weights": str(weights), "conditions": [[s.emotion, s.intensity] for s in samples],
            "combinations": combos, "ground_truth": gt, "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="draws the held-out identities and conditions")
    parser.add_argument("--out", default="outputs/svp_emotion_source", help="folder for the JSON")
    parser.add_argument("--weights", default=None, help="a trained SVP folder (default: the shipped one)")
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--frames", type=int, default=28)
    parser.add_argument("--steps", type=int, default=12, help="DDIM steps (as bench/fidelity_svp.py)")
    parser.add_argument("--combinations", choices=("all", "emotional", "neutral"), default="all",
                        help="all: the 8 combinations; emotional: audio and Head-Kps emotional, the style clip "
                             "emotional and neutral (2 of 8, for more identities in the same time); neutral: every "
                             "input neutral (the chance baseline of reading the condition's emotion)")
    parser.add_argument("--ground-truth-only", action="store_true",
                        help="read only the ground-truth clips and their VAE round trips (no generation; fast)")
    args = parser.parse_args(argv)
    result = run(args)
    write_results(Path(args.out) / "svp_emotion_source.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
