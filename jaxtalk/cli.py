"""The `jaxtalk` console entry: `demo`, `generate`, `prepare`, `prepare-dataset`, `serve`, `plot`, `doctor`,
`convert`, `inspect`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    from jaxtalk.style2talker import pipeline as style2talker
    from jaxtalk.svp import pipeline as svp

    # Both products' demos are library functions with one call convention; "trained" / "shipped" = default weights.
    products = [("svp", svp.write_demo, args.svp_config, "trained", args.checkpoint),
                ("style2talker", style2talker.write_demo, args.style2talker_config, "shipped", None)]
    for name, write, choice, default, checkpoint in products:
        if choice == "none":
            continue
        out = write(Path(cfg.output_dir), seed=cfg.seed, config=None if choice == default else choice,
                    checkpoint=checkpoint)
        print(f"{name} weights: {out.pop('models').source}")
        for line in out.pop("command").splitlines():
            print(f"{name}: {line}")
        out.pop("result")
        for what, path in out.items():
            print(f"{what}: {path}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from jaxtalk.faces import prepare

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder; choose a new folder or delete it")
    common = dict(audio=args.audio, driving_video=args.driving, face_index=args.face_index,
                  min_score=args.min_face_score)
    if args.system == "svp":
        prep = prepare.prepare_svp(args.image, retarget_strategy=args.retarget, size=args.size or 512, **common)
    else:
        if args.retarget:
            raise ValueError("--retarget: only for --system svp (Style2Talker takes head pose, not keypoints)")
        prep = prepare.prepare_style2talker(args.image, size=args.size or 256, **common)
    paths = prepare.write_bundle(prep, out, debug_dir=args.debug_dir)
    a = prep.analysis
    print(f"face: box [{', '.join(f'{v:.0f}' for v in a.box)}] score {a.score:.2f} pose (deg) "
          f"{', '.join(f'{np.degrees(v):.1f}' for v in a.pose[:3])}")
    for note in prep.meta.get("notes", []):
        print(f"note: {note}")
    for what, path in paths.items():
        print(f"{what}: {path}")
    print(f"next: jaxtalk generate --image {out} --out video.mp4" + ("" if prep.audio is not None else " --audio SPEECH")
          + (" --system style2talker --emotion TEXT" if args.system == "style2talker" else ""))
    return 0


def _prepare_dataset(args: argparse.Namespace) -> int:
    from jaxtalk.faces.dataset import REPORT_NAME, prepare_dataset

    report = prepare_dataset(args.video_dir, args.out, size=args.size, coeffs=args.coeffs,
                             zero_expression=args.zero_expression, workers=args.workers,
                             min_score=args.min_face_score, progress=not args.quiet)
    print(f"clips: {len(report['kept'])} of {report['videos']} videos kept ({report['resumed']} already there), "
          f"{len(report['skipped'])} skipped")
    for s in report["skipped"]:
        print(f"skipped: {s['video']}: {s['reason']}")
    print(f"dataset: {Path(args.out) / 'index.json'}\nreport: {Path(args.out) / REPORT_NAME}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    """`jaxtalk generate`: the arguments handed to the product's library `generate()`, its lines printed."""
    import contextlib
    import json

    from jaxtalk import distributed

    distributed.initialize(distributed.config_from_args(args))
    if args.json:  # one JSON object on stdout for scripts; the human lines go to stderr, no progress bars
        args.quiet = True
    main = distributed.is_main()  # a multi-process run: process 0 alone prints, writes the video and --debug-dir
    note = (lambda line: print(line, flush=True)) if main else (lambda line: None)
    faces = dict(driving=args.driving, face=args.face, face_index=args.face_index,
                 min_face_score=args.min_face_score, debug_dir=args.debug_dir, paste_back=args.paste_back)
    common = dict(checkpoint=args.checkpoint, config=args.config, overrides=args.overrides, seed=args.seed,
                  progress=not args.quiet and distributed.is_main(), on_note=note)
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        if args.system == "style2talker":
            from jaxtalk.style2talker import pipeline

            if args.emotion is None:
                raise ValueError("--emotion is required with --system style2talker, e.g. --emotion \"She is happy\"")
            if args.style and len(args.style) > 1:
                raise ValueError("--style: Style2Talker takes one art style (a .npy W+ code or a style-bank index)")
            out = pipeline.generate(args.image, args.audio, args.emotion, args.out,
                                    style=pipeline.parse_style(args.style[0] if args.style else None),
                                    pose=args.pose, identity_expression=args.identity_exp,
                                    text_encoder=args.text_encoder, **faces, **common)
        else:
            from jaxtalk.svp import pipeline

            if args.style and len(args.style) > 2:
                raise ValueError("--style: give one style file, or two to mix with --style-mix")
            sampler, steps = pipeline.sampling_choice(args.sampler, args.steps, fast=args.fast)
            out = pipeline.generate(args.image, args.audio, args.out, style=args.style, style_mix=args.style_mix,
                                    kps=args.kps, retarget=args.retarget, steps=steps, sampler=sampler,
                                    devices=args.devices, vae=args.vae, audio_encoder=args.audio_encoder,
                                    **faces, **common)
        summary = out["summary"]
        if not main:
            return 0
        untrained = " (--config without --checkpoint: untrained weights, the video is not a face)" if (
            args.checkpoint is None and args.config is not None and args.system == "svp") else ""
        print(f"weights: {summary['weights']}{untrained}")
        print(f"video: {summary['frames']} frames of {summary['height']}x{summary['width']} at {summary['fps']:g} fps")
        for what in ("video", "config"):
            if what in out:
                print(f"{what}: {out[what]}")
    if args.json:
        print(json.dumps(summary))
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


