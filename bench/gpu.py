"""The accelerator benchmark behind bench/gpu.sh: seconds per frame, ms and frames / s at the papers' sizes with
random weights (nothing is downloaded), and model-FLOPs utilisation from XLA's cost analysis.

    bash bench/gpu.sh                      # paper sizes on the first device (written for one H100 / H200, < 8 min)
    bash bench/gpu.sh --small              # tiny configs: the same code path on CPU in about a minute

Sections (each writes its entry into the JSON as soon as it finishes, so a cut-off run keeps what it measured):
* SVP (svp_paper: SD1.5-size video UNet + ReferenceNet + VAE at 512x512, Euler 25 steps, CFG 3.5): one context
  window of frames (24) sampled and VAE-decoded; s/frame for fp32 + XLA attention, bf16 + XLA attention and
  bf16 + cuDNN flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`, fp16/bf16 only; skipped off
  GPU; float32 uses query-chunked attention, 512 queries, to bound the logits). MFU = (guided window FLOPs x
  windows x steps) / denoise time / peak; XLA's cost analysis counts a loop body once, so the compiled sampler's
  FLOPs are those of one guided window prediction.
* Style-E: 250 frames (8 windows x 32), 5 respaced steps, paper size.
* Style-A (VToonify-D + motion generator, paper channel table): frames / s at 256 and 1024 output, batch 1 and 8.
Peak FLOP/s per device kind (dense bf16 tensor cores): H100 / H200 989 TFLOP/s; unknown kinds report no MFU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import timed, xla_flops  # noqa: E402
from jaxtalk import config  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def peak_flops(kind: str) -> float | None:
    for name, peak in PEAK_BF16.items():
        if name.lower() in kind.lower():
            return peak
    return None




# --------------------------------------------------------------------------------------------------------- SVP


def random_conditions(shapes, rng: np.random.Generator):
    def one(s):
        if s.dtype == jnp.uint8:
            return jnp.asarray(rng.integers(0, 256, s.shape, dtype=np.uint8))
        return jnp.asarray(rng.standard_normal(s.shape).astype(np.float32) * 0.5, s.dtype)
    return jax.tree.map(one, shapes)


def svp_variant(base, models, dtype: str, attention: str, rng: np.random.Generator, repeats: int) -> dict:
    """One dtype / attention variant on the shared float32 params: compile, denoise, decode, FLOPs."""
    from jaxtalk.svp import models as svp_models
    from jaxtalk.svp import pipeline as P

    # float32 XLA attention over 64x64 latents would materialise (48 x heads x 4096 x 4096) logits: chunk queries
    chunk = 512 if dtype == "float32" and base.video.height >= 256 else base.attention_chunk
    cfg = dataclasses.replace(base, dtype=dtype, attention=attention, attention_chunk=chunk)
    m = svp_models.SVPModels(cfg, svp_models.build_modules(cfg), models.params, source=models.source)
    pipe = P.SVPPipeline(m, progress=False)
    frames = cfg.context.frames
    keys = P.clip_keys(0, 1)
    cond = random_conditions(pipe.condition_shapes(1, frames), rng)
    t0 = time.perf_counter()
    compiled = pipe.compile_denoise(keys, cond, frames)
    compile_s = time.perf_counter() - t0
    box = {}

    def denoise():
        box["latents"] = jax.block_until_ready(pipe._run(compiled, keys, cond, pipe.guidance_scalars()))

    _, denoise_s = timed(denoise, repeats)
    t0 = time.perf_counter()
    pipe.decode(box["latents"])
    decode_first = time.perf_counter() - t0
    _, decode_s = timed(lambda: pipe.decode(box["latents"]), repeats)
    # XLA's cost analysis counts a loop body once: the scan over steps holds the fori_loop over windows, so the
    # compiled program's FLOPs are one guided window prediction (+ one sampler step); times windows x steps.
    plan = pipe.window_plan(frames)
    flops = xla_flops(compiled) * plan.num_windows * pipe.coeffs.num_steps
    peak = peak_flops(getattr(jax.devices()[0], "device_kind", ""))
    return {"attention_chunk": chunk, "compile_s": compile_s, "denoise_s": denoise_s, "decode_s": decode_s,
            "decode_first_call_s": decode_first, "s_per_frame": (denoise_s + decode_s) / frames,
            "denoise_s_per_frame": denoise_s / frames, "denoise_tflop": flops / 1e12,
            "denoise_tflop_per_s": flops / denoise_s / 1e12,
            "mfu_vs_bf16_peak": flops / denoise_s / peak if peak else None}


def bench_svp(small: bool, repeats: int, on_gpu: bool) -> dict:
    from jaxtalk.svp import models as svp_models

    preset = "svp_tiny" if small else "svp_paper"
    base = config.load(preset, overrides=[] if small else ["sampler.steps=25"])
    t0 = time.perf_counter()
    models = svp_models.build_models(base, seed=0)
    build_s = time.perf_counter() - t0
    out: dict = {"preset": preset, "size": [base.video.height, base.video.width], "steps": base.sampler.steps,
                 "guidance_scale": base.guidance.scale, "frames": base.context.frames, "random_init_s": build_s,
                 "params": models.num_params, "variants": {}}
    variants = [("float32", "xla"), ("bfloat16", "xla"), ("bfloat16", "cudnn")]
    rng = np.random.default_rng(0)
    for dtype, attention in variants:
        name = f"{dtype}+{attention}"
        if attention == "cudnn" and not on_gpu:
            out["variants"][name] = {"skipped": "cuDNN flash attention needs a GPU"}
            continue
        try:
            out["variants"][name] = v = svp_variant(base, models, dtype, attention, rng, repeats)
            print(f"SVP {name}: {v['s_per_frame']:.3f} s/frame (denoise {v['denoise_s']:.2f} s + decode "
                  f"{v['decode_s']:.2f} s for {base.context.frames} frames; compile {v['compile_s']:.0f} s), "
                  f"{v['denoise_tflop_per_s']:.3g} TFLOP/s"
                  + (f", MFU {v['mfu_vs_bf16_peak']:.1%}" if v["mfu_vs_bf16_peak"] else ""), flush=True)
        except Exception as e:  # one variant failing (e.g. cuDNN unsupported) must not lose the others
            out["variants"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            traceback.print_exc()
    return out


# ----------------------------------------------------------------------------------------------------- Style-E


def bench_style_e(small: bool, repeats: int, frames: int) -> dict:
    from jaxtalk import interop
    from jaxtalk.style2talker.config import Style2TalkerConfig
    from jaxtalk.style2talker.models import build_modules, random_state
    from jaxtalk.style2talker.style_e import generate_expression

    cfg = config.load("style2talker_tiny" if small else "style2talker_paper", cls=Style2TalkerConfig)
    se = build_modules(cfg)["style_e"]
    _, params = interop.from_torch("style2talker_style_e", random_state("style2talker_style_e", se,
                                                                         np.random.default_rng(1)))
    params = jax.device_put(params)
    rng = np.random.default_rng(0)
    sparse = jnp.asarray(rng.standard_normal((frames, se.config.sparse_dim)), jnp.float32)
    text = jnp.asarray(rng.standard_normal(se.config.text_dim), jnp.float32)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jax.jit(lambda p, s, t, k: generate_expression(se, p, s, t, k, sampling=cfg.sampler)).lower(
        params, sparse, text, key).compile()
    compile_s = time.perf_counter() - t0
    _, median = timed(lambda: jax.block_until_ready(compiled(params, sparse, text, key)), repeats)
    print(f"Style-E {frames} frames: {median * 1e3:.2f} ms (compile {compile_s:.1f} s)", flush=True)
    return {"frames": frames, "ms": median * 1e3, "compile_s": compile_s, "latent_dim": se.config.latent_dim,
            "layers": se.config.num_layers}


# ----------------------------------------------------------------------------------------------------- Style-A


def style_a_size(cfg, size: int, repeats: int) -> dict:
    """Style-A frames / s at one output size, batch 1 and 8, the identity encoded once."""
    from jaxtalk import interop
    from jaxtalk.style2talker.models import random_state
    from jaxtalk.style2talker.pipeline import driving_windows, encode_identity, render_batch
    from jaxtalk.style2talker.style_a import AudioDrivenVToonify

    a = cfg.style_a
    fields = a.module_kwargs()
    fields["out_size"], fields["in_size"] = size, min(a.in_size, size)
    module = AudioDrivenVToonify(**fields)
    _, params = interop.from_torch("style2talker_style_a",
                                   random_state("style2talker_style_a", module, np.random.default_rng(3)))
    params = jax.device_put(params)
    rng = np.random.default_rng(1)
    n_latent = 2 * int(math.log2(size)) - 2
    ins = fields["in_size"]
    image = jnp.asarray(rng.uniform(-1, 1, (1, ins, ins, 3)), jnp.float32)
    wplus = jnp.asarray(rng.standard_normal((1, n_latent, a.style_dim)), jnp.float32)
    coeffs = (0.3 * rng.standard_normal((40, a.coeff_nc))).astype(np.float32)
    d_s = np.float32(cfg.inference.style_degree)
    encoded = jax.jit(lambda p, x, w, par: module.apply({"params": p}, x, w, d_s, par, method=encode_identity))(
        params, image, wplus, jnp.zeros((1, ins, ins, 19), jnp.float32))
    fn = jax.jit(lambda p, e, w, x, d: render_batch(module, p, e, w, x, x, d, d_s))
    entry = {}
    for batch in (1, 8):
        window = jnp.asarray(driving_windows(coeffs, cfg.inference.radius)[20:20 + batch])
        args = (params, encoded, wplus[0], image, window)
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        compile_s = time.perf_counter() - t0
        _, median = timed(lambda c=compiled, a=args: jax.block_until_ready(c(*a)), repeats)
        entry[f"batch{batch}"] = {"frames_per_s": batch / median, "ms_per_call": median * 1e3,
                                  "compile_s": compile_s, "tflop_per_s": xla_flops(compiled) / median / 1e12}
        print(f"Style-A {size}: batch {batch} {batch / median:.1f} frames/s (compile {compile_s:.0f} s)", flush=True)
    return entry


def bench_style_a(small: bool, repeats: int) -> dict:
    from jaxtalk.style2talker.config import Style2TalkerConfig

    cfg = config.load("style2talker_tiny" if small else "style2talker_paper", cls=Style2TalkerConfig)
    out: dict = {}
    for size in ([64, 128] if small else [256, 1024]):
        out[str(size)] = style_a_size(cfg, size, repeats)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny configs (the CPU check of this script)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=("svp", "style_e", "style_a"), default=("svp", "style_e", "style_a"))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu.json"))
    args = p.parse_args(argv)
    from jaxtalk.compile_cache import enable_compile_cache

    enable_compile_cache()  # a rerun on the same machine skips the compiles
    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    results: dict = {"device": getattr(dev, "device_kind", str(dev)), "platform": dev.platform,
                     "device_count": jax.device_count(), "jax": jax.__version__, "small": args.small,
                     "host": platform.node(), "cpu_count": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0],
                     "peak_bf16_flop_per_s": peak_flops(getattr(dev, "device_kind", ""))}
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        results["load_avg_1m_now"] = os.getloadavg()[0]
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(path)

    started = time.perf_counter()
    sections = {"style_e": lambda: bench_style_e(args.small, args.repeats, 250),
                "svp": lambda: bench_svp(args.small, args.repeats, on_gpu),
                "style_a": lambda: bench_style_a(args.small, args.repeats)}
    for name in ("style_e", "svp", "style_a"):  # cheapest first
        if name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            results[name] = sections[name]()
        except Exception as e:
            results[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            traceback.print_exc()
        results.setdefault("section_wall_s", {})[name] = time.perf_counter() - t0
        save()
    results["total_wall_s"] = time.perf_counter() - started
    save()
    print(f"wrote {path} ({results['total_wall_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
