"""The README's pictures, made by `jaxtalk plot` itself from the shipped SVP model and a held-out synthetic person.

    python bench/pictures.py --out docs/pictures [--runs RUN_DIR ...] [--steps 12]

Inputs (written to `--inputs`, default outputs/pictures_inputs): one clip of a held-out identity (population
`svp_stack.EVAL_SEED`, never trained on) — its first frame, speech, head keypoints and the real video as ground
truth — plus a happy and a sad utterance of that person as style clips, and scikit-image's astronaut photo for
the landmark overlay. Then, each printed as the command a user would type:

    jaxtalk generate --image reference.png --audio speech.wav --kps kps.npy --steps N --out generated.mp4
    jaxtalk plot strip reference.png generated.mp4 truth.mp4 --labels reference generated "ground truth"
    jaxtalk plot interpolate --image reference.png --audio speech.wav --kps kps.npy --style sad.npz --style happy.npz
    jaxtalk plot tsne
    jaxtalk plot kps reference.png kps.npy ; jaxtalk plot kps astronaut.png landmarks.npy
    jaxtalk plot losses RUN_DIR ...          (with --runs: training run folders)

Seconds per picture go to bench/results/pictures.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jaxtalk import cli  # noqa: E402


def write_inputs(d: pathlib.Path, seed: int) -> dict[str, pathlib.Path]:
    """The held-out person's files (as `jaxtalk demo` makes them) and the astronaut's landmarks."""
    import soundfile
    from PIL import Image

    from jaxtalk.data import media, synthetic
    from jaxtalk.training.svp_stack import EVAL_SEED

    d.mkdir(parents=True, exist_ok=True)
    identity = synthetic.make_identity(EVAL_SEED, 7 + seed)
    clip = synthetic.generate_clip(identity, "happy", 3, seed=seed + 1, num_frames=40, fps=25.0, resolution=64)
    paths = {"reference": d / "reference.png", "speech": d / "speech.wav", "kps": d / "kps.npy",
             "truth": d / "truth.mp4"}
    Image.fromarray(clip.frames[0]).save(paths["reference"])
    soundfile.write(paths["speech"], clip.audio, clip.sample_rate)
    np.save(paths["kps"], clip.head_kps)
    media.write_video(paths["truth"], clip.frames, clip.fps, audio=clip.audio)
    for emotion in ("happy", "sad"):
        style = synthetic.generate_clip(identity, emotion, 3, seed=seed + 2, num_frames=40, fps=25.0,
                                        resolution=64, render_video=False)
        paths[emotion] = d / f"{emotion}.npz"
        np.savez(paths[emotion], expression=style.expression, audio=style.audio, fps=np.float32(style.fps))
    try:
        from skimage import data as skdata

        from jaxtalk import faces

        head = skdata.astronaut()[20:260, 112:352]  # the astronaut's head and shoulders
        photo = np.asarray(Image.fromarray(head).resize((384, 384), Image.Resampling.BICUBIC))
        paths["astronaut"] = d / "astronaut.png"
        Image.fromarray(photo).save(paths["astronaut"])
        paths["landmarks"] = d / "landmarks.npy"
        np.save(paths["landmarks"], faces.analyze(photo).landmarks[:, :2])
    except ImportError as e:
        print(f"skipping the landmark overlay ({e})")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "pictures"))
    ap.add_argument("--inputs", default=str(REPO / "outputs" / "pictures_inputs"), help="where the inputs go")
    ap.add_argument("--runs", nargs="*", default=[], help="training run folders for the loss curves")
    ap.add_argument("--steps", type=int, default=12, help="sampler steps of the generated videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=[], help="make only these pictures (strip interpolate tsne kps "
                    "landmarks losses)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    inputs = write_inputs(pathlib.Path(args.inputs), args.seed)
    i = {k: str(v) for k, v in inputs.items()}
    generated = str(pathlib.Path(args.inputs) / "generated.mp4")
    commands = {
        "strip": [["generate", "--image", i["reference"], "--audio", i["speech"], "--kps", i["kps"], "--steps",
                   str(args.steps), "--devices", "1", "--quiet", "--out", generated],
                  ["plot", "strip", i["reference"], generated, i["truth"], "--labels", "reference", "generated",
                   "ground truth", "--frames", "5", "--out", str(out / "strip.png")]],
        "interpolate": [["plot", "interpolate", "--image", i["reference"], "--audio", i["speech"], "--kps", i["kps"],
                         "--style", i["sad"], "--style", i["happy"], "--steps", str(args.steps),
                         "--out", str(out / "interpolation.png")]],
        "tsne": [["plot", "tsne", "--out", str(out / "style_tsne.png")]],
        "kps": [["plot", "kps", i["reference"], i["kps"], "--out", str(out / "kps.png")]],
    }
    if "landmarks" in i:
        commands["landmarks"] = [["plot", "kps", i["astronaut"], i["landmarks"], "--out", str(out / "landmarks.png")]]
    if args.runs:
        commands["losses"] = [["plot", "losses", *args.runs, "--smooth", "3", "--out", str(out / "losses.png")]]
    report = {}
    for name, steps in commands.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        for argv in steps:
            print("jaxtalk " + shlex.join(argv), flush=True)
            rc = cli.main(argv)
            if rc != 0:
                raise SystemExit(f"{name}: jaxtalk {argv[0]} exited with {rc}")
        report[name] = {"seconds": round(time.perf_counter() - t0, 1), "commands": [shlex.join(a) for a in steps]}
    path = REPO / "bench" / "results" / "pictures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
