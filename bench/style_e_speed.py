"""Style-E and audio2exp: where the time goes, the speed paths against the plain ones, and the ratio to PyTorch.

    python bench/style_e_speed.py            # paper sizes: Style-E (8 blocks, 512 wide), 250 frames, 5 steps
    python bench/style_e_speed.py --small    # the tiny preset's Style-E

Same random weights for every variant (host-drawn torch-layout state dicts, `jaxtalk.style2talker.models`); all
variants are timed INTERLEAVED in one process (round r runs each variant once), so a loaded machine slows them
alike; the machine's 1-minute load average is recorded at every round and printed next to every ratio.

Variants:
* Style-E sampling of 250 frames (8 windows of 32, one batch, 5-step respaced ancestral, same x_T and noises):
  `jaxtalk` (compiled scan over `folded_denoise`: conditioning, input_process and the step embeddings folded out
  of the loop by `fold_for_sampling`), `jaxtalk_full_network` (the whole network at every step) and `torch` (a
  PyTorch eager MetaModel written here from the published layer list, Conv1d fc0 as the original, with the same
  respaced ancestral update).
* audio2exp (SadTalker SimpleWrapperV2, 250 mel windows): `jaxtalk` (`audio2exp.audio2exp`), `jaxtalk_one_batch`
  (all 250 frames in one call) and `torch` (the independent reference in tests/style2talker).
* the whole expression stage: `expression_from_audio` (audio2exp + Style-E, as the pipeline calls it) against the
  torch reference's audio2exp followed by its Style-E, plus the host mel front end.
* work: FLOPs per call (counted from the layer shapes) and XLA's fp32 matmul rate measured in the same run, which
  give the time the stage would take if it ran at that rate (a floor for these shapes on this machine, at this load).
Writes bench/results/style_e_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jaxtalk import config, interop  # noqa: E402
from jaxtalk.diffusion.respaced import respaced_step  # noqa: E402
from jaxtalk.nn import layers  # noqa: E402
from jaxtalk.style2talker import audio2exp as a2e  # noqa: E402
from jaxtalk.style2talker import style_e as se_lib  # noqa: E402
from jaxtalk.style2talker.config import Style2TalkerConfig  # noqa: E402
from jaxtalk.style2talker.models import build_modules, random_state  # noqa: E402


class TorchStyleE(torch.nn.Module):
    """PyTorch eager Style-E (MetaModel + DiffMLP) from the published structure, torch state-dict names."""

    def __init__(self, c: se_lib.StyleEConfig):
        super().__init__()
        nn = torch.nn
        d = c.latent_dim
        self.embed_timestep = nn.Module()
        self.embed_timestep.register_buffer("pe", torch.zeros(c.max_timesteps, 1, d))
        self.sparse_process = nn.Linear(c.sparse_dim, d)
        self.input_process = nn.Linear(c.nfeats, d)
        self.output_process = nn.Linear(d, c.nfeats)
        blocks = []
        for i in range(c.num_layers):
            b = nn.Module()
            if i == 0:
                b.conct = nn.Linear(2 * d + c.text_dim, d)
            b.emb_fc, b.norm0, b.fc0 = nn.Linear(d, d), nn.LayerNorm(d), nn.Conv1d(c.window, c.window, 1)
            b.norm1, b.fc1 = nn.LayerNorm(d), nn.Linear(d, d)
            blocks.append(b)
        self.mlp = nn.Module()
        self.mlp.motion_mlp = nn.Module()
        self.mlp.motion_mlp.mlps = nn.ModuleList(blocks)
        self.window = c.window

    def forward(self, x, t, sparse, text):
        emb = self.embed_timestep.pe[t]  # (B, 1, D)
        text = text[:, None, :].expand(-1, self.window, -1)
        h = torch.cat([self.sparse_process(sparse), self.input_process(x), text], dim=-1)
        for i, b in enumerate(self.mlp.motion_mlp.mlps):
            if i == 0:
                h = b.conct(h)
            h = h + b.emb_fc(torch.nn.functional.silu(emb))
            h = h + torch.nn.functional.silu(b.fc0(b.norm0(h)))
            h = h + torch.nn.functional.silu(b.fc1(b.norm1(h)))
        return self.output_process(h)


def torch_sample(model, coeffs, x_T, noises, sparse, text):
    """The 5-step respaced ancestral loop (x_0 prediction) in torch, with our per-step tables."""
    c1 = coeffs.posterior_mean_coef1.tolist()
    c2 = coeffs.posterior_mean_coef2.tolist()
    std = np.exp(0.5 * np.asarray(coeffs.log_variance, np.float64)) * np.asarray(coeffs.noise_mask)
    ts = [int(t) for t in np.asarray(coeffs.model_timesteps)]
    x = x_T
    with torch.inference_mode():
        for i, t in enumerate(ts):
            x0 = model(x, torch.full((x.shape[0],), t, dtype=torch.long), sparse, text)
            x = c1[i] * x0 + c2[i] * x + float(std[i]) * noises[i]
    return x


def full_network_sample(module, params, x_T, noises, sparse, text, coeffs):
    """The sampler without folding: the full network (sparse / text through `conct`) at every step."""
    n = sparse.shape[0]

    def body(x, inp):
        i, z = inp
        out = module.apply({"params": params}, x, jnp.full((n,), coeffs.model_timesteps[i], jnp.int32), sparse, text)
        return respaced_step(coeffs, i, x, out.astype(jnp.float32), noise=z), None

    return jax.lax.scan(body, x_T, (jnp.arange(coeffs.num_steps), noises))[0]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def interleaved(fns: dict, rounds: int) -> tuple[dict, list[float]]:
    """Median seconds per variant over `rounds` rounds that each run every variant once (after one warm call)."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    loads = []
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    return {k: statistics.median(v) for k, v in times.items()}, loads


