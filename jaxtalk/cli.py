"""The `jaxtalk` console entry: `demo`, `generate`, `serve`, `plot`, `doctor`, `convert`, `inspect`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_BAD_INPUT = 2  # the input cannot be used (one line says what and how to fix it)
EXIT_INTERNAL = 1  # an internal failure


def _demo(args: argparse.Namespace) -> int:
    from jaxtalk import config
    from jaxtalk.data.demo import write_demo

    cfg = config.load(args.config, overrides=args.overrides, cls=config.DemoConfig)
    paths = write_demo(
        cfg.output_dir, seed=cfg.seed, num_clips=cfg.num_clips, resolution=cfg.data.resolution,
    )
    config.save(cfg, paths["video"].with_suffix(".yaml"))
    for what, path in paths.items():
        print(f"{what}: {path}")
    if args.svp_config != "none":
        for what, path in _svp_demo(Path(cfg.output_dir), cfg.seed, args.svp_config, args.checkpoint).items():
            print(f"{what}: {path}")
    if args.style2talker_config != "none":
        from jaxtalk.style2talker.pipeline import write_demo as style2talker_demo

        s2t = style2talker_demo(Path(cfg.output_dir), seed=cfg.seed, config=args.style2talker_config)
        print(f"style2talker weights: {s2t.pop('models').source}")
        print(f"style2talker: {s2t.pop('command')}")
        s2t.pop("result")
        for what, path in s2t.items():
            print(f"{what}: {path}")
    return 0


def _svp_demo(out_dir: Path, seed: int, svp_config: str, checkpoint: str | None) -> dict[str, Path]:
    """SVP on a synthetic reference: its first frame, its speech and head keypoints, the style of another
    synthetic clip of the same person with a different emotion. Also writes those inputs, so the printed
    `jaxtalk generate` command reproduces the video."""
    import soundfile
    from PIL import Image

    from jaxtalk.data import synthetic
    from jaxtalk.data.atomic import atomic_path
    from jaxtalk.svp import pipeline

    identity = synthetic.make_identity(seed, 0)
    clip = synthetic.generate_clip(identity, "happy", 3, seed=seed + 1, num_frames=20, fps=25.0, resolution=128)
    style_clip = synthetic.generate_clip(identity, "sad", 3, seed=seed + 2, num_frames=40, fps=25.0,
                                         resolution=64, render_video=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {"reference": out_dir / "svp_reference.png", "audio": out_dir / "svp_audio.wav",
              "kps": out_dir / "svp_kps.npy", "style": out_dir / "svp_style_clip.npz"}
    with atomic_path(inputs["reference"]) as tmp:
        Image.fromarray(clip.frames[0]).save(tmp, format="PNG")
    with atomic_path(inputs["audio"]) as tmp:
        soundfile.write(tmp, clip.audio, clip.sample_rate, format="WAV")
    with atomic_path(inputs["kps"]) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, clip.head_kps)
    with atomic_path(inputs["style"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, expression=style_clip.expression, audio=style_clip.audio, fps=np.float32(style_clip.fps))
    argv = ["--image", str(inputs["reference"]), "--audio", str(inputs["audio"]), "--kps", str(inputs["kps"]),
            "--style", str(inputs["style"]), "--config", svp_config, "--devices", "1",
            "--out", str(out_dir / "svp.mp4")]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    print("svp: jaxtalk generate " + " ".join(argv))
    outputs = _run_generate(_parser().parse_args(["generate", *argv]))
    outputs.pop("summary")
    prior_path = out_dir / "svp_style_prior.npz"
    if outputs.get("prior") is not None:
        pipeline.save_style_prior(prior_path, outputs.pop("prior"))
        outputs["style_prior"] = prior_path
    return {**{f"svp_{k}": v for k, v in inputs.items()}, **{f"svp_{k}": v for k, v in outputs.items()}}


def _style2talker_generate(args: argparse.Namespace) -> dict[str, Any]:
    from jaxtalk.style2talker import pipeline

    if args.emotion is None:
        raise ValueError("--emotion is required with --system style2talker, e.g. --emotion \"She is happy\"")
    if args.style and len(args.style) > 1:
        raise ValueError("--style: Style2Talker takes one art style (a .npy W+ code or a style-bank index)")
    outputs = pipeline.generate(
        args.image, args.audio, args.emotion, args.out, style=pipeline.parse_style(args.style[0] if args.style
                                                                                   else None),
        checkpoint=args.checkpoint, config=args.config, overrides=args.overrides, seed=args.seed, pose=args.pose,
        identity_expression=args.identity_exp, progress=not args.quiet)
    print(f"weights: {outputs['models'].source}")
    frames = outputs["result"].frames
    print(f"video: {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]} at {outputs['result'].fps:g} fps")
    print(f"video: {outputs['video']}\nconfig: {outputs['config']}")
    return {"system": "style2talker", "video": str(outputs["video"]), "config": str(outputs["config"]),
            "weights": outputs["models"].source, "frames": int(frames.shape[0]),
            "height": int(frames.shape[1]), "width": int(frames.shape[2]), "fps": float(outputs["result"].fps)}


def _generate(args: argparse.Namespace) -> int:
    """`generate`: human lines on stdout, or with --json one JSON object there (the human lines go to stderr and
    progress bars are off)."""
    import contextlib
    import json

    if args.json:
        args.quiet = True
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        if args.system == "style2talker":
            summary = _style2talker_generate(args)
        else:
            outputs = _run_generate(args)
            summary = outputs.pop("summary")
            outputs.pop("prior", None)
            for what, path in outputs.items():
                print(f"{what}: {path}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _run_generate(args: argparse.Namespace) -> dict[str, Any]:
    """SVP through the library's `generate()` (which validates every input before any model work)."""
    from jaxtalk.svp import pipeline

    overrides = list(args.overrides)
    if getattr(args, "sampler", None) is not None:
        overrides.append(f"sampler.kind={args.sampler}")
    outputs = pipeline.generate(
        args.image, args.audio, args.out, style=args.style, style_mix=args.style_mix, kps=args.kps,
        checkpoint=args.checkpoint, config=args.config, overrides=overrides, seed=args.seed, steps=args.steps,
        devices=args.devices, vae=args.vae, audio_encoder=args.audio_encoder, progress=not args.quiet)
    models, frames = outputs["models"], outputs["result"].frames
    note = "" if args.checkpoint else " (no --checkpoint: the video shows what untrained weights make, not a face)"
    print(f"weights: {models.source}{note}", flush=True)
    print(f"video: {frames.shape[1]} frames of {frames.shape[2]}x{frames.shape[3]} at {outputs['result'].fps:.3f} "
          "fps", flush=True)
    summary = {"system": "svp", "video": str(outputs["video"]), "config": str(outputs["config"]),
               "weights": models.source, "frames": int(frames.shape[1]), "height": int(frames.shape[2]),
               "width": int(frames.shape[3]), "fps": float(outputs["result"].fps)}
    return {"video": outputs["video"], "config": outputs["config"], "prior": outputs["prior"], "summary": summary}


