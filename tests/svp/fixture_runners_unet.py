"""Golden-fixture runners for the V-Express UNets (`vx_reference_net`, `vx_denoising_unet`) and the V-Express DDIM
scheduler (`vx_ddim_scheduler`).

`RUNNERS = {fixture module name: fn(fixture)}`, run through `tests.fixture_harness`. UNet weights go through
`interop.from_torch` (with an exact round trip back), the Flax module runs on the fixture inputs (channels-first
layouts -> channels-last here) with the call's own arguments, and every output meets the parity standard. The
denoising UNet reads the banks stored with vx_reference_net (block names map the fixture's pairing order onto our
block index order).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import interop
from jaxtalk.diffusion import NoiseSchedule, ScheduleConfig, ddim_setup, ddim_step
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.reference_net import transformer_block_names
from tests.fixture_harness import Fixture, to_channels_last
from tests.parity import assert_close


def assert_round_trip(kind: str, params, weights: Path) -> None:
    """to_torch(from_torch(x)) == x: the same keys and bit-identical values."""
    source = read_state_dict(weights)
    back = interop.to_torch(kind, params)
    assert set(back) == set(source), f"{kind}: round-trip keys differ: {sorted(set(back) ^ set(source))[:6]}"
    for k, v in source.items():
        np.testing.assert_array_equal(back[k], v, err_msg=f"{kind}: {k} changed in the round trip")


def _reference_control(fx: Fixture, mode: str) -> dict:
    """The V-Express `ReferenceAttentionControl` arguments of the call, which must be the ones jaxtalk's
    ReferenceNet and UNet implement (one pass, no CFG doubling, every transformer block fused)."""
    call = fx.calls[0]
    stated = {k: call[k] for k in ("mode", "do_classifier_free_guidance", "fusion_blocks")}
    assert stated == {"mode": mode, "do_classifier_free_guidance": False, "fusion_blocks": "full"}, (
        f"{fx.name}: unsupported ReferenceAttentionControl arguments {stated}")
    fx.waive("calls[0].batch_size", "V-Express uses it only for the CFG unconditional mask, off here")
    fx.waive("calls[0].return_dict", "torch's output container; the Flax modules return arrays")
    return call


def run_reference_net(fx: Fixture) -> None:
    module, params = interop.from_torch("vexpress_reference_net", fx.weights, dict(fx.constructor))
    assert_round_trip("vexpress_reference_net", params, fx.weights)
    z = fx.arrays
    latent = to_channels_last(z["sample"], fx.layout("sample"))
    call = _reference_control(fx, "write")
    assert int(z["timestep"]) == call["timestep"], f"npz timestep {z['timestep']} != call {call['timestep']}"
    out, bank = jax.jit(lambda p, x, c: module.apply({"params": p}, x, call["timestep"], c))(
        params, latent, z["encoder_hidden_states"])
    names = transformer_block_names(module.config)
    ours = {"out": np.asarray(out)}
    for i, name in enumerate(fx.entry["bank_order"]):
        ours[f"bank_{i:02d}"] = np.asarray(bank[names.index(name)])
    for name in fx.entry["outputs"]:
        assert_close(ours[name], to_channels_last(z[name], fx.layout(name)), name=f"vx_reference_net.{name}")


def fixture_bank(folder: Path, config) -> tuple[np.ndarray, ...]:
    """vx_reference_net's stored banks (the denoising UNet's reference input) in our block index order."""
    entry = json.loads((folder / "manifest.json").read_text())["vx_reference_net"]
    with np.load(folder / "vx_reference_net.npz") as z:
        by_name = {name: z[f"bank_{i:02d}"] for i, name in enumerate(entry["bank_order"])}
    return tuple(by_name[name] for name in transformer_block_names(config))


def run_denoising_unet(fx: Fixture) -> None:
    module, params = interop.from_torch("vexpress_denoising_unet", fx.weights, dict(fx.constructor))
    assert_round_trip("vexpress_denoising_unet", params, fx.weights)
    z = fx.arrays
    sample = to_channels_last(z["sample"], fx.layout("sample"))
    b, f = sample.shape[:2]
    call = _reference_control(fx, "read")
    weights = {}
    for name in ("reference_attention_weight", "audio_attention_weight"):
        stated = call[name]  # the Python float V-Express was given (0.9 / 1.1)
        assert np.float32(stated) == np.float32(z[name]), f"{name}: npz {z[name]} != call {stated}"
        assert fx.entry["inputs"][name]["value"] == stated, f"{name}: manifest inputs and call disagree"
        weights[name] = stated
    tokens = z["encoder_hidden_states"]  # ((b f), n, d)
    timesteps = np.full((b,), z["timestep"], np.int64)
    kps = to_channels_last(z["kps_features"], fx.layout("kps_features"))
    bank = fixture_bank(fx.folder, module.config.unet)

    @jax.jit
    def run(p, sample, t, tokens, kps, bank):
        return module.apply({"params": p}, sample, t, tokens, reference_bank=bank, kps_features=kps,
                            reference_weight=weights["reference_attention_weight"],
                            audio_weight=weights["audio_attention_weight"])

    out = run(params, sample, timesteps, tokens.reshape(b, f, *tokens.shape[1:]), kps, bank)
    assert_close(out, to_channels_last(z["out"], fx.layout("out")), name="vx_denoising_unet.out")


def run_ddim_scheduler(fx: Fixture) -> None:
    """V-Express DDIM (v-prediction, zero-terminal SNR, trailing): tables and the recorded steps."""
    kw = fx.constructor
    z = fx.arrays
    assert fx.calls[0]["eta"] == 0.0, "jaxtalk's DDIM step is deterministic (eta = 0)"
    schedule = NoiseSchedule.from_config(ScheduleConfig(
        beta_start=kw["beta_start"], beta_end=kw["beta_end"], beta_schedule=kw["beta_schedule"],
        rescale_zero_terminal_snr=kw["rescale_betas_zero_snr"], prediction_type=kw["prediction_type"]))
    num_steps = len(fx.entry["timesteps"])
    coeffs = ddim_setup(schedule, num_steps, timestep_spacing=kw["timestep_spacing"],
                        steps_offset=kw["steps_offset"], set_alpha_to_one=kw.get("set_alpha_to_one", True),
                        clip_sample=kw["clip_sample"])
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), z["timesteps"])
    assert_close(schedule.alphas_cumprod, z["alphas_cumprod"], name="vx_ddim_scheduler.alphas_cumprod")
    assert float(coeffs.alphas_cumprod_prev[-1]) == float(z["final_alpha_cumprod"])
    step = jax.jit(lambda n, x, v: ddim_step(coeffs, n, x, v))
    x = jnp.asarray(z["step0_sample"])
    for i in range(num_steps):
        assert int(z[f"step{i}_timestep"]) == int(coeffs.timesteps[i])
        alone = step(i, jnp.asarray(z[f"step{i}_sample"]), jnp.asarray(z[f"step{i}_model_output"]))
        assert_close(alone, z[f"step{i}_prev_sample"], name=f"vx_ddim_scheduler.step{i}_prev_sample")
        x = step(i, x, jnp.asarray(z[f"step{i}_model_output"]))  # chained from step 0
        assert_close(x, z[f"step{i}_prev_sample"], name=f"vx_ddim_scheduler.chained_step{i}")


RUNNERS = {
    "vx_reference_net": run_reference_net,
    "vx_denoising_unet": run_denoising_unet,
    "vx_ddim_scheduler": run_ddim_scheduler,
}
