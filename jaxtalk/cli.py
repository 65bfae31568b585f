"""The `jaxtalk` console entry: `demo`, `generate`, `prepare`, `prepare-dataset`, `serve`, `plot`, `doctor`,
`convert`, `inspect`."""

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

        s2t_config = None if args.style2talker_config == "shipped" else args.style2talker_config
        s2t = style2talker_demo(Path(cfg.output_dir), seed=cfg.seed, config=s2t_config)
        print(f"style2talker weights: {s2t.pop('models').source}")
        for line in s2t.pop("command").splitlines():
            print(f"style2talker: {line}")
        s2t.pop("result")
        for what, path in s2t.items():
            print(f"{what}: {path}")
    return 0


def _svp_demo(out_dir: Path, seed: int, svp_config: str, checkpoint: str | None) -> dict[str, Path]:
    """SVP on a held-out synthetic person (population `svp_stack.EVAL_SEED`, never seen in training): the first
    frame of one of their clips as reference, that clip's speech and head keypoints, and the style of another
    utterance with the same emotion. With the default `svp_config="trained"` the shipped trained weights generate
    at their own size; a preset name (e.g. svp_tiny) samples that config with random weights instead. Writes the
    inputs (so the printed `jaxtalk generate` command reproduces the video), the mp4 and `svp_strip.png`
    (reference, generated frames, ground-truth frames)."""
    import soundfile
    from PIL import Image

    from jaxtalk.data import synthetic
    from jaxtalk.data.atomic import atomic_path
    from jaxtalk.plot import image_strip
    from jaxtalk.svp import pipeline
    from jaxtalk.training.svp_stack import EVAL_SEED

    trained = svp_config == "trained"
    size = 64 if trained else 128
    identity = synthetic.make_identity(EVAL_SEED, 7 + seed)
    clip = synthetic.generate_clip(identity, "happy", 3, seed=seed + 1, num_frames=40, fps=25.0, resolution=size)
    style_clip = synthetic.generate_clip(identity, "happy", 3, seed=seed + 2, num_frames=40, fps=25.0,
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
            "--style", str(inputs["style"]), "--devices", "1", "--out", str(out_dir / "svp.mp4")]
    if not trained:
        argv += ["--config", svp_config]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    print("svp: jaxtalk generate " + " ".join(argv))
    outputs = _run_generate(_parser().parse_args(["generate", *argv]))
    outputs.pop("summary", None)
    prior_path = out_dir / "svp_style_prior.npz"
    if outputs.get("prior") is not None:
        pipeline.save_style_prior(prior_path, outputs.pop("prior"))
        outputs["style_prior"] = prior_path
    frames = outputs.pop("frames", None)
    if frames is not None:
        n = len(frames)
        outputs["strip"] = image_strip([("reference", clip.frames[:1]), ("generated", frames[::4]),
                                        ("ground truth", clip.frames[:n:4])], out_dir / "svp_strip.png")
    return {**{f"svp_{k}": v for k, v in inputs.items()}, **{f"svp_{k}": v for k, v in outputs.items()}}


def _load_kps(path: str) -> np.ndarray:
    """Keypoints from `.npy` ((8, 2), (F, 8, 2) or V-Kps (…, 3, 2) pixels) or `.npz` (`head_kps` or `kps`)."""
    from jaxtalk.data.media import MediaError

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: keypoint file not found; check the path")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = next((k for k in ("head_kps", "kps") if k in z.files), None)
                if key is None:
                    raise MediaError(f"{p}: no 'head_kps' or 'kps' array (found {z.files})")
                kps = z[key]
        else:
            kps = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MediaError(f"{p}: cannot be read as keypoints ({e}); save them with numpy.save") from None
    kps = np.asarray(kps, np.float32)
    if kps.ndim not in (2, 3) or kps.shape[-1] != 2 or kps.shape[-2] not in (3, 8) or not np.all(np.isfinite(kps)):
        raise MediaError(f"{p}: keypoints must be finite pixel coordinates of shape (8, 2), (F, 8, 2) or with 3 "
                         f"V-Kps points, got {kps.shape}")
    return kps