def _inspect(args: argparse.Namespace) -> int:
    from jaxtalk import interop
    from jaxtalk.interop.convert import inspect

    if args.kinds:
        for name, summary in sorted(interop.KINDS.items()):
            print(f"{name}: {summary}")
        return 0
    if args.checkpoint is None:
        raise ValueError("give a checkpoint file or directory to inspect, or --kinds")
    print("\n".join(inspect(args.checkpoint)))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from jaxtalk.interop.convert import run

    run(args.kind, args.weights, args.config, args.out, args.overwrite)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    import json

    from jaxtalk import doctor

    r = doctor.report()
    print(json.dumps(r, indent=2) if args.json else doctor.format_report(r))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from jaxtalk import plot

    return plot.run(args)


def _serve(args: argparse.Namespace) -> int:
    from jaxtalk import serve

    return serve.serve(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxtalk", description=__doc__)
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not use the persistent XLA compilation cache (~/.cache/jaxtalk/xla, or "
                        "$JAXTALK_COMPILE_CACHE; 'off' there disables it too)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="synthetic clips (mp4 + contact sheet) and an SVP video at the tiny config")
    p.add_argument("--config", default="demo", help="preset name or YAML path")
    p.add_argument("--svp-config", default="svp_tiny", help="SVP preset for the generated video ('none' skips it)")
    p.add_argument("--style2talker-config", default="style2talker_tiny",
                   help="Style2Talker preset for its generated video ('none' skips it)")
    p.add_argument("--checkpoint", help="converted SVP checkpoint folder (default: random weights)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.resolution=256")
    p.set_defaults(fn=_demo)
    p = sub.add_parser("generate", help="talking-head video from a reference image and speech (SVP / V-Express)")
    p.add_argument("--image", required=True, help="reference portrait (png / jpg)")
    p.add_argument("--audio", required=True, help="speech (wav, flac, mp3, or a video with sound)")
    p.add_argument("--out", required=True, help="output .mp4; the resolved config is written beside it (.yaml)")
    p.add_argument("--style", action="append", help=".npz style prior (mu, var) or style clip (expression, "
                   "audio); give twice to interpolate with --style-mix")
    p.add_argument("--style-mix", type=float, default=0.5, help="weight of the second --style (0..1)")
    p.add_argument("--kps", help="head keypoints .npy/.npz in the image's pixels: (8,2) held still or (F,8,2)")
    p.add_argument("--checkpoint", help="saved SVP bundle, a folder of jaxtalk convert outputs, or V-Express's "
                   "model_ckpts/v-express (default: random weights; missing parts are random and the output says so)")
    p.add_argument("--vae", help="with a V-Express checkpoint: sd-vae-ft-mse folder or weights file")
    p.add_argument("--audio-encoder", help="with a V-Express checkpoint: wav2vec2-base-960h folder or weights file")
    p.add_argument("--config", help="preset name or YAML path (default svp_tiny; svp_vexpress with a V-Express "
                   "checkpoint; a converted checkpoint's own config)")
    p.add_argument("--seed", type=int, help="sampling seed (same seed, same video)")
    p.add_argument("--steps", type=int, help="sampler steps")
    p.add_argument("--sampler", choices=("euler", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc"),
                   help="SVP sampler (default: the config's); the multistep solvers need fewer --steps")
    p.add_argument("--devices", type=int, help="use the first N devices (default all; 1 = no mesh); with more "
                   "than one, params are sharded by the config's mesh section")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object (paths, weights, frames, fps) on "
                   "stdout for scripts; the human lines go to stderr")
    p.add_argument("--system", choices=("svp", "style2talker"), default="svp", help="which model generates")
    p.add_argument("--emotion", help="style2talker: emotion text, e.g. \"She is happy, pulling up the lip corners\"")
    p.add_argument("--pose", help="style2talker: head pose .npy, (F,6) angles + translation per frame or (6,)")
    p.add_argument("--identity-exp", help="style2talker: the identity's 64-d 3DMM expression .npy (default zeros)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. guidance.scale=3.5 guidance.audio_weight=2")
    p.set_defaults(fn=_generate)
    p = sub.add_parser("serve", help="web page (gradio) over generate() for SVP and Style2Talker")
    from jaxtalk.serve import add_arguments as add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(fn=_serve)
    p = sub.add_parser("plot", help="pictures: loss curves, style-space t-SNE, frame strips, style "
                       "interpolation, keypoint overlays (PNG)")
    from jaxtalk.plot import add_arguments as add_plot_arguments

    add_plot_arguments(p)
    p.set_defaults(fn=_plot)
    p = sub.add_parser("doctor", help="versions, devices, codecs, face model and shipped weights of this install")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=_doctor)
    p = sub.add_parser("convert", help="a PyTorch checkpoint into a jaxtalk checkpoint directory (strict)")
    p.add_argument("--kind", required=True, help="interop kind (`jaxtalk inspect --kinds` lists them)")
    p.add_argument("--weights", required=True, action="append", help="checkpoint file or folder; several are "
                   "merged into one state dict (e.g. V-Express's denoising_unet.bin and motion_module.bin)")
    p.add_argument("--config", help="the source's own config (.json / .yaml) or a preset name the kind knows "
                   "(default: config.json beside the weights, else inferred from the tensor shapes)")
    p.add_argument("--out", required=True, help="output directory (loads back with interop.checkpoint."
                   "load_converted)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing converted checkpoint")
    p.set_defaults(fn=_convert)
    p = sub.add_parser("inspect", help="what a checkpoint holds: a PyTorch file's tensors (read safely) or a "
                       "converted directory's kind, config and arrays")
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("--kinds", action="store_true", help="list every interop kind with its call convention")
    p.set_defaults(fn=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.no_compile_cache:
        from jaxtalk.compile_cache import enable_compile_cache

        enable_compile_cache()
    from jaxtalk.config import ConfigError
    from jaxtalk.interop import CheckpointError

    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"jaxtalk {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"jaxtalk {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - an internal failure: one line, its own exit code
        if os.environ.get("JAXTALK_TRACEBACK"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"jaxtalk {args.command}: internal error: {type(e).__name__}: {first} (a bug, not your input; "
              "JAXTALK_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
