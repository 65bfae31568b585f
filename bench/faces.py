"""Face analysis speed: jaxtalk's JAX evaluation of MediaPipe's detector and face-mesh networks against the LiteRT
interpreter on the same .tflite files, and the whole per-photo / per-frame analysis.

    python bench/faces.py [--rounds 20] [--out bench/results/faces.json]

Measured after compilation (compile time reported apart), on skimage's astronaut photo: one network call at the
compiled batch (8 frames; LiteRT runs them one by one), `jaxtalk.faces.analyze` (detection + two landmark passes)
per photo, and `track_faces` per frame on a 16-frame clip. Results with the machine's load average go to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np


def _median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "faces.json"))
    args = ap.parse_args(argv)

    import jax
    import skimage.data

    from jaxtalk import faces
    from jaxtalk.faces import mediapipe as mp

    image = skimage.data.astronaut()
    results: dict = {"device": str(jax.devices()[0]), "load_average": os.getloadavg(), "batch": mp.BATCH}
    for name in (mp.DETECTOR_FILE, mp.LANDMARK_FILE):
        results[name] = _bench_network(name, args.rounds)
    faces.analyze(image)
    results["analyze_photo_s"] = _median_time(lambda: faces.analyze(image), max(3, args.rounds // 4))
    from PIL import Image

    clip = np.stack([np.asarray(Image.fromarray(image).rotate(3 * np.sin(i / 3))) for i in range(16)])
    faces.track_faces(clip)
    results["track_per_frame_s"] = _median_time(lambda: faces.track_faces(clip), 3) / len(clip)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return results


def _bench_network(name: str, rounds: int) -> dict:
    import jax

    from jaxtalk.faces import mediapipe as mp

    fn, params = mp._network(name)
    x = np.random.default_rng(0).uniform(-1, 1, (mp.BATCH, *_input_shape(name))).astype(np.float32)
    t = time.perf_counter()
    jax.block_until_ready(fn(params, x))
    entry: dict = {"compile_s": time.perf_counter() - t,
                   "jax_batch_s": _median_time(lambda: jax.block_until_ready(fn(params, x)), rounds)}
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        entry["litert_batch_s"] = None
        return entry
    interp = Interpreter(model_path=str(mp.MODEL_DIR / name))
    interp.allocate_tensors()
    idx = interp.get_input_details()[0]["index"]

    def litert():
        for row in x:
            interp.set_tensor(idx, row[None])
            interp.invoke()

    entry["litert_batch_s"] = _median_time(litert, rounds)
    entry["ratio_jax_over_litert"] = entry["jax_batch_s"] / entry["litert_batch_s"]
    return entry


def _input_shape(name: str) -> tuple[int, int, int]:
    from jaxtalk.faces import mediapipe as mp

    size = mp.DETECTOR_SIZE if name == mp.DETECTOR_FILE else mp.LANDMARK_SIZE
    return (size, size, 3)


if __name__ == "__main__":
    main()
