"""SD UNet forward: jaxtalk (jitted) against diffusers (PyTorch eager, and torch.compile where it works).

    python bench/unet.py                    # SD1.5 config, 32x32 and 64x64 latents, float32 and bfloat16
    python bench/unet.py --small            # a tiny config that finishes in about a minute on a laptop CPU
    python bench/unet.py --sizes 32 --dtypes float32 --compile

Both run the same weights (random, converted through `jaxtalk.interop`) on the same inputs, batch 1, 77 context
tokens. Printed and written to bench/results/unet.json: compile / first-call time, steady-state median seconds per
forward, the jaxtalk / diffusers time ratio, max|jax - torch| relative to max|torch|, peak host RSS, and on GPU
the XLA memory stats and the model FLOPs utilisation from XLA's cost analysis.
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import peak_rss_mb, timed, write_results, xla_flops  # noqa: E402
from jaxtalk import interop  # noqa: E402
from jaxtalk.backbones.sd_unet import SD15_UNET_CONFIG  # noqa: E402

SMALL_CONFIG = dict(
    block_out_channels=[64, 128], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1, norm_num_groups=32,
    cross_attention_dim=768, attention_head_dim=8,
)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks



def bench_torch(model, x, t, ctx, repeats, compiled: bool):
    fn = torch.compile(model) if compiled else model

    def run():
        with torch.inference_mode():
            return fn(x, t, encoder_hidden_states=ctx).sample

    out = None

    def call():
        nonlocal out
        out = run()

    first, median = timed(call, repeats)
    return first, median, out.float().permute(0, 2, 3, 1).numpy()


def bench_jax(module, params, x, t, ctx, repeats):
    apply = jax.jit(module.apply)
    params = {"params": params}
    t0 = time.perf_counter()
    compiled = apply.lower(params, x, t, ctx).compile()
    compile_s = time.perf_counter() - t0
    out = None

    def call():
        nonlocal out
        out = compiled(params, x, t, ctx)
        out.block_until_ready()

    first, median = timed(call, repeats)
    return compile_s, first, median, np.asarray(out, np.float32), xla_flops(compiled)


def device_memory() -> dict | None:
    stats = jax.local_devices()[0].memory_stats()
    if not stats:
        return None
    return {k: stats[k] / 2**20 for k in ("peak_bytes_in_use", "bytes_in_use") if k in stats}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny config instead of SD1.5")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="latent sizes (default 32 64)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(TORCH_DTYPES))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first")
    parser.add_argument("--attention", nargs="+", default=["auto"], choices=["auto", "xla", "blocked", "cudnn"],
                        help="attention implementations to time (auto: blocked on CPU from 1024 tokens)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "unet.json"))
    args = parser.parse_args(argv)
    sizes = args.sizes or ([16, 32] if args.small else [32, 64])

    from diffusers import UNet2DConditionModel as TorchUNet

    config = SMALL_CONFIG if args.small else SD15_UNET_CONFIG
    torch.manual_seed(0)
    model = TorchUNet(**config).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    module, params = interop.from_torch("sd_unet", state, config=dict(model.config))
    del state
    params = jax.device_put(params)
    n_params = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    device = jax.devices()[0]
    results = {
        "config": "small" if args.small else "sd15", "params": n_params, "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)), "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__, "runs": [],
    }
    print(f"{results['config']}: {n_params / 1e6:.1f}M params on {results['device']} ({results['backend']})")
    rng = np.random.default_rng(0)
    for size in sizes:
        x = rng.standard_normal((1, size, size, 4)).astype(np.float32)
        ctx = rng.standard_normal((1, 77, config["cross_attention_dim"])).astype(np.float32)
        t = np.array([500.0], np.float32)
        for dtype in args.dtypes:
            run_torch: dict = {"latent": size, "dtype": dtype}
            tm = model if dtype == "float32" else copy.deepcopy(model).to(TORCH_DTYPES[dtype])
            tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(TORCH_DTYPES[dtype])
            tctx = torch.from_numpy(ctx).to(TORCH_DTYPES[dtype])
            first, median_t, ref = bench_torch(tm, tx, torch.from_numpy(t), tctx, args.repeats, compiled=False)
            run_torch["torch_eager"] = {"first_s": first, "median_s": median_t}
            if args.compile:
                try:
                    first_c, median_c, _ = bench_torch(tm, tx, torch.from_numpy(t), tctx, args.repeats, compiled=True)
                    run_torch["torch_compile"] = {"first_s": first_c, "median_s": median_c}
                except Exception as e:  # torch.compile needs a working C++ toolchain; report, do not fail
                    run_torch["torch_compile"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            jparams = params if dtype == "float32" else jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
            for attention in args.attention:
                run = {**run_torch, "attention": attention}
                half = module.clone(dtype=JAX_DTYPES[dtype], attention_implementation=attention)
                compile_s, first_j, median_j, out, flops = bench_jax(half, jparams, x, t, ctx, args.repeats)
                run["jaxtalk"] = {"compile_s": compile_s, "first_s": first_j, "median_s": median_j, "flops": flops}
                run["ratio_jax_over_torch_eager"] = median_j / run["torch_eager"]["median_s"]
                if "median_s" in run.get("torch_compile", {}):
                    run["ratio_jax_over_torch_compile"] = median_j / run["torch_compile"]["median_s"]
                run["max_abs_diff_over_max_ref"] = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
                run["peak_rss_mb"] = peak_rss_mb()
                run["load_avg_1m"] = os.getloadavg()[0]
                memory = device_memory()
                if memory:
                    run["device_memory_mb"] = memory
                peak = next((v for k, v in PEAK_FLOPS.items() if k in results["device"]), None)
                if peak and flops:
                    run["mfu"] = flops / median_j / peak
                results["runs"].append(run)
                print(f"  {size}x{size} {dtype:8s} torch eager {run['torch_eager']['median_s'] * 1e3:9.1f} ms | "
                      f"jaxtalk[{attention}] {median_j * 1e3:9.1f} ms (compile {compile_s:.1f} s) | ratio "
                      f"{run['ratio_jax_over_torch_eager']:.2f} | rel diff {run['max_abs_diff_over_max_ref']:.1e} | "
                      f"load {run['load_avg_1m']:.1f} | peak RSS {run['peak_rss_mb']:.0f} MiB"
                      + (f" | torch.compile {run['torch_compile']}" if args.compile else ""), flush=True)
            del tm
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