def _inspect(args: argparse.Namespace) -> int:
    from jaxtalk import interop
    from jaxtalk.interop.convert import inspect

    if args.kinds:
        from jaxtalk.loading import PRODUCT_KINDS

        for name, summary in sorted({**interop.KINDS, **PRODUCT_KINDS}.items()):
            print(f"{name}: {summary}")
        return 0
    if args.checkpoint is None:
        raise ValueError("give a checkpoint file or directory to inspect, or --kinds")
    print("\n".join(inspect(args.checkpoint)))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from jaxtalk.interop.convert import run
    from jaxtalk.loading import PRODUCT_KINDS, import_product

    if args.kind in PRODUCT_KINDS:
        if len(args.weights) != 1:
            raise ValueError(f"--kind {args.kind}: give one --weights folder")
        import_product(args.kind, args.weights[0], args.out, config=args.config, vae=args.vae,
                       audio_encoder=args.audio_encoder, overwrite=args.overwrite)
        return 0
    if args.vae or args.audio_encoder:
        raise ValueError(f"--vae / --audio-encoder: only --kind vexpress takes them, not {args.kind}")
    run(args.kind, args.weights, args.config, args.out, args.overwrite)
    return 0


def _face_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--driving", help="driving video: per-frame head keypoints (svp) / pose (style2talker), and "
                   "its sound when --audio is not given")
    p.add_argument("--retarget", choices=("fix_face", "no_retarget", "offset_retarget", "naive_retarget"),
                   help="svp: how the driving keypoints fit the reference face (V-Express's strategies; default "
                   "fix_face without --driving, offset_retarget with it)")
    p.add_argument("--face-index", type=int, help="which face when the photo has several (0 = leftmost)")
    p.add_argument("--min-face-score", type=float, default=0.5, help="face detector confidence threshold")
    p.add_argument("--debug-dir", help="write overlay.png (box, landmarks, keypoints on the photo) and "
                   "crop_overlay.png here")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxtalk", description=__doc__)
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not use the persistent XLA compilation cache (~/.cache/jaxtalk/xla, or "
                        "$JAXTALK_COMPILE_CACHE; 'off' there disables it too)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="synthetic clips (mp4 + contact sheet) and an SVP video at the tiny config")
    p.add_argument("--config", default="demo", help="preset name or YAML path")
    p.add_argument("--svp-config", default="trained", help="'trained' (the shipped weights), a preset name for "
                   "random weights at that config, or 'none' to skip the SVP video")
    p.add_argument("--style2talker-config", default="shipped",
                   help="Style2Talker weights for its videos: 'shipped' (trained on synthetic data, in the package), "
                   "a preset for random weights (e.g. style2talker_tiny), or 'none' to skip it")
    p.add_argument("--checkpoint", help="converted SVP checkpoint folder (default: the shipped trained weights)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.resolution=256")
    p.set_defaults(fn=_demo)
    p = sub.add_parser("generate", help="talking-head video from a reference image and speech (SVP / V-Express)")
    p.add_argument("--image", required=True, help="reference portrait (png / jpg; the face is found, cropped and "
                   "keypointed automatically), or a folder written by `jaxtalk prepare`")
    p.add_argument("--audio", help="speech (wav, flac, mp3, m4a, ogg, or a video with sound); default: the "
                   "--driving video's sound or the prepared folder's audio.wav")
    p.add_argument("--out", required=True, help="output .mp4; the resolved config is written beside it (.yaml)")
    p.add_argument("--style", action="append", help=".npz style prior (mu, var) or style clip (expression, "
                   "audio); give twice to interpolate with --style-mix")
    p.add_argument("--style-mix", type=float, default=0.5, help="weight of the second --style (0..1)")
    p.add_argument("--kps", help="head keypoints .npy/.npz in the image's pixels: (8,2) held still or (F,8,2)")
    p.add_argument("--checkpoint", help="saved SVP bundle, a folder of jaxtalk convert outputs, or V-Express's "
                   "model_ckpts/v-express (default: the shipped model trained on the synthetic faces; with a V-Express "
                   "folder, missing parts are random and the output says so)")
    p.add_argument("--vae", help="with a V-Express checkpoint: sd-vae-ft-mse folder (HF layout) or weights file, "
                   "or a model id in the local Hugging Face cache (e.g. stabilityai/sd-vae-ft-mse)")
    p.add_argument("--audio-encoder", help="with a V-Express checkpoint: wav2vec2-base-960h folder (HF layout) or "
                   "weights file, or a model id in the local Hugging Face cache")
    p.add_argument("--config", help="preset name or YAML path for random weights (e.g. svp_tiny); default: the "
                   "checkpoint's own config, svp_vexpress with a V-Express folder")
    p.add_argument("--seed", type=int, help="sampling seed (same seed, same video)")
    p.add_argument("--steps", type=int, help="sampler steps")
    p.add_argument("--sampler", choices=("euler", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc"),
                   help="SVP sampler (default: the config's); the multistep solvers need fewer --steps")
    p.add_argument("--fast", action="store_true", help="SVP: the sampler and step count of the svp_synthetic_fast "
                   "preset (the fewest steps measured within noise of 25-step Euler on the shipped model; "
                   "--sampler / --steps still override)")
    p.add_argument("--devices", type=int, help="use the first N devices (default all; 1 = no mesh); with more "
                   "than one, params are sharded by the config's mesh section")
    p.add_argument("--json", action="store_true", help="print one JSON object (paths, weights, frames, fps) on "
                   "stdout for scripts; the human lines go to stderr")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--system", choices=("svp", "style2talker"), default="svp", help="which model generates")
    from jaxtalk import distributed

    distributed.add_arguments(p)
    p.add_argument("--emotion", help="style2talker: emotion text, e.g. \"She is happy, pulling up the lip corners\"")
    p.add_argument("--pose", help="style2talker: head pose .npy, (F,6) angles + translation per frame or (6,)")
    p.add_argument("--identity-exp", help="style2talker: the identity's 64-d 3DMM expression .npy (default zeros)")
    p.add_argument("--text-encoder", help="style2talker: a CLIP text tower instead of the checkpoint's: a folder in "
                   "Hugging Face layout (CLIPTextModelWithProjection), a weights file, or a model id in the local "
                   "Hugging Face cache")
    _face_args(p)
    p.add_argument("--face", choices=("auto", "on", "off"), default="auto",
                   help="face analysis of a raw photo without --kps: auto (crop + keypoints when a face is found, "
                   "else the photo as given), on (no face is an error), off (photo as given)")
    p.add_argument("--paste-back", action="store_true", help="write the generated face back into the original "
                   "photo (feathered), so the video shows the full picture")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. guidance.scale=3.5 guidance.audio_weight=2")
    p.set_defaults(fn=_generate)
    p = sub.add_parser("prepare", help="face crop, keypoints / pose and audio from a raw photo (+ speech or a "
                       "driving video), written as a folder `generate --image` accepts")
    p.add_argument("--image", required=True, help="portrait photo (png / jpg / ...)")
    p.add_argument("--audio", help="speech in any common format (or a video with sound)")
    p.add_argument("--out", required=True, help="new (or empty) output folder")
    p.add_argument("--system", choices=("svp", "style2talker"), default="svp", help="which model the inputs are for")
    p.add_argument("--size", type=int, help="crop size in pixels (default 512 for svp, 256 for style2talker)")
    _face_args(p)
    p.set_defaults(fn=_prepare)
    p = sub.add_parser("prepare-dataset", help="a folder of talking-head videos (MEAD / HDTF layouts or plain "
                       "mp4s) -> clip records + index.json for training")
    p.add_argument("video_dir", help="folder of videos (searched recursively)")
    p.add_argument("--out", required=True, help="dataset folder (created; rerunning resumes)")
    p.add_argument("--size", type=int, default=256, help="square crop size in pixels")
    p.add_argument("--coeffs", help="folder of Deep3DFaceRecon 3DMM coefficients per video (.mat with 'coeff' "
                   "(F, 257) as StyleTalk uses, or .npy), same relative paths as the videos")
    p.add_argument("--zero-expression", action="store_true", help="no coefficient files: write zero expressions")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--min-face-score", type=float, default=0.5, help="face detector confidence threshold")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_prepare_dataset)
    p = sub.add_parser("convert", help="a PyTorch checkpoint (one component, or a whole V-Express / Style2Talker "
                       "folder) into a jaxtalk bundle (strict)")
    p.add_argument("--kind", required=True, help="interop kind, or vexpress / style2talker for a whole product's "
                   "checkpoint folder (`jaxtalk inspect --kinds` lists them)")
    p.add_argument("--weights", required=True, action="append", help="checkpoint file or folder; several are "
                   "merged into one state dict (e.g. V-Express's denoising_unet.bin and motion_module.bin)")
    p.add_argument("--config", help="the source's own config (.json / .yaml) or a preset name the kind knows "
                   "(default: config.json beside the weights, else inferred from the tensor shapes)")
    p.add_argument("--out", required=True, help="output bundle folder (loads back with jaxtalk.loading."
                   "load_models; a product bundle is a --checkpoint for generate)")
    p.add_argument("--vae", help="--kind vexpress: SD's VAE (weights file, diffusers folder or cached model id)")
    p.add_argument("--audio-encoder", help="--kind vexpress: the wav2vec2 encoder (file, folder or cached id)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing converted checkpoint")
    p.set_defaults(fn=_convert)
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
    p = sub.add_parser("inspect", help="what a checkpoint holds: a PyTorch file's tensors (read safely), a "
                       "component bundle's kind, config and arrays, or a product bundle's manifest and arrays")
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
    from jaxtalk.distributed import DistributedError, announce, who
    from jaxtalk.interop import CheckpointError

    announce(getattr(args, "process_id", None), getattr(args, "num_processes", None))
    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError, DistributedError) as e:
        print(f"jaxtalk {args.command}: error: {who()}{e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"jaxtalk {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - an internal failure: one line, its own exit code
        if os.environ.get("JAXTALK_TRACEBACK"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"jaxtalk {args.command}: internal error: {who()}{type(e).__name__}: {first} (a bug, not your input; "
              "JAXTALK_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