def style_e_flops(c: se_lib.StyleEConfig, rows: int, steps: int) -> float:
    """FLOPs of `steps` folded denoiser calls on `rows` = windows x T frames (matmuls only, 2 per multiply-add)."""
    windows = rows // c.window
    per_step = 2 * rows * (c.nfeats * c.latent_dim + c.latent_dim * c.nfeats)  # folded input, output_process
    per_step += c.num_layers * 2 * (rows * c.latent_dim * c.latent_dim + windows * c.window ** 2 * c.latent_dim)
    return float(steps * per_step)


def audio2exp_flops(frames: int) -> float:
    """FLOPs of the full-width SadTalker audio encoder + mapping1 on `frames` mel windows (80 x 16)."""
    h, w, cin, total = a2e.NUM_MELS, a2e.MEL_STEP_SIZE, 1, 0
    for cout, k, (sh, sw), pad, _ in a2e.ENCODER_UNITS:
        h, w = (h + 2 * pad - k) // sh + 1, (w + 2 * pad - k) // sw + 1
        total += 2 * h * w * cout * k * k * cin
        cin = cout
    return float(frames * (total + 2 * (cin + a2e.EXP_DIM + 1) * a2e.EXP_DIM))


def matmul_chain() -> tuple[float, Callable[[], object]]:
    """(FLOPs, call) of XLA fp32 matmuls on Style-E's shape (256 x 512 @ 512 x 512, 8 chained): timed in the same
    rounds as the variants, it gives the matmul rate at the load they saw."""
    rng = np.random.default_rng(3)
    h = jnp.asarray(rng.standard_normal((256, 512)), jnp.float32)
    ws = [jnp.asarray(rng.standard_normal((512, 512)) / np.sqrt(512), jnp.float32) for _ in range(8)]

    def chain(h, ws):
        for w in ws:
            h = jnp.tanh(h @ w)
        return h

    f = jax.jit(chain).lower(h, ws).compile()
    return 8 * 2 * 256 * 512 * 512, lambda: jax.block_until_ready(f(h, ws))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny preset sizes")
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-audio2exp", action="store_true")
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "style_e_speed.json"))
    args = p.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    cfg = config.load("style2talker_tiny" if args.small else "style2talker_paper", cls=Style2TalkerConfig)
    mods = build_modules(cfg)
    module = mods["style_e"]
    c = module.config
    state = random_state("style2talker_style_e", module, np.random.default_rng(1))
    _, params = interop.from_torch("style2talker_style_e", state)
    tmodel = TorchStyleE(c).eval()
    tmodel.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    coeffs = se_lib.sampler_coefficients(cfg.sampler)
    plan = se_lib.window_plan(args.frames, c.window)
    n = plan.num_windows
    rng = np.random.default_rng(0)
    sparse = rng.standard_normal((n, c.window, c.sparse_dim)).astype(np.float32)
    text = np.repeat(rng.standard_normal((1, c.text_dim)).astype(np.float32), n, 0)
    x_T = rng.standard_normal((n, c.window, c.nfeats)).astype(np.float32)
    noises = rng.standard_normal((coeffs.num_steps, n, c.window, c.nfeats)).astype(np.float32)
    results: dict = {"config": "tiny" if args.small else "paper", "frames": args.frames, "windows": n,
                     "steps": coeffs.num_steps, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "jax": jax.__version__, "torch": torch.__version__, "load_avg_1m_at_start": os.getloadavg()[0],
                     "note": "timings interleaved in one process; read ratios, not absolute times, on a loaded machine"}

    t0 = time.perf_counter()
    folded = jax.jit(lambda p, s, t, x, z: se_lib.sample_windows(module, p, s, t, sampling=cfg.sampler, x_T=x,
                                                                  noises=z)).lower(params, sparse, text, x_T,
                                                                                   noises).compile()
    compile_folded = time.perf_counter() - t0
    plain = jax.jit(lambda p, s, t, x, z: full_network_sample(module, p, x, z, s, t, coeffs)).lower(
        params, sparse, text, x_T, noises).compile()
    args_j = (params, sparse, text, x_T, noises)
    ts, tt, tx, tz = (torch.from_numpy(a) for a in (sparse, text, x_T, noises))
    out = {}
    chain_flops, chain = matmul_chain()
    fns = {
        "matmul_chain": chain,
        "jaxtalk": lambda: out.__setitem__("jaxtalk", jax.block_until_ready(folded(*args_j))),
        "jaxtalk_full_network": lambda: out.__setitem__("full", jax.block_until_ready(plain(*args_j))),
        "torch": lambda: out.__setitem__("torch", torch_sample(tmodel, coeffs, tx, tz, ts, tt)),
    }
    med, loads = interleaved(fns, args.rounds)
    rate = chain_flops / med.pop("matmul_chain")
    flops = style_e_flops(c, n * c.window, coeffs.num_steps)
    results["xla_fp32_matmul_gflops"] = {"value": rate / 1e9, "load_avg_1m": loads}
    results["style_e"] = {
        "ms": {k: v * 1e3 for k, v in med.items()}, "compile_s": compile_folded,
        "ratio_jaxtalk_over_torch": med["jaxtalk"] / med["torch"],
        "ratio_full_network_over_jaxtalk": med["jaxtalk_full_network"] / med["jaxtalk"],
        "gflop": flops / 1e9, "ms_at_measured_matmul_rate": flops / rate * 1e3,
        "max_rel_diff_vs_torch": rel(out["jaxtalk"], out["torch"].numpy()),
        "max_rel_diff_full_network": rel(out["jaxtalk"], out["full"]), "load_avg_1m": loads}
    print(f"Style-E {args.frames} frames ({n} windows, {coeffs.num_steps} steps): jaxtalk {med['jaxtalk'] * 1e3:.0f} ms"
          f" | full network {med['jaxtalk_full_network'] * 1e3:.0f} ms | torch eager {med['torch'] * 1e3:.0f} ms | "
          f"ratio {med['jaxtalk'] / med['torch']:.2f} (load {min(loads):.1f}-{max(loads):.1f}) | rel diff "
          f"{results['style_e']['max_rel_diff_vs_torch']:.1e}", flush=True)
    print(f"  work {flops / 1e9:.2f} GFLOP; XLA fp32 matmul {rate / 1e9:.0f} GFLOP/s in the same rounds -> "
          f"{flops / rate * 1e3:.0f} ms if all of it ran at that rate", flush=True)

    if not args.small:  # fc0 at paper size on the same activations: frame contraction vs transposed Conv1d
        h = jnp.asarray(rng.standard_normal((n, c.window, c.latent_dim)), jnp.float32)
        conv = layers.conv(c.window, (1,), name="fc0")
        mix = se_lib.FrameMix(c.window)
        cp = jax.tree.map(lambda a: a, mix.init(jax.random.key(0), h))
        old = jax.jit(lambda h: jnp.swapaxes(conv.apply(cp, jnp.swapaxes(h, 1, 2)), 1, 2)).lower(h).compile()
        new = jax.jit(lambda h: mix.apply(cp, h)).lower(h).compile()
        piece, pl = interleaved({"conv1d_transposed": lambda: jax.block_until_ready(old(h)),
                                 "frame_contraction": lambda: jax.block_until_ready(new(h))}, 20)
        results["fc0_piece"] = {"ms": {k: v * 1e3 for k, v in piece.items()}, "load_avg_1m": pl,
                                "max_abs_diff": float(jnp.max(jnp.abs(old(h) - new(h))))}
        print(f"  fc0 one block: transposed Conv1d {piece['conv1d_transposed'] * 1e3:.2f} ms | frame contraction "
              f"{piece['frame_contraction'] * 1e3:.2f} ms (load {max(pl):.1f})", flush=True)

    if not args.no_audio2exp:
        results.update(bench_audio2exp(args, cfg, module, params, tmodel, coeffs, plan, text[0], rate))
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return results


