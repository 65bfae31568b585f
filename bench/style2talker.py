"""Style2Talker: Style-E sampling time and Style-A frames per second, against independent PyTorch references.

    python bench/style2talker.py             # published sizes: Style-E (8 blocks, 512 wide) on 250 frames, 5 steps;
                                             # Style-A (VToonify-D full channel table) at 256 and 1024 output
    python bench/style2talker.py --small     # the tiny preset's sizes (64 and 128 px output), about a minute
    python bench/style2talker.py --sizes 256 # Style-A output sizes to run

Every model has random weights (host-drawn as in `jaxtalk.style2talker.models`), the same for both frameworks:
the PyTorch side gets them through `interop.to_torch`. Measured, after compilation (compile time reported apart):
* Style-E: `generate_expression` on (250, 64) audio2exp conditions and one 512-d text feature: 8 windows of 32
  frames through the 5-step respaced ancestral sampler in one compiled scan; and the whole expression stage with
  SadTalker audio2exp (mel windows -> 64-d conditions) in front.
* Style-A, per output size: the pipeline's compiled frame batch (content encoder computed once per identity,
  motion generator + refinement + warped decoder per frame), frames / s at batch 1;
  the StyleGAN2 synthesis of the same generator (W+ -> image, zero noise) in jaxtalk and in a torch synthesis built
  from the independent reference ops in tests/reference/stylegan_ops.py (per-sample modulated / demodulated
  weights, upfirdn2d as shifted sums), same weights, same W+; and VToonify-D (Style-A without its motion path)
  in jaxtalk and in the functional torch reference tests/reference/psp_vtoonify.py:vtoonify_ref.
  Ratios are jaxtalk time / torch time; the torch references are written for clarity, not speed.
Style-A entries carry XLA's flop count of the compiled call and the rate it implies. Results (with
max|jax - torch| / max|torch|, peak RSS and the machine's load average) are printed and written to bench/results/style2talker.json.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import peak_rss_mb, timed, write_results, xla_flops  # noqa: E402
from jaxtalk import config, interop  # noqa: E402
from jaxtalk.style2talker import audio2exp as a2e  # noqa: E402
from jaxtalk.style2talker.config import Style2TalkerConfig  # noqa: E402
from jaxtalk.style2talker.models import build_modules, random_state  # noqa: E402
from jaxtalk.style2talker.pipeline import driving_windows, encode_identity, render_batch  # noqa: E402
from jaxtalk.style2talker.style_a import AudioDrivenVToonify  # noqa: E402
from jaxtalk.style2talker.style_e import generate_expression  # noqa: E402
from tests.reference.psp_vtoonify import vtoonify_ref  # noqa: E402
from tests.reference.stylegan_ops import fir_kernel, modulated_conv_ref, upfirdn2d_ref  # noqa: E402

SQRT2 = math.sqrt(2.0)



FLOPS: dict[int, float] = {}  # id(output) -> XLA's flop count of the call that made it


def jax_timed(fn, args, repeats):
    """(compile s, median s, output) of a jitted `fn(*args)`; the call's flop count (XLA cost analysis) is kept in
    FLOPS under id(output)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = None

    def call():
        nonlocal out
        out = jax.block_until_ready(compiled(*args))

    _, median = timed(call, repeats)
    FLOPS[id(out)] = xla_flops(compiled)
    return compile_s, median, out


def gflops(out, seconds: float) -> dict[str, float]:
    flops = FLOPS.get(id(out), 0.0)
    return {"gflop": flops / 1e9, "gflop_per_s": flops / seconds / 1e9}


def random_params(kind: str, module, seed: int):
    _, params = interop.from_torch(kind, random_state(kind, module, np.random.default_rng(seed)),
                                   {"input_size": module.input_size} if kind == "psp_encoder" else None)
    return params


# ------------------------------------------------------------------------------------------------ Style-E


