"""Golden-fixture checks for Style-E (`style_e_metamodel`) and SadTalker audio2exp (`audio2exp_simplewrapperv2`).

`RUNNERS[name](fixture)` runs the check for one manifest module, through `tests.fixture_harness` (which fails on a
constructor key, literal call argument or array the runner leaves unread).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxtalk import interop
from jaxtalk.diffusion.respaced import respaced_step, respaced_tables, space_timesteps
from jaxtalk.diffusion.schedules import NoiseSchedule, ScheduleConfig
from jaxtalk.style2talker import audio2exp as a2e
from jaxtalk.style2talker import style_e
from tests.fixture_harness import Fixture
from tests.parity import assert_close


def _assert_exact_round_trip(kind: str, variables, source: dict[str, np.ndarray], config, skip: str = "") -> None:
    back = interop.to_torch(kind, variables, config)
    expected = {k for k in source if not (skip and skip in k)}
    assert set(back) == expected, f"{kind}: round trip keys differ: {sorted(set(back) ^ expected)[:6]}"
    for k in expected:
        np.testing.assert_array_equal(back[k], source[k], err_msg=f"{kind}: {k} changed in the round trip")


def run_style_e_metamodel(fx: Fixture) -> None:
    """Single forward, the respaced diffusion tables, and the 5-step p_sample_loop step by step."""
    weights, z, entry = fx.weights, fx.arrays, fx.entry
    source = interop.read_state_dict(weights)
    assert fx.calls[1]["clip_denoised"] is False, "jaxtalk's Style-E sampler does not clip x0"
    module, params = interop.from_torch("style2talker_style_e", weights, config=dict(fx.constructor))
    assert module.config == interop.from_torch("style2talker_style_e", weights)[0].config  # shapes agree with kwargs
    _assert_exact_round_trip("style2talker_style_e", params, source, module.config)

    apply = jax.jit(lambda x, t, s, c: module.apply({"params": params}, x, t, s, c))
    out = apply(z["x_t"], z["timesteps"], z["sparse_emb"], z["style_code"])
    assert_close(out, z["output"], name="style_e forward")

    d = entry["diffusion_args"]
    assert (d["noise_schedule"], d["timestep_respacing"], d["predict_xstart"], d["sigma_small"]) == (
        "cosine", "ddim5", True, True)
    sampling = style_e.StyleESamplerConfig(diffusion_steps=d["diffusion_steps"], noise_schedule=d["noise_schedule"],
                                           respacing=d["timestep_respacing"])
    schedule = ScheduleConfig(num_train_timesteps=d["diffusion_steps"], beta_schedule="cosine", prediction_type="sample")
    tables = respaced_tables(NoiseSchedule.from_config(schedule).alphas_cumprod_f64(),
                             space_timesteps(d["diffusion_steps"], d["timestep_respacing"]))
    np.testing.assert_array_equal(tables["timestep_map"], z["timestep_map"])
    for ours, theirs in (("betas", "respaced_betas"), ("posterior_mean_coef1", "posterior_mean_coef1"),
                         ("posterior_mean_coef2", "posterior_mean_coef2"),
                         ("posterior_log_variance_clipped", "posterior_log_variance_clipped")):
        np.testing.assert_allclose(tables[ours], z[theirs], rtol=1e-12, atol=0, err_msg=theirs)

    coeffs = style_e.sampler_coefficients(sampling)
    steps = coeffs.num_steps
    np.testing.assert_array_equal(np.asarray(coeffs.model_timesteps), z["timestep_map"][::-1])
    batch = z["sample_x_T"].shape[0]
    text = np.broadcast_to(z["sample_style_code"], (batch, *z["sample_style_code"].shape[1:]))
    # Teacher-forced: each step from the reference x_t.
    for n in range(steps):
        x = z["sample_x_seq"][n]
        t = np.full((batch,), int(coeffs.model_timesteps[n]), np.int64)
        x0 = apply(x, t, z["sample_sparse"], text)
        assert_close(x0, z["sample_pred_x0_seq"][n], name=f"style_e step {n} (t={t[0]}) x0 (teacher-forced)")
        x_next = respaced_step(coeffs, n, x, x0, noise=z["sample_step_noise"][n])
        assert_close(x_next, z["sample_x_seq"][n + 1], name=f"style_e step {n} x_t-1 (teacher-forced)")
    # Free-running: the whole compiled sampler from x_T with the recorded noises.
    run = jax.jit(lambda: style_e.sample_windows(
        module, params, z["sample_sparse"], z["sample_style_code"], sampling=sampling, x_T=z["sample_x_T"],
        noises=z["sample_step_noise"], return_trajectory=True))
    final, xs, x0s = run()
    for n in range(steps):
        assert_close(x0s[n], z["sample_pred_x0_seq"][n], name=f"style_e sampler step {n} x0")
        assert_close(xs[n + 1], z["sample_x_seq"][n + 1], name=f"style_e sampler step {n} x")
    np.testing.assert_array_equal(np.asarray(xs[0]), z["sample_x_T"])
    assert_close(final, z["sample_x_seq"][-1], name="style_e sample (final)")


def run_audio2exp_simplewrapperv2(fx: Fixture) -> None:
    """SimpleWrapperV2 (width-reduced) in eval mode, called as AudioEncoder.forward does."""
    weights, z = fx.weights, fx.arrays
    source = interop.read_state_dict(weights)
    module, variables = interop.from_torch("sadtalker_audio2exp", weights, config=dict(fx.constructor))
    assert module.width_scale == interop.from_torch("sadtalker_audio2exp", weights)[0].width_scale
    assert set(variables) == {"params", "batch_stats"}
    _assert_exact_round_trip("sadtalker_audio2exp", variables, source, None, skip="num_batches_tracked")
    out = jax.jit(lambda m, r, q: a2e.audio2exp(module, variables, m, r, q))(z["indiv_mels"], z["ref"], z["ratio"])
    assert_close(out, z["exp_coeff_pred"], name="audio2exp SimpleWrapperV2")
    np.testing.assert_array_equal(np.broadcast_to(z["ref"][:, :, :64], z["ref_rep"].shape), z["ref_rep"])


RUNNERS = {
    "style_e_metamodel": run_style_e_metamodel,
    "audio2exp_simplewrapperv2": run_audio2exp_simplewrapperv2,
}