def _write_debug(debug_dir: str | None, prep: Any) -> None:
    """overlay.png (detections on the photo) and crop_overlay.png (keypoints on the crop) for --debug-dir."""
    if debug_dir:
        from PIL import Image

        Path(debug_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(prep.overlay()).save(Path(debug_dir) / "overlay.png")
        Image.fromarray(prep.crop_overlay()).save(Path(debug_dir) / "crop_overlay.png")


def _svp_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict | None]:
    """(image, audio, kps, bundle) from --image (a photo or a `jaxtalk prepare` folder), --audio / --driving's
    sound / the folder's audio.wav, and --kps / the folder's keypoints."""
    from jaxtalk.data import media
    from jaxtalk.faces import prepare

    bundle = prepare.read_bundle(args.image) if prepare.is_bundle(args.image) else None
    if bundle is not None and bundle["meta"].get("system") != "svp":
        raise ValueError(f"--image {args.image}: prepared for {bundle['meta'].get('system')}; add --system "
                         f"{bundle['meta'].get('system')} or run jaxtalk prepare --system svp")
    image = bundle["reference"] if bundle is not None else media.load_image(args.image)
    if args.audio:
        audio = prepare.load_speech(args.audio)
    elif bundle is not None and bundle["audio"] is not None:
        audio = bundle["audio"]
    elif args.driving:
        audio = prepare.speech_for(None, args.driving)
    else:
        raise ValueError("--audio is required (speech file), unless --driving gives a video with sound or --image "
                         "is a prepared folder with audio.wav")
    kps = _load_kps(args.kps) if args.kps else (bundle["kps"] if bundle is not None else None)
    return image, audio, kps, bundle


def _prepare_svp_reference(args: argparse.Namespace, image: np.ndarray, audio: np.ndarray):
    """Raw photo -> (face crop, keypoint track, paste-back info) via jaxtalk.faces; with --face auto a photo
    without a face is used as given (and said so), with --face on it is an error."""
    from jaxtalk.faces import FaceError, prepare_svp

    if args.face == "off":
        if args.driving:
            raise ValueError("--driving: needs face analysis; drop --face off")
        return image, None, None
    try:
        prep = prepare_svp(image, audio=audio, driving_video=args.driving, retarget_strategy=args.retarget,
                           face_index=args.face_index, min_score=args.min_face_score)
    except FaceError as e:
        if args.face == "on" or args.driving:
            raise
        print(f"note: {e}; using the image as given, without keypoints (--face on makes this an error)",
              flush=True)
        return image, None, None
    box = ", ".join(f"{v:.0f}" for v in prep.analysis.box)
    print(f"face: box [{box}] score {prep.analysis.score:.2f}, crop {prep.reference.shape[0]} px, keypoints "
          f"{prep.meta['retarget']}", flush=True)
    _write_debug(args.debug_dir, prep)
    return prep.reference, prep.kps, (prep.image, prep.matrix, prep.reference.shape[0])


def _style2talker_inputs(args: argparse.Namespace):
    """(image, audio, pose, identity expression, paste-back info, parsing map) for Style2Talker: a prepared
    folder, or a raw photo aligned the FFHQ way for pSp (--face auto falls back to the photo as given when no
    face is found)."""
    from jaxtalk.faces import FaceError, prepare

    pose, identity_exp = args.pose, args.identity_exp
    audio: Any = args.audio
    if prepare.is_bundle(args.image):
        b = prepare.read_bundle(args.image)
        if b["meta"].get("system") != "style2talker":
            raise ValueError(f"--image {args.image}: prepared for {b['meta'].get('system')}; run jaxtalk prepare "
                             "--system style2talker")
        audio = audio or b["audio"]
        if audio is None:
            raise ValueError("--audio is required: the prepared folder has no audio.wav")
        paste = (b["original"], np.asarray(b["meta"]["matrix"]), b["meta"]["crop_size"])
        return b["reference"], audio, pose if pose is not None else b["pose"], (
            identity_exp if identity_exp is not None else b.get("identity_exp")), (
            paste if paste[0] is not None else None), b.get("parsing")
    if audio is None and not args.driving:
        raise ValueError("--audio is required (speech file), unless --driving gives a video with sound")
    if args.face == "off":
        return args.image, audio or prepare.speech_for(None, args.driving), pose, identity_exp, None, None
    try:
        prep = prepare.prepare_style2talker(args.image, audio=audio, driving_video=args.driving,
                                            face_index=args.face_index, min_score=args.min_face_score)
    except FaceError as e:
        if args.face == "on" or args.driving:
            raise
        print(f"note: {e}; using the image as given, not aligned (--face on makes this an error)", flush=True)
        return args.image, audio, pose, identity_exp, None, None
    _write_debug(args.debug_dir, prep)
    for note in prep.meta.get("notes", []):
        print(f"note: {note}", flush=True)
    paste = (prep.image, prep.matrix, prep.reference.shape[0])
    return (prep.reference, prep.audio, pose if pose is not None else prep.pose, identity_exp, paste,
            prep.extras.get("parsing"))


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