def bench_style_e(cfg: Style2TalkerConfig, frames: int, repeats: int) -> dict:
    modules = build_modules(cfg)
    se, a2e_module = modules["style_e"], modules["audio2exp"]
    se_params = random_params("style2talker_style_e", se, 1)
    a2e_vars = random_params("sadtalker_audio2exp", a2e_module, 2)
    rng = np.random.default_rng(0)
    sparse = rng.standard_normal((frames, 64)).astype(np.float32)
    text = rng.standard_normal(cfg.style_e.text_dim).astype(np.float32)
    key = jax.random.key(0)
    sampler = cfg.sampler
    compile_s, median, out = jax_timed(
        lambda p, s, t, k: generate_expression(se, p, s, t, k, sampling=sampler), (se_params, sparse, text, key),
        repeats)
    audio = (0.1 * rng.standard_normal(frames * 640)).astype(np.float32)
    mels = a2e.audio_to_mel_windows(audio)
    ref = rng.standard_normal(64).astype(np.float32)

    def stage(v, p, m, r, t, k):
        cond = a2e.audio2exp(a2e_module, v, m[None], r[None])[0]
        return generate_expression(se, p, cond, t, k, sampling=sampler)

    compile_stage, median_stage, _ = jax_timed(stage, (a2e_vars, se_params, mels, ref, text, key), repeats)
    t0 = time.perf_counter()
    a2e.audio_to_mel_windows(audio)
    mel_s = time.perf_counter() - t0
    n = sum(int(np.size(x)) for x in jax.tree.leaves(se_params))
    result = {"frames": frames, "windows": -(-frames // cfg.style_e.window), "steps": 5, "params": n,
              "layers": cfg.style_e.num_layers, "latent_dim": cfg.style_e.latent_dim,
              "compile_s": compile_s, "median_ms": median * 1e3, "finite": bool(np.all(np.isfinite(out))),
              "with_audio2exp": {"compile_s": compile_stage, "median_ms": median_stage * 1e3,
                                 "host_mel_ms": mel_s * 1e3}}
    print(f"Style-E {frames} frames, {result['windows']} windows, 5 steps ({n / 1e6:.2f}M params): "
          f"{median * 1e3:.1f} ms (compile {compile_s:.1f} s); with audio2exp {median_stage * 1e3:.1f} ms "
          f"+ host mel {mel_s * 1e3:.1f} ms")
    return result


# ------------------------------------------------------------------------------------------------ torch StyleGAN2


def _styled_conv(sd, p, x, w, upsample):
    y = modulated_conv_ref(x, sd[f"{p}.conv.weight"][0], w, sd[f"{p}.conv.modulation.weight"],
                           sd[f"{p}.conv.modulation.bias"], upsample=upsample)
    return torch.nn.functional.leaky_relu(y + sd[f"{p}.activate.bias"][None, :, None, None], 0.2) * SQRT2


def _to_rgb(sd, p, x, w, skip):
    y = modulated_conv_ref(x, sd[f"{p}.conv.weight"][0], w, sd[f"{p}.conv.modulation.weight"],
                           sd[f"{p}.conv.modulation.bias"], demodulate=False) + sd[f"{p}.bias"]
    return y if skip is None else y + upfirdn2d_ref(skip, fir_kernel((1, 3, 3, 1), 2), up=2, pad=(2, 1))


def torch_synthesis(sd: dict, prefix: str, wplus: torch.Tensor) -> torch.Tensor:
    """StyleGAN2 synthesis (NCHW) from W+ with zero noise, over a torch-layout state dict."""
    levels = len({k.split(".")[len(prefix.split("."))] for k in sd if k.startswith(prefix + "to_rgbs.")})
    x = sd[prefix + "input.input"].repeat(wplus.shape[0], 1, 1, 1)
    x = _styled_conv(sd, prefix + "conv1", x, wplus[:, 0], False)
    skip = _to_rgb(sd, prefix + "to_rgb1", x, wplus[:, 1], None)
    for k in range(levels):
        x = _styled_conv(sd, f"{prefix}convs.{2 * k}", x, wplus[:, 2 * k + 1], True)
        x = _styled_conv(sd, f"{prefix}convs.{2 * k + 1}", x, wplus[:, 2 * k + 2], False)
        skip = _to_rgb(sd, f"{prefix}to_rgbs.{k}", x, wplus[:, 2 * k + 3], skip)
    return skip


# ------------------------------------------------------------------------------------------------ Style-A


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _rel(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def bench_style_a(cfg: Style2TalkerConfig, out_size: int, repeats: int, torch_repeats: int, vtoonify: bool) -> dict:
    a = cfg.style_a
    fields = a.module_kwargs()
    fields["out_size"] = out_size
    fields["in_size"] = min(a.in_size, out_size)
    module = AudioDrivenVToonify(**fields)
    t0 = time.perf_counter()
    params = random_params("style2talker_style_a", module, 3)
    setup_s = time.perf_counter() - t0
    n_latent = 2 * int(math.log2(out_size)) - 2
    n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    print(f"Style-A {fields['in_size']} -> {out_size}: {n / 1e6:.1f}M params (random weights in {setup_s:.1f} s)")
    rng = np.random.default_rng(1)
    size = fields["in_size"]
    image = rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    wplus = rng.standard_normal((1, n_latent, a.style_dim)).astype(np.float32)
    coeffs = (0.3 * rng.standard_normal((40, a.coeff_nc))).astype(np.float32)
    window = driving_windows(coeffs, cfg.inference.radius)[20:21]
    d_s = np.float32(cfg.inference.style_degree)
    run: dict = {"in_size": size, "out_size": out_size, "params": n, "batch": 1}

    # the pipeline's per-frame work: the identity's content encoder runs once, then every frame batch reuses it
    zero_parsing = np.zeros((1, size, size, 19), np.float32)
    t0 = time.perf_counter()
    encoded = jax.block_until_ready(jax.jit(
        lambda p, x, w, par: module.apply({"params": p}, x, w, d_s, par, method=encode_identity))(
            params, image, wplus, zero_parsing))
    encode_s = time.perf_counter() - t0
    compile_s, median, frames = jax_timed(
        lambda p, e, w, x, d: render_batch(module, p, e, w, x, x, d, d_s), (params, encoded, wplus[0], image, window),
        repeats)
    run["jaxtalk_style_a_frame"] = {"compile_s": compile_s, "median_s": median, "frames_per_s": 1 / median,
                                    **gflops(frames, median),
                                    "identity_encode_once_incl_compile_s": encode_s}
    print(f"  jaxtalk Style-A frame: {median * 1e3:.0f} ms = {1 / median:.2f} frames/s, "
          f"{run['jaxtalk_style_a_frame']['gflop_per_s']:.1f} GFLOP/s (compile {compile_s:.1f} s)")

    # StyleGAN2 synthesis of the same generator, jaxtalk vs torch reference
    sd = {k: torch.from_numpy(np.ascontiguousarray(v))
          for k, v in interop.to_torch("style2talker_style_a", params).items()}

    def synthesis(p, w):
        def fn(m, w):
            g = m.generator.generator
            return g.synthesis(w, g.noise_inputs("zero"))
        return module.apply({"params": p}, w, method=fn)

    compile_g, median_g, out_g = jax_timed(synthesis, (params, wplus), repeats)
    tw = torch.from_numpy(wplus)
    ref_g = None

    def torch_g():
        nonlocal ref_g
        with torch.inference_mode():
            ref_g = torch_synthesis(sd, "generator.generator.", tw)

    _, median_tg = timed(torch_g, torch_repeats)
    ref_g = ref_g.permute(0, 2, 3, 1).numpy()
    run["stylegan2_synthesis"] = {
        "jaxtalk": {"compile_s": compile_g, "median_s": median_g, **gflops(out_g, median_g)},
        "torch_reference": {"median_s": median_tg},
        "ratio_jax_over_torch": median_g / median_tg, "max_abs_diff_over_max_ref": _rel(out_g, ref_g)}
    print(f"  StyleGAN2 synthesis: jaxtalk {median_g * 1e3:.0f} ms (compile {compile_g:.1f} s) | torch reference "
          f"{median_tg * 1e3:.0f} ms | ratio {median_g / median_tg:.2f} | rel diff "
          f"{run['stylegan2_synthesis']['max_abs_diff_over_max_ref']:.1e}")

    if vtoonify:  # VToonify-D = Style-A without the motion generator / refinement, against the functional reference
        parsing = (4 * rng.standard_normal((1, size, size, 19))).astype(np.float32)

        def vt(p, x, par, w):
            return module.apply({"params": p}, x, w, d_s, parsing=par, method=_vtoonify_forward)

        compile_v, median_v, out_v = jax_timed(vt, (params, image, parsing, wplus), repeats)
        tx = torch.cat([_nchw(image), _nchw(parsing) / 16], dim=1)
        ref_v = None

        def torch_v():
            nonlocal ref_v
            with torch.inference_mode():
                ref_v = vtoonify_ref(sd, tx, tw, float(d_s), in_size=size)

        _, median_tv = timed(torch_v, torch_repeats)
        ref_v = ref_v.permute(0, 2, 3, 1).numpy()
        run["vtoonify_d"] = {
            "jaxtalk": {"compile_s": compile_v, "median_s": median_v, **gflops(out_v, median_v)},
            "torch_reference": {"median_s": median_tv},
            "ratio_jax_over_torch": median_v / median_tv, "max_abs_diff_over_max_ref": _rel(out_v, ref_v)}
        print(f"  VToonify-D: jaxtalk {median_v * 1e3:.0f} ms (compile {compile_v:.1f} s) | torch reference "
              f"{median_tv * 1e3:.0f} ms | ratio {median_v / median_tv:.2f} | rel diff "
              f"{run['vtoonify_d']['max_abs_diff_over_max_ref']:.1e}")
    run["peak_rss_mb"] = peak_rss_mb()
    run["frames_finite"] = bool(np.all(np.isfinite(np.asarray(frames, np.float32))))
    return run


def _vtoonify_forward(m, x, style, d_s, parsing):
    """The VToonify-D part of Style-A: content encoder, fusion decoder, no warp / refinement."""
    resstyles, adastyles = m.style_codes(style)
    out, skip, feats = m.encode(m.content_input(x, parsing), resstyles, d_s)
    return m.decode(out, skip, feats, adastyles, d_s)[0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny preset sizes instead of the published ones")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="Style-A output sizes (256 1024)")
    parser.add_argument("--frames", type=int, default=250, help="Style-E clip length")
    parser.add_argument("--repeats", type=int, default=3, help="timed jaxtalk calls after the first")
    parser.add_argument("--torch-repeats", type=int, default=1, help="timed torch calls after the first")
    parser.add_argument("--no-vtoonify", action="store_true", help="skip the VToonify-D comparison")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "style2talker.json"))
    args = parser.parse_args(argv)
    cfg = config.load("style2talker_tiny" if args.small else "style2talker_paper", cls=Style2TalkerConfig)
    sizes = args.sizes or ([64, 128] if args.small else [256, 1024])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = jax.devices()[0]
    results = {"config": "tiny" if args.small else "paper", "backend": jax.default_backend(),
               "device": getattr(device, "device_kind", str(device)), "cpu": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0],
               "torch_threads": torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__}
    results["style_e"] = bench_style_e(cfg, args.frames, args.repeats)
    results["style_a"] = [bench_style_a(cfg, s, args.repeats, args.torch_repeats, not args.no_vtoonify)
                          for s in sizes]
    results["peak_rss_mb"] = peak_rss_mb()
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    write_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
