"""Whole-clip SVP sampling, seconds per generated frame: jaxtalk's `SVPPipeline` against a PyTorch loop built from
diffusers parts the way V-Express's pipeline runs, same clip length, windows, steps and guidance, same VAE weights.

    python bench/svp_sample.py --small            # svp_tiny (32x32, 4-frame windows), 12 frames
    python bench/svp_sample.py --frames 24        # SVP / SD1.5 sizes at 512x512 (needs an idle machine or a GPU)

jaxtalk, per clip (`SVPPipeline.__call__`, compiled once, then timed): reference (VAE encode + ReferenceNet ONCE per
clip), audio (Whisper + AudioProjection once per clip), style tokens once per clip, denoise (one compiled scan over
the steps, windows in a fori_loop, CFG's [uncond, cond] pair in ONE batched UNet call), VAE decode in chunks.
Reported whole (`jaxtalk_full`: reference attention, style attention, Head-Kps, audio) and stage by stage.

PyTorch (`torch_diffusers`): diffusers' UNetMotionModel (SD UNet + AnimateDiff motion modules, per-frame audio
cross-attention tokens) with EulerDiscreteScheduler; per step every context window runs the UNet on the
concatenated [uncond, cond] batch, the predictions are averaged over overlapping windows (V-Express), one
scheduler step; then diffusers' AutoencoderKL decodes `video.decode_chunk` frames at a time. diffusers has no
reference / style attention nor Head-Kps input, so this loop does LESS work per step than jaxtalk_full; the
comparable jaxtalk figure is `jaxtalk_matched` (the same denoise + decode with reference_mode none, no style,
no kps). Its UNet weights are random (diffusers cannot hold the V-Express layout); the VAE weights are jaxtalk's,
exported with `interop.to_torch("sd_vae")`. Timings are interleaved per round; the load average is recorded.
Writes bench/results/svp_sample.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from jaxtalk import config, interop  # noqa: E402
from jaxtalk.data import media  # noqa: E402
from jaxtalk.svp import context  # noqa: E402
from jaxtalk.svp import models as svp_models  # noqa: E402
from jaxtalk.svp import pipeline as P  # noqa: E402


def clip_for(cfg, frames: int, rng: np.random.Generator) -> P.ClipInputs:
    samples = int(round(frames / cfg.video.fps * media.SAMPLE_RATE)) + 1
    style = None
    if cfg.style.enabled:
        d = cfg.unet.style_dim
        style = svp_models.StyleGaussian(rng.standard_normal((1, d)).astype(np.float32),
                                         np.full((1, d), 0.1, np.float32))
    kps = (rng.uniform(0.3, 0.7, (8, 2)) * np.array([cfg.video.width, cfg.video.height])).astype(np.float32)
    return P.ClipInputs(reference=rng.integers(0, 256, (cfg.video.height, cfg.video.width, 3), dtype=np.uint8),
                        audio=(0.1 * rng.standard_normal(samples)).astype(np.float32), kps=kps, style=style)


class TorchVExpressLoop:
    """The V-Express sampling loop from diffusers parts (see the module docstring)."""

    def __init__(self, cfg, vae_params, frames: int):
        from diffusers import (
            AutoencoderKL,
            EulerDiscreteScheduler,
            MotionAdapter,
            UNet2DConditionModel,
            UNetMotionModel,
        )

        c, m = cfg.unet.unet, cfg.unet.motion
        torch.manual_seed(0)
        unet2d = UNet2DConditionModel(**c.to_diffusers())
        adapter = MotionAdapter(
            block_out_channels=tuple(c.block_out_channels), motion_layers_per_block=c.layers_per_block[0],
            motion_mid_block_layers_per_block=1, motion_num_attention_heads=m.num_attention_heads,
            motion_norm_num_groups=m.norm_num_groups, motion_max_seq_length=m.max_len, use_motion_mid_block=m.mid_block)
        self.unet = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
        self.vae = AutoencoderKL(**cfg.vae.to_diffusers()).eval()
        state = interop.to_torch("sd_vae", vae_params)
        loaded = self.vae.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)
        self.vae_key_mismatch = sorted(loaded.missing_keys) + sorted(loaded.unexpected_keys)  # reported in the JSON
        s = cfg.sampler
        self.scheduler = EulerDiscreteScheduler(
            num_train_timesteps=s.num_train_timesteps, beta_start=s.beta_start, beta_end=s.beta_end,
            beta_schedule=s.beta_schedule, prediction_type=s.prediction_type, timestep_spacing=s.timestep_spacing,
            steps_offset=s.steps_offset)
        self.cfg = cfg
        self.frames = frames
        ctx = cfg.context
        plan = (context.window_plan(frames, frames, 0) if frames <= ctx.frames
                else context.window_plan(frames, ctx.frames, ctx.overlap))
        self.windows = [torch.from_numpy(np.asarray(w, np.int64)) for w in plan.indices]
        f = cfg.vae_scale_factor
        self.latent = (c.in_channels, cfg.video.height // f, cfg.video.width // f)
        self.tokens = (cfg.audio_projection.num_queries, c.cross_attention_dim)

    @torch.inference_mode()
    def __call__(self, seed: int = 0) -> np.ndarray:
        cfg, F = self.cfg, self.frames
        g = torch.Generator().manual_seed(seed)
        sch = self.scheduler
        sch.set_timesteps(cfg.sampler.steps)
        latents = torch.randn(1, self.latent[0], F, *self.latent[1:], generator=g) * sch.init_noise_sigma
        audio = torch.randn(1, F, *self.tokens, generator=g)
        scale = cfg.guidance.scale
        for t in sch.timesteps:
            x_in = sch.scale_model_input(latents, t)
            acc = torch.zeros_like(latents)
            count = torch.zeros(1, 1, F, 1, 1)
            for idx in self.windows:
                w = x_in[:, :, idx]
                a = audio[:, idx].reshape(-1, *self.tokens)
                ctx = torch.cat([torch.zeros_like(a), a])  # [uncond, cond] per-frame tokens
                out = self.unet(torch.cat([w, w]), t, ctx).sample
                u, c = out.chunk(2)
                acc[:, :, idx] += u + scale * (c - u)
                count[:, :, idx] += 1
            latents = sch.step(acc / count, t, latents).prev_sample
        flat = latents.permute(0, 2, 1, 3, 4).reshape(F, *self.latent) / self.vae.config.scaling_factor
        chunk = cfg.video.decode_chunk
        frames = [self.vae.decode(flat[i:i + chunk]).sample for i in range(0, F, chunk)]
        img = torch.cat(frames).clamp(-1, 1)
        return ((img / 2 + 0.5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def matched_config(cfg):
    unet = dataclasses.replace(cfg.unet, reference_mode="none", use_style=False)
    return dataclasses.replace(cfg, unet=unet, style=dataclasses.replace(cfg.style, enabled=False))


def jaxtalk_matched(models, frames: int, rng: np.random.Generator):
    """Denoise + decode with the diffusers-comparable UNet (no reference / style / kps), compiled; returns a call."""
    cfg = matched_config(models.config)
    m = svp_models.build_models(cfg, seed=1)
    pipe = P.SVPPipeline(m, progress=False)
    keys = P.clip_keys(0, 1)
    tokens = jnp.asarray(rng.standard_normal((1, frames, cfg.audio_projection.num_queries,
                                              cfg.unet.unet.cross_attention_dim)), jnp.float32)
    cond = P.Conditions(audio_tokens=tokens, reference_bank=())

    def call():
        latents = pipe.sample_latents(cond, keys, frames)
        return pipe.decode(latents)

    return call


def interleaved(fns: dict, rounds: int) -> tuple[dict, list[float]]:
    times = {k: [] for k in fns}
    loads = []
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    return {k: statistics.median(v) for k, v in times.items()}, loads


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="svp_tiny sizes")
    p.add_argument("--frames", type=int, default=None, help="clip length (default 12 small, 24 full)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "svp_sample.json"))
    args = p.parse_args(argv)
    from jaxtalk.compile_cache import enable_compile_cache

    enable_compile_cache()  # reruns skip the compiles (first-call times then show the cached load)
    frames = args.frames or (12 if args.small else 24)
    overrides = ["context.cut_to_windows=false"] + ([f"sampler.steps={args.steps}"] if args.steps else [])
    if args.small:
        overrides.append("context.overlap=2")
    cfg = config.load("svp_tiny" if args.small else "svp_paper", overrides=overrides)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    models = svp_models.build_models(cfg, seed=0)
    build_s = time.perf_counter() - t0
    pipe = P.SVPPipeline(models, progress=False)
    clip = clip_for(cfg, frames, rng)
    assert pipe.num_frames(clip.audio)[0] == frames, pipe.num_frames(clip.audio)
    res: dict = {"config": "svp_tiny" if args.small else "svp_paper", "frames": frames, "steps": cfg.sampler.steps,
                 "size": [cfg.video.height, cfg.video.width], "windows": pipe.window_plan(frames).num_windows,
                 "guidance_scale": cfg.guidance.scale, "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__,
                 "random_init_s": build_s, "load_avg_1m_at_start": os.getloadavg()[0],
                 "note": "interleaved timings; on a loaded machine read the ratios, not the absolute seconds"}
    t0 = time.perf_counter()
    pipe([clip], seed=0)
    res["jaxtalk_first_call_s"] = time.perf_counter() - t0  # compile + run

    stages: dict[str, list[float]] = {"prepare": [], "denoise": [], "decode": []}

    def full():
        keys = P.clip_keys(0, 1)
        t = time.perf_counter()
        cond = pipe.prepare([clip], keys, frames)
        jax.block_until_ready(cond)
        stages["prepare"].append(time.perf_counter() - t)
        t = time.perf_counter()
        lat = pipe.sample_latents(cond, keys, frames)
        stages["denoise"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pipe.decode(lat)
        stages["decode"].append(time.perf_counter() - t)

    fns = {"jaxtalk_full": full}
    matched = jaxtalk_matched(models, frames, rng)
    t0 = time.perf_counter()
    matched()
    res["jaxtalk_matched_first_call_s"] = time.perf_counter() - t0
    fns["jaxtalk_matched"] = matched
    if not args.no_torch:
        loop = TorchVExpressLoop(cfg, models.params["vae"], frames)
        t0 = time.perf_counter()
        loop()
        res["torch_first_call_s"] = time.perf_counter() - t0
        res["torch_vae_key_mismatch"] = loop.vae_key_mismatch
        fns["torch_diffusers"] = loop
    med, loads = interleaved(fns, args.rounds)
    res["s_per_frame"] = {k: v / frames for k, v in med.items()}
    res["jaxtalk_full_stage_s"] = {k: statistics.median(v) for k, v in stages.items()}
    res["load_avg_1m"] = loads
    if "torch_diffusers" in med:
        res["ratio_matched_jaxtalk_over_torch"] = med["jaxtalk_matched"] / med["torch_diffusers"]
        res["ratio_full_jaxtalk_over_torch"] = med["jaxtalk_full"] / med["torch_diffusers"]
    line = " | ".join(f"{k} {v:.3f} s/frame" for k, v in res["s_per_frame"].items())
    print(f"{res['config']} {frames} frames x {cfg.sampler.steps} steps, {res['windows']} windows, CFG "
          f"{cfg.guidance.scale}: {line} (load {min(loads):.1f}-{max(loads):.1f})")
    if "ratio_matched_jaxtalk_over_torch" in res:
        print(f"  ratio jaxtalk / torch: matched {res['ratio_matched_jaxtalk_over_torch']:.2f}, full SVP "
              f"{res['ratio_full_jaxtalk_over_torch']:.2f}")
    print("  jaxtalk_full stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in res["jaxtalk_full_stage_s"].items()))
    write_results(args.out, res)
    return res


if __name__ == "__main__":
    main()
