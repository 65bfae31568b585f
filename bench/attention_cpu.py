"""Self-attention on CPU at SD1.5's lengths: XLA's whole-logits softmax, the query-chunked path and the blocked
online softmax (what `implementation="auto"` picks on CPU from `BLOCKED_MIN_LENGTH` on), against PyTorch's
scaled_dot_product_attention (its fused CPU kernel) in the same run.

    python bench/attention_cpu.py                         # lengths 256 .. 4096 (64x64 latents), 8 heads of 40
    python bench/attention_cpu.py --lengths 1024 --heads 10 --head-dim 64

Writes bench/results/attention_cpu.json (median ms per call, ratios to torch, the machine's load average).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from jaxtalk.nn import attention  # noqa: E402


def paths(length: int) -> dict:
    """name -> jitted (q, k, v) -> out."""
    d = {"xla_whole": lambda q, k, v: attention.dot_product_attention(q, k, v, implementation="xla"),
         "xla_chunk512": lambda q, k, v: attention.dot_product_attention(q, k, v, implementation="xla",
                                                                          query_chunk_size=512),
         "blocked": lambda q, k, v: attention.dot_product_attention(q, k, v, implementation="blocked")}
    if length <= 512:
        d.pop("xla_chunk512")
    return {k: jax.jit(f) for k, f in d.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "attention_cpu.json"))
    args = p.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    results: dict = {"backend": jax.default_backend(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "heads": args.heads, "head_dim": args.head_dim,
                     "block_q": attention.BLOCK_Q, "block_k": attention.BLOCK_K,
                     "blocked_min_length": attention.BLOCKED_MIN_LENGTH,
                     "load_avg_1m_at_start": os.getloadavg()[0], "rows": []}
    rng = np.random.default_rng(0)
    for n in args.lengths:
        q, k, v = (rng.standard_normal((1, n, args.heads, args.head_dim)).astype(np.float32) for _ in range(3))
        tq, tk, tv = (torch.from_numpy(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        with torch.inference_mode():
            ref = sdpa(tq, tk, tv).numpy().transpose(0, 2, 1, 3)
        fns = paths(n)
        row: dict = {"length": n, "max_rel_diff": {}}
        for name, f in fns.items():
            row["max_rel_diff"][name] = float(np.abs(np.asarray(f(q, k, v)) - ref).max() / np.abs(ref).max())
        times: dict[str, list[float]] = {name: [] for name in [*fns, "torch_sdpa"]}
        for _ in range(args.repeats):  # interleaved, so a change in load hits every path alike
            for name, f in fns.items():
                t0 = time.perf_counter()
                f(q, k, v).block_until_ready()
                times[name].append(time.perf_counter() - t0)
            with torch.inference_mode():
                t0 = time.perf_counter()
                sdpa(tq, tk, tv)
                times["torch_sdpa"].append(time.perf_counter() - t0)
        row["median_ms"] = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        row["ratio_over_torch"] = {name: row["median_ms"][name] / row["median_ms"]["torch_sdpa"] for name in fns}
        row["load_avg_1m"] = os.getloadavg()[0]
        results["rows"].append(row)
        print(f"L={n:5d} " + " | ".join(f"{name} {ms:8.1f} ms" for name, ms in row["median_ms"].items())
              + " | ratio blocked/torch {:.2f}, xla/torch {:.2f} (load {:.1f})".format(
                  row["ratio_over_torch"]["blocked"], row["ratio_over_torch"]["xla_whole"], row["load_avg_1m"]),
              flush=True)
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
