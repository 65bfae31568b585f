"""Why SVP stage 2's XLA:CPU memory estimate is high and does not fall with remat: the attention of the 64x64
latent level, measured by XLA on one layer's forward + backward.

    python bench/attention_memory.py                      # stage-2 shapes: 8 frames, 8 heads, 4096 queries
    python bench/attention_memory.py --out bench/results/attention_memory.json

For q (frames, 4096, 8, 40) against the 8192 keys of the self-attention with the ReferenceNet bank (SD1.5's first
level at 512x512, one 8-frame clip per device, bfloat16), it compiles d/d(q, k, v) of sum(attention * w) for:
`xla` (`jax.nn.dot_product_attention`'s XLA path, what "auto" picks off GPU: the (B, H, Lq, Lk) logits and
probabilities are materialised), the same under `jax.checkpoint` (what `model.remat=full` does to a block: the
probabilities are recomputed in the backward pass but still materialised there), and the query-chunked path
(`model.attention_chunk`), whose chunks are checkpointed so only one chunk's probabilities exist at a time —
the memory behaviour of a flash kernel (cuDNN's, which "auto" picks on an H100 for bfloat16 and head_dim <= 128,
never materialises them). Rows give `memory_analysis()` temporaries and arguments (GiB) per variant; no
timing. XLA_FLAGS are left as given, so the compile is the default one.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def measure(frames: int, queries: int, keys: int, heads: int, head_dim: int, chunk: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from jaxtalk.nn.attention import dot_product_attention

    sds = jax.ShapeDtypeStruct
    q = sds((frames, queries, heads, head_dim), jnp.bfloat16)
    kv = sds((frames, keys, heads, head_dim), jnp.bfloat16)
    w = sds((frames, queries, heads, head_dim), jnp.bfloat16)

    def loss_of(attend):
        def loss(q, k, v, w):
            return jnp.sum((attend(q, k, v) * w).astype(jnp.float32))
        return jax.grad(loss, argnums=(0, 1, 2))

    variants = {
        "xla": lambda q, k, v: dot_product_attention(q, k, v, implementation="xla"),
        "xla_remat": jax.checkpoint(lambda q, k, v: dot_product_attention(q, k, v, implementation="xla")),
        f"chunked_{chunk}": lambda q, k, v: dot_product_attention(q, k, v, implementation="xla",
                                                                  query_chunk_size=chunk),
    }
    rows = []
    for name, attend in variants.items():
        t0 = time.perf_counter()
        compiled = jax.jit(loss_of(attend)).lower(q, kv, kv, w).compile()
        mem = compiled.memory_analysis()
        rows.append({"variant": name, "temporaries_gib": mem.temp_size_in_bytes / 2**30,
                     "arguments_gib": mem.argument_size_in_bytes / 2**30,
                     "outputs_gib": mem.output_size_in_bytes / 2**30,
                     "logits_fp32_gib": frames * heads * queries * keys * 4 / 2**30,
                     "compile_s": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--queries", type=int, default=4096, help="64x64 latent tokens")
    p.add_argument("--keys", type=int, default=8192, help="own tokens + the ReferenceNet bank's")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=40)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "attention_memory.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    rows = measure(args.frames, args.queries, args.keys, args.heads, args.head_dim, args.chunk)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"jax": jax.__version__, "backend": jax.default_backend(), "args": vars(args),
                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