def _is_main() -> bool:
    from jaxtalk import distributed

    return distributed.is_main()


def _style2talker_generate(args: argparse.Namespace) -> dict[str, Any]:
    from jaxtalk.style2talker import pipeline

    if args.emotion is None:
        raise ValueError("--emotion is required with --system style2talker, e.g. --emotion \"She is happy\"")
    if args.style and len(args.style) > 1:
        raise ValueError("--style: Style2Talker takes one art style (a .npy W+ code or a style-bank index)")
    image, audio, pose, identity_exp, paste, parsing = _style2talker_inputs(args)
    if args.paste_back and paste is None:
        raise ValueError("--paste-back: needs a raw photo with a detected face (or a prepared folder whose "
                         "original photo still exists); it cannot be used with --face off")
    outputs = pipeline.generate(
        image, audio, args.emotion, args.out, style=pipeline.parse_style(args.style[0] if args.style
                                                                         else None),
        checkpoint=args.checkpoint, config=args.config, overrides=args.overrides, seed=args.seed, pose=pose,
        identity_expression=identity_exp, parsing=parsing, text_encoder=args.text_encoder,
        progress=not args.quiet and _is_main())
    if args.paste_back:
        from jaxtalk.faces.geometry import crop_size_matrix, paste_back

        r = outputs["result"]
        original, matrix, crop_size = paste
        M = crop_size_matrix(matrix, crop_size, r.frames.shape[1:3])
        r.frames = np.stack([paste_back(original, f, M) for f in r.frames])
        pipeline.write_outputs(args.out, r.frames, r.audio, r.fps, r.config)
    print(f"weights: {outputs['models'].source}")
    frames = outputs["result"].frames
    print(f"video: {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]} at {outputs['result'].fps:g} fps")
    print(f"video: {outputs['video']}\nconfig: {outputs['config']}")
    return {"system": "style2talker", "video": str(outputs["video"]), "config": str(outputs["config"]),
            "weights": outputs["models"].source, "frames": int(frames.shape[0]),
            "height": int(frames.shape[1]), "width": int(frames.shape[2]), "fps": float(outputs["result"].fps)}


