"""One denoising step of the SVP video UNet: jaxtalk (jitted) against diffusers' UNetMotionModel, same run.

    python bench/svp_step.py            # SVP sizes (SD1.5 UNet + V-Express motion modules + style), 16 frames, 64x64
    python bench/svp_step.py --small    # the svp_tiny UNet, 16 frames, 8x8 latents: a quick CPU run

A guided step is one UNet call on the [uncond, cond] pair (batch 2, 16 frames each). jaxtalk runs the full SVP
step: reference attention (attn1_5) over a ReferenceNet bank, per-frame audio cross-attention (5 tokens), style
cross-attention, Head-Kps features added after conv_in and the temporal (AnimateDiff) modules. diffusers'
UNetMotionModel has the same SD UNet, motion modules and per-frame cross-attention context ((B*F, 5, D) in
diffusers 0.42) but no reference or style attention and no added features, so the comparable run is jaxtalk with
those switched off ("matched": reference_mode none, no style, no kps); both ratios are reported. Remaining
difference: diffusers' motion modules normalise over all frames of a clip, V-Express's (jaxtalk's) per frame; the
work is the same.

Reported per framework: compile (jaxtalk: lower + XLA compile; torch eager has none) and first-call time,
steady-state median seconds per step, memory (XLA's compiled memory analysis: arguments + temporaries + outputs;
device peak on GPU; torch CUDA peak on GPU; peak host RSS after each phase). Written to
bench/results/svp_step.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import peak_rss_mb, timed, write_results, xla_flops  # noqa: E402
from jaxtalk import config  # noqa: E402
from jaxtalk.svp.reference_net import ReferenceNet  # noqa: E402
from jaxtalk.svp.video_unet import SVPUNet, SVPUNetConfig  # noqa: E402

AUDIO_TOKENS = 5
STYLE_TOKENS = 1


def svp_config(small: bool) -> SVPUNetConfig:
    if small:
        return config.load("svp_tiny").unet
    return SVPUNetConfig.svp()


def jaxtalk_step(cfg: SVPUNetConfig, batch: int, frames: int, size: int, repeats: int, full: bool) -> dict:
    """Time `SVPUNet.apply` under jit; `full=False` is the run matched to diffusers (no reference/style/kps)."""
    if not full:
        cfg = dataclasses.replace(cfg, reference_mode="none", use_style=False)
    c = cfg.unet
    unet = SVPUNet(cfg)
    rng = np.random.default_rng(0)
    sample = jnp.asarray(rng.standard_normal((batch, frames, size, size, c.in_channels)), jnp.float32)
    audio = jnp.asarray(rng.standard_normal((batch, frames, AUDIO_TOKENS, c.cross_attention_dim)), jnp.float32)
    kwargs = {}
    if full:
        refnet = ReferenceNet(dataclasses.replace(c, use_conv_norm_out=False))
        bank_shapes = jax.eval_shape(lambda: refnet.init_with_output(
            jax.random.key(0), sample[:, 0], jnp.zeros((batch,)), jnp.zeros((batch, 1, c.cross_attention_dim)))[0][1])
        kwargs = dict(
            reference_bank=tuple(jnp.asarray(rng.standard_normal(s.shape), jnp.float32) for s in bank_shapes),
            kps_features=jnp.asarray(rng.standard_normal((batch, frames, size, size, c.block_out_channels[0])) * 0.1,
                                     jnp.float32),
            style_tokens=jnp.asarray(rng.standard_normal((batch, STYLE_TOKENS, cfg.style_dim)), jnp.float32),
            reference_weight=jnp.float32(0.95), audio_weight=jnp.float32(3.0), style_weight=jnp.float32(1.0))
    params = jax.jit(lambda k: unet.init(k, **unet.init_inputs(frames, size)))(jax.random.key(0, impl="unsafe_rbg"))
    t = jnp.full((batch,), 500.0)
    apply = jax.jit(lambda p, x, t, a, kw: unet.apply(p, x, t, a, **kw))
    import time

    t0 = time.perf_counter()
    compiled = apply.lower(params, sample, t, audio, kwargs).compile()
    compile_s = time.perf_counter() - t0
    first, step_s = timed(lambda: compiled(params, sample, t, audio, kwargs).block_until_ready(), repeats)
    ma = compiled.memory_analysis()
    out = {"compile_s": compile_s, "first_s": first, "step_s": step_s,
           "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
           "flops": xla_flops(compiled),
           "xla_memory_mb": {"arguments": ma.argument_size_in_bytes / 2**20, "temporaries": ma.temp_size_in_bytes / 2**20,
                             "outputs": ma.output_size_in_bytes / 2**20},
           "peak_rss_mb": peak_rss_mb()}
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def diffusers_step(cfg: SVPUNetConfig, batch: int, frames: int, size: int, repeats: int) -> dict:
    """diffusers' UNetMotionModel with the same SD UNet and AnimateDiff motion-module settings."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    c, m = cfg.unet, cfg.motion
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(**c.to_diffusers())
    adapter = MotionAdapter(
        block_out_channels=tuple(c.block_out_channels), motion_layers_per_block=c.layers_per_block[0],
        motion_mid_block_layers_per_block=1, motion_num_attention_heads=m.num_attention_heads,
        motion_norm_num_groups=m.norm_num_groups, motion_max_seq_length=m.max_len, use_motion_mid_block=m.mid_block)
    model = UNetMotionModel.from_unet2d(unet2d, adapter).eval().to(device)
    del unet2d
    sample = torch.randn(batch, c.in_channels, frames, size, size, device=device)
    context = torch.randn(batch * frames, AUDIO_TOKENS, c.cross_attention_dim, device=device)  # per frame
    t = torch.full((batch,), 500.0, device=device)

    def call():
        with torch.inference_mode():
            model(sample, t, context)
        if device == "cuda":
            torch.cuda.synchronize()

    first, step_s = timed(call, repeats)
    out = {"first_s": first, "step_s": step_s, "device": device,
           "params": int(sum(p.numel() for p in model.parameters())), "torch_threads": torch.get_num_threads(),
           "peak_rss_mb": peak_rss_mb()}
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the svp_tiny UNet with 8x8 latents (CPU)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=None, help="latent side (default 64, 8 with --small)")
    parser.add_argument("--batch", type=int, default=2, help="2 = the [uncond, cond] pair of a guided step")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both frameworks (default: 1 with --small, else each one's default); "
                             "on a busy small machine one thread each gives stable, comparable numbers")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "svp_step.json"))
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None else (1 if args.small else None)
    if threads is not None:  # before the first JAX computation initialises the CPU backend
        torch.set_num_threads(threads)
        if threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    cfg = svp_config(args.small)
    size = args.size or (8 if args.small else 64)
    if cfg.motion.temporal_position_encoding and args.frames > cfg.motion.max_len:
        parser.error(f"--frames {args.frames} exceeds the motion modules' position table ({cfg.motion.max_len})")
    print(f"{'svp_tiny' if args.small else 'SVP (SD1.5 sizes)'}: batch {args.batch} x {args.frames} frames of "
          f"{size}x{size} latents on {jax.devices()[0].device_kind} ({jax.default_backend()}), threads "
          f"{threads or 'default'}", flush=True)
    theirs = diffusers_step(cfg, args.batch, args.frames, size, args.repeats)
    matched = jaxtalk_step(cfg, args.batch, args.frames, size, args.repeats, full=False)
    full = jaxtalk_step(cfg, args.batch, args.frames, size, args.repeats, full=True)
    result = {
        "config": "svp_tiny" if args.small else "svp", "batch": args.batch, "frames": args.frames, "latent": size,
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
        "cpu": platform.processor() or platform.machine(), "jax": jax.__version__, "torch": torch.__version__,
        "threads": threads or "default",
        "diffusers_unet_motion": theirs, "jaxtalk_matched": matched, "jaxtalk_svp": full,
        "ratio_matched_jaxtalk_over_diffusers": matched["step_s"] / theirs["step_s"],
        "ratio_svp_jaxtalk_over_diffusers": full["step_s"] / theirs["step_s"],
        "differences": ("diffusers UNetMotionModel: no reference attention (attn1_5), no style attention, no kps "
                        "features; its motion GroupNorm spans all frames (V-Express: per frame). jaxtalk_matched "
                        "switches the first three off; jaxtalk_svp is the full SVP step."),
    }
    for name, r in (("diffusers UNetMotionModel", theirs), ("jaxtalk matched", matched), ("jaxtalk SVP", full)):
        extra = f" | compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
        memory = (f" | XLA args+temp+out {sum(r['xla_memory_mb'].values()):.1f} MiB" if "xla_memory_mb" in r else "")
        print(f"  {name:26s} {r['step_s'] * 1e3:10.1f} ms/step | first {r['first_s']:.1f} s{extra}{memory} | "
              f"{r['params'] / 1e6:.2f}M params | peak RSS {r['peak_rss_mb']:.0f} MiB")
    print(f"  ratio jaxtalk / diffusers: matched {result['ratio_matched_jaxtalk_over_diffusers']:.2f}, "
          f"full SVP step {result['ratio_svp_jaxtalk_over_diffusers']:.2f}")
    print(f"  differences: {result['differences']}")
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