def bench_audio2exp(args, cfg, module, params, tmodel, coeffs, plan, text_row, rate) -> dict:
    """audio2exp alone (jaxtalk chunked / one batch / torch), then the whole expression stage in both."""
    from tests.style2talker.test_audio2exp import _TorchSimpleWrapperV2

    rng = np.random.default_rng(5)
    net = _TorchSimpleWrapperV2().eval()
    a2m, a2v = interop.from_torch("sadtalker_audio2exp", {k: v.numpy() for k, v in net.state_dict().items()})
    audio = (0.1 * rng.standard_normal(args.frames * 640)).astype(np.float32)
    t0 = time.perf_counter()
    mels = a2e.audio_to_mel_windows(audio)[None]
    host_mel_s = time.perf_counter() - t0
    ref = rng.standard_normal((1, 64)).astype(np.float32)
    chunked = jax.jit(lambda v, m, r: a2e.audio2exp(a2m, v, m, r)).lower(a2v, mels, ref).compile()
    whole = jax.jit(lambda v, m, r: a2e.audio2exp(a2m, v, m, r, chunk=None)).lower(a2v, mels, ref).compile()
    tm = torch.from_numpy(mels[0])[:, None]
    tr = torch.from_numpy(np.repeat(ref, args.frames, 0))
    tq = torch.zeros(args.frames)
    a_out = {}

    def torch_a2e():
        with torch.inference_mode():
            a_out["torch"] = net(tm, tr, tq)
        return a_out["torch"]

    fns = {"jaxtalk": lambda: a_out.__setitem__("jax", jax.block_until_ready(chunked(a2v, mels, ref))),
           "jaxtalk_one_batch": lambda: jax.block_until_ready(whole(a2v, mels, ref)),
           "torch": torch_a2e}
    amed, aloads = interleaved(fns, max(2, args.rounds // 2))
    flops = audio2exp_flops(args.frames)
    res = {"audio2exp": {
        "ms": {k: v * 1e3 for k, v in amed.items()}, "ratio_jaxtalk_over_torch": amed["jaxtalk"] / amed["torch"],
        "ratio_one_batch_over_chunked": amed["jaxtalk_one_batch"] / amed["jaxtalk"],
        "gflop": flops / 1e9, "ms_at_measured_matmul_rate": flops / rate * 1e3,
        "max_rel_diff_vs_torch": rel(a_out["jax"][0], a_out["torch"].numpy()), "load_avg_1m": aloads}}
    print(f"audio2exp {args.frames} frames: jaxtalk {amed['jaxtalk'] * 1e3:.0f} ms | one batch "
          f"{amed['jaxtalk_one_batch'] * 1e3:.0f} ms | torch eager {amed['torch'] * 1e3:.0f} ms | ratio "
          f"{amed['jaxtalk'] / amed['torch']:.2f} (load {min(aloads):.1f}-{max(aloads):.1f}) | work "
          f"{flops / 1e9:.1f} GFLOP -> {flops / rate * 1e3:.0f} ms at the measured matmul rate", flush=True)

    # The whole expression stage: jaxtalk's expression_from_audio vs torch audio2exp + torch Style-E (same windows).
    c = module.config
    key = jax.random.key(0)
    nw = plan.num_windows
    x_T = torch.from_numpy(rng.standard_normal((nw, c.window, c.nfeats)).astype(np.float32))
    noises = torch.from_numpy(rng.standard_normal((coeffs.num_steps, nw, c.window, c.nfeats)).astype(np.float32))
    ttext = torch.from_numpy(np.repeat(text_row[None], nw, 0))

    def jax_stage():
        return jax.block_until_ready(se_lib.expression_from_audio(module, params, a2m, a2v, mels[0], ref[0],
                                                                  text_row, key, sampling=cfg.sampler))

    def torch_stage():
        cond = torch_a2e().numpy()[plan.gather]  # (windows, T, 64)
        x = torch_sample(tmodel, coeffs, x_T, noises, torch.from_numpy(cond), ttext)
        return x.reshape(-1, c.nfeats)[torch.from_numpy(plan.scatter)]

    smed, sloads = interleaved({"jaxtalk": jax_stage, "torch": torch_stage}, max(2, args.rounds // 2))
    total_flops = flops + style_e_flops(c, nw * c.window, coeffs.num_steps)
    res["expression_stage"] = {
        "ms": {k: v * 1e3 for k, v in smed.items()}, "host_mel_ms": host_mel_s * 1e3,
        "ratio_jaxtalk_over_torch": smed["jaxtalk"] / smed["torch"], "gflop": total_flops / 1e9,
        "ms_at_measured_matmul_rate": total_flops / rate * 1e3, "load_avg_1m": sloads}
    print(f"audio2exp + Style-E {args.frames} frames: jaxtalk {smed['jaxtalk'] * 1e3:.0f} ms (+ host mel "
          f"{host_mel_s * 1e3:.0f} ms) | torch eager {smed['torch'] * 1e3:.0f} ms | ratio "
          f"{smed['jaxtalk'] / smed['torch']:.2f} (load {min(sloads):.1f}-{max(sloads):.1f})", flush=True)
    return res


if __name__ == "__main__":
    main()