def _generate(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from jaxtalk import distributed

    distributed.initialize(distributed.config_from_args(args))
    if args.json:  # one JSON object on stdout for scripts; the human lines go to stderr, no progress bars
        args.quiet = True
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        if args.system == "style2talker":
            summary = _style2talker_generate(args)
        else:
            outputs = _run_generate(args)
            summary = outputs.pop("summary", None)
            outputs.pop("prior", None)
            outputs.pop("frames", None)
            for what, path in outputs.items():
                print(f"{what}: {path}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _run_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every input first (so bad input fails before any model work), then build, sample, write."""
    import jax

    from jaxtalk import config, parallel
    from jaxtalk.svp import loading as svp_loading
    from jaxtalk.svp import models as svp_models
    from jaxtalk.svp import pipeline
    from jaxtalk.svp.config import SVPConfig

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the output must be an .mp4 file")
    image, audio, kps, bundle = _svp_inputs(args)
    styles = [pipeline.load_style(s) for s in (args.style or [])]
    if len(styles) > 2:
        raise ValueError("--style: give one style file, or two to mix with --style-mix")
    style = styles[0] if styles else None
    if len(styles) == 2:
        style = pipeline.StyleMix(styles[0], styles[1], args.style_mix)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.steps is not None:
        overrides.append(f"sampler.steps={args.steps}")
    if getattr(args, "sampler", None) is not None:
        overrides.append(f"sampler.kind={args.sampler}")

    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and not ckpt.is_dir():
        raise FileNotFoundError(f"--checkpoint {ckpt}: folder not found")
    converted = ckpt is not None and svp_loading.is_converted_checkpoint(ckpt)
    if ckpt is not None and not (converted or svp_loading.is_converted_parts(ckpt)
                                 or svp_loading.is_vexpress_folder(ckpt)):
        raise svp_models.ModelLoadError(
            f"--checkpoint {ckpt}: not a checkpoint folder; expected a saved SVP bundle (config.yaml + params/), "
            "folders written by jaxtalk convert (jaxtalk_kind.json), or V-Express's five .bin files")
    if converted:
        cfg = config.load(ckpt / "config.yaml", overrides=overrides, cls=SVPConfig)
    elif ckpt is None and args.config is None:  # the shipped model trained on the synthetic faces
        ckpt, converted = svp_loading.packaged_weights(), True
        cfg = config.load(ckpt / "config.yaml", overrides=overrides, cls=SVPConfig)
    else:
        name = args.config or ("svp_vexpress" if ckpt is not None else "svp_tiny")
        cfg = config.load(name, overrides=overrides, cls=SVPConfig)
    if style is not None and not cfg.style.enabled:
        raise ValueError("--style: the config has style.enabled=false (no style attention); drop --style or use "
                         "a config with style (svp_paper, svp_tiny)")

    paste = None
    if bundle is None and kps is None:
        image, kps, paste = _prepare_svp_reference(args, image, audio)
    elif bundle is not None:
        paste = (bundle["original"], np.asarray(bundle["meta"]["matrix"]), bundle["meta"]["crop_size"])
    if args.paste_back and (paste is None or paste[0] is None):
        raise ValueError("--paste-back: needs a raw photo with a detected face (or a prepared folder whose "
                         "original photo still exists); it cannot be used with --kps or --face off")
    devices = jax.devices()[: args.devices] if args.devices else jax.devices()
    if args.devices is not None and not 1 <= args.devices <= jax.device_count():
        raise ValueError(f"--devices {args.devices}: choose 1..{jax.device_count()}")
    mesh = None
    if len(devices) > 1:
        m = cfg.mesh
        mesh = parallel.make_mesh(m.data, m.fsdp, m.tensor, devices=devices)
    if converted:
        models = svp_loading.load_models(ckpt, cfg=cfg, mesh=mesh)
    elif ckpt is not None and svp_loading.is_vexpress_folder(ckpt):
        from jaxtalk.interop.hf_cache import resolve_pretrained

        vae = resolve_pretrained(args.vae, "--vae") if args.vae else None
        encoder = resolve_pretrained(args.audio_encoder, "--audio-encoder") if args.audio_encoder else None
        models = svp_loading.from_vexpress(ckpt, vae=vae, audio_encoder=encoder, cfg=cfg, mesh=mesh, seed=cfg.seed)
    elif ckpt is not None:
        models = svp_loading.load_converted_parts(ckpt, cfg=cfg, mesh=mesh, seed=cfg.seed)
    else:
        models = svp_models.build_models(cfg, seed=cfg.seed, mesh=mesh)
    note = "" if ckpt is not None else " (--config without --checkpoint: untrained weights, the video is not a face)"
    print(f"weights: {models.source}{note}", flush=True)

    main_process = jax.process_index() == 0  # in a multi-process run, process 0 alone writes the outputs
    pipe = pipeline.SVPPipeline(models, progress=not args.quiet and main_process)
    clip = pipeline.ClipInputs(reference=image, audio=audio, kps=kps, style=style)
    result = pipe([clip])
    frames = result.frames[0]
    if args.paste_back:
        from jaxtalk.faces.geometry import crop_size_matrix, paste_back

        original, matrix, crop_size = paste
        M = crop_size_matrix(matrix, crop_size, frames.shape[1:3])
        frames = np.stack([paste_back(original, f, M) for f in frames])
    paths: dict[str, Any] = {}
    if main_process:
        paths = pipeline.write_outputs(out, frames, result.audio[0], result.fps, models.config)
    paths["prior"] = pipeline.resolve_style(models, style) if style is not None else None
    paths["frames"] = frames
    print(f"video: {result.frames.shape[1]} frames of {cfg.video.height}x{cfg.video.width} at {result.fps:.3f} fps",
          flush=True)
    paths["summary"] = {"system": "svp", "video": str(out), "config": str(out.with_suffix(".yaml")),
                        "weights": models.source, "frames": int(frames.shape[0]), "height": int(frames.shape[1]),
                        "width": int(frames.shape[2]), "fps": float(result.fps)}
    return paths


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
