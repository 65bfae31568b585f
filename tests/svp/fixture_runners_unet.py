"""Golden-fixture runners for the V-Express UNets (`vx_reference_net`, `vx_denoising_unet`) and the V-Express DDIM
scheduler (`vx_ddim_scheduler`).

`RUNNERS = {fixture module name: fn(fixture_dir, entry)}`; `fixture_dir` is the folder holding the module's files,
`entry` its manifest record. UNet weights go through `interop.from_torch` (with an exact round trip back), the
Flax module runs on the fixture inputs (channels-first layouts -> channels-last here) and every output meets the
parity standard. The denoising UNet reads the banks stored with vx_reference_net (block names map the fixture's
pairing order onto our block index order).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import interop
from jaxtalk.diffusion import NoiseSchedule, ScheduleConfig, ddim_setup, ddim_step
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.reference_net import transformer_block_names
from tests.parity import assert_close
from tests.svp.fixture_util import to_channels_last


def _arrays(fixture_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(fixture_dir / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def assert_round_trip(kind: str, params, weights: Path) -> None:
    """to_torch(from_torch(x)) == x: the same keys and bit-identical values."""
    source = read_state_dict(weights)
    back = interop.to_torch(kind, params)
    assert set(back) == set(source), f"{kind}: round-trip keys differ: {sorted(set(back) ^ set(source))[:6]}"
    for k, v in source.items():
        np.testing.assert_array_equal(back[k], v, err_msg=f"{kind}: {k} changed in the round trip")


@functools.cache
def reference_net_outputs(fixture_dir: Path) -> tuple[dict, dict]:
    """(our outputs by fixture name, the fixture arrays) for vx_reference_net (cached: shared with other tests)."""
    entry = json.loads((fixture_dir / "manifest.json").read_text())["vx_reference_net"]
    module, params = interop.from_torch("vexpress_reference_net", fixture_dir / "vx_reference_net.safetensors",
                                        entry["constructor"])
    assert_round_trip("vexpress_reference_net", params, fixture_dir / "vx_reference_net.safetensors")
    z = _arrays(fixture_dir, "vx_reference_net")
    latent = to_channels_last(z["sample"], entry["inputs"]["sample"]["layout"])
    out, bank = jax.jit(lambda p, x, c: module.apply({"params": p}, x, int(z["timestep"]), c))(
        params, latent, z["encoder_hidden_states"])
    names = transformer_block_names(module.config)
    ours = {"out": np.asarray(out)}
    for i, name in enumerate(entry["bank_order"]):
        ours[f"bank_{i:02d}"] = np.asarray(bank[names.index(name)])
    return ours, z


def run_reference_net(fixture_dir: Path, entry: dict) -> None:
    ours, z = reference_net_outputs(fixture_dir)
    for name, spec in entry["outputs"].items():
        ref = to_channels_last(z[name], spec["layout"])
        assert_close(ours[name], ref, name=f"vx_reference_net.{name}")


def fixture_bank(fixture_dir: Path, config) -> tuple[np.ndarray, ...]:
    """vx_reference_net's stored banks in our block index order."""
    entry = json.loads((fixture_dir / "manifest.json").read_text())["vx_reference_net"]
    z = _arrays(fixture_dir, "vx_reference_net")
    by_name = {name: z[f"bank_{i:02d}"] for i, name in enumerate(entry["bank_order"])}
    return tuple(by_name[name] for name in transformer_block_names(config))


def denoising_inputs(fixture_dir: Path, entry: dict) -> dict:
    """The vx_denoising_unet call in our layout: sample/kps (B,F,h,w,C), audio tokens (B,F,N,D), bank, weights."""
    z = _arrays(fixture_dir, "vx_denoising_unet")
    layout = lambda n: entry["inputs"][n]["layout"]
    sample = to_channels_last(z["sample"], layout("sample"))
    b, f = sample.shape[:2]
    tokens = z["encoder_hidden_states"]  # ((b f), n, d)
    return dict(sample=sample, timesteps=np.full((b,), z["timestep"], np.int64), audio_tokens=tokens.reshape(b, f, *tokens.shape[1:]),
                kps_features=to_channels_last(z["kps_features"], layout("kps_features")),
                reference_weight=float(z["reference_attention_weight"]),
                audio_weight=float(z["audio_attention_weight"]),
                out=to_channels_last(z["out"], entry["outputs"]["out"]["layout"]))


def run_denoising_unet(fixture_dir: Path, entry: dict) -> None:
    weights = fixture_dir / "vx_denoising_unet.safetensors"
    module, params = interop.from_torch("vexpress_denoising_unet", weights, entry["constructor"])
    assert_round_trip("vexpress_denoising_unet", params, weights)
    x = denoising_inputs(fixture_dir, entry)
    for ours, name in (("reference_weight", "reference_attention_weight"), ("audio_weight", "audio_attention_weight")):
        stated = entry["inputs"][name]["value"]  # the Python float V-Express was given (0.9 / 1.1)
        assert np.float32(stated) == np.float32(x[ours]), f"{name}: npz {x[ours]} != manifest {stated}"
        x[ours] = stated
    bank = fixture_bank(fixture_dir, module.config.unet)

    @jax.jit
    def run(p, sample, t, tokens, kps, bank):
        return module.apply({"params": p}, sample, t, tokens, reference_bank=bank, kps_features=kps,
                            reference_weight=x["reference_weight"], audio_weight=x["audio_weight"])

    out = run(params, x["sample"], x["timesteps"], x["audio_tokens"], x["kps_features"], bank)
    assert_close(out, x["out"], name="vx_denoising_unet.out")


def run_ddim_scheduler(fixture_dir: Path, entry: dict) -> None:
    """V-Express DDIM (v-prediction, zero-terminal SNR, trailing): tables and the 5 recorded steps."""
    kw = entry["constructor"]
    z = _arrays(fixture_dir, "vx_ddim_scheduler")
    schedule = NoiseSchedule.from_config(ScheduleConfig(
        beta_start=kw["beta_start"], beta_end=kw["beta_end"], beta_schedule=kw["beta_schedule"],
        rescale_zero_terminal_snr=kw["rescale_betas_zero_snr"], prediction_type=kw["prediction_type"]))
    coeffs = ddim_setup(schedule, len(entry["timesteps"]), timestep_spacing=kw["timestep_spacing"],
                        steps_offset=kw["steps_offset"], set_alpha_to_one=kw.get("set_alpha_to_one", True),
                        clip_sample=kw["clip_sample"])
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), z["timesteps"])
    assert_close(schedule.alphas_cumprod, z["alphas_cumprod"], name="vx_ddim_scheduler.alphas_cumprod")
    assert float(coeffs.alphas_cumprod_prev[-1]) == float(z["final_alpha_cumprod"])
    step = jax.jit(lambda n, x, v: ddim_step(coeffs, n, x, v))
    x = jnp.asarray(z["step0_sample"])
    for i in range(len(entry["timesteps"])):
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
