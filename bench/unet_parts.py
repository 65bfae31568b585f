"""The SD1.5 UNet's heavy operations one at a time, XLA:CPU against PyTorch eager in the same run.

    python bench/unet_parts.py                       # the shapes of a 64x64-latent forward, batch 1
    python bench/unet_parts.py --latent 32 --repeats 9

For each resolution level of the UNet (64, 32, 16, 8 at 64x64 latents): the 3x3 convolution of a ResNet block
(lax's convolution and the patch matmul; the row of the route `jaxtalk.nn.layers.conv` takes on CPU is marked), GroupNorm(32) + SiLU, and the two feed-forward matmuls of a transformer block (GEGLU's input projection to 8x the
width and the output projection back); plus the plain matmul rate of each matmul shape in GFLOP/s. Both sides run
float32 on the same arrays, interleaved call by call, so a change in the machine's load hits both alike. Writes
bench/results/unet_parts.json (median ms, the jaxtalk / torch ratio, GFLOP/s, the machine's load average).
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from jaxtalk.nn import layers  # noqa: E402

DIMENSIONS = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # NHWC, HWIO, NHWC
LEVELS = ((1, 320), (2, 640), (4, 1280), (8, 1280))  # (downsampling factor, channels) of SD1.5's four levels


def interleaved(jax_fn: Callable, jax_args: tuple, torch_fn: Callable, torch_args: tuple,
                repeats: int) -> tuple[float, float]:
    """Median ms of a jitted jax call and a torch call, timed alternately after one warm-up call each."""
    jitted = jax.jit(jax_fn)
    jitted(*jax_args).block_until_ready()
    with torch.inference_mode():
        torch_fn(*torch_args)
    tj, tt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jitted(*jax_args).block_until_ready()
        tj.append(time.perf_counter() - t0)
        with torch.inference_mode():
            t0 = time.perf_counter()
            torch_fn(*torch_args)
            tt.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(tj), 1e3 * statistics.median(tt)


def cases(latent: int, rng: np.random.Generator):
    """(name, flops, jax fn, jax args, torch fn, torch args) for every part at every level."""
    for factor, c in LEVELS:
        hw = latent // factor
        x = rng.standard_normal((1, hw, hw, c)).astype(np.float32)
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        w = (rng.standard_normal((3, 3, c, c)) * 0.02).astype(np.float32)
        tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
        taken = "patch" if layers._patch_matmul_applies(x, w, (1, 1), ((1, 1), (1, 1)), None, None, DIMENSIONS,
                                                         1) else "lax"
        for route, conv in (("lax", functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                                                      dimension_numbers=DIMENSIONS)),
                            ("patch", layers.patch_matmul_conv)):
            yield (f"conv3x3 {hw}x{hw}x{c} {route}" + (" (layers.conv's route)" if route == taken else ""),
                   2 * hw * hw * 9 * c * c, functools.partial(conv, padding=((1, 1), (1, 1))),
                   (x, w), lambda x, w: torch.nn.functional.conv2d(x, w, padding=1), (tx, tw))
        yield (f"groupnorm+silu {hw}x{hw}x{c}", 0,
               lambda x, scale, bias: jax.nn.silu(layers.group_norm(32).apply(
                   {"params": {"scale": scale, "bias": bias}}, x)),
               (x, np.ones(c, np.float32), np.zeros(c, np.float32)), lambda x: torch.nn.functional.silu(torch.nn.functional.group_norm(x, 32)), (tx,))
        tokens = hw * hw
        for name, k, n in (("ff in (GEGLU)", c, 8 * c), ("ff out", 4 * c, c)):
            a = rng.standard_normal((tokens, k)).astype(np.float32)
            b = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
            yield (f"matmul {name} {tokens}x{k}x{n}", 2 * tokens * k * n, lambda a, b: a @ b, (a, b),
                   lambda a, b: a @ b, (torch.from_numpy(a), torch.from_numpy(b)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latent", type=int, default=64, help="latent side of the forward whose shapes are timed")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "unet_parts.json"))
    args = p.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    results: dict = {"backend": jax.default_backend(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "latent": args.latent, "repeats": args.repeats,
                     "load_avg_1m_at_start": os.getloadavg()[0], "rows": []}
    for name, flops, jf, ja, tf, ta in cases(args.latent, np.random.default_rng(0)):
        ms_jax, ms_torch = interleaved(jf, ja, tf, ta, args.repeats)
        row = {"part": name, "jaxtalk_ms": ms_jax, "torch_ms": ms_torch, "ratio": ms_jax / ms_torch}
        if flops:
            row["gflops_per_s"] = {"jaxtalk": flops / ms_jax / 1e6, "torch": flops / ms_torch / 1e6}
        results["rows"].append(row)
        rate = (" | {jaxtalk:5.0f} vs {torch:5.0f} GFLOP/s".format(**row["gflops_per_s"]) if flops else "")
        print(f"{name:36s} jaxtalk {ms_jax:8.2f} ms | torch {ms_torch:8.2f} ms | ratio {row['ratio']:.2f}{rate}",
              flush=True)
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
