"""Respaced ancestral DDPM: the Style-E fixture (coefficients and the recorded 5-step p_sample_loop), and parity
with diffusers' DDPMScheduler run on the same kept timesteps (custom timesteps = respacing)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from jaxtalk.diffusion import (
    NoiseSchedule,
    ScheduleConfig,
    respaced_sample,
    respaced_setup,
    respaced_step,
    respaced_tables,
    space_timesteps,
)
from tests.diffusion.common import check_trajectory, fake_model_torch, make_fake_model_jax, pattern
from tests.parity import assert_close


def load_style_e(fixtures_dir):
    folder = fixtures_dir / "style2talker"
    entry = json.loads((folder / "manifest.json").read_text())["modules"]["style_e_metamodel"]
    return entry, np.load(folder / "style_e_metamodel.npz")


def style_e_setup(diffusion_args: dict):
    """Our coefficients from the fixture's recorded create_gaussian_diffusion arguments."""
    assert diffusion_args["learn_sigma"] is False
    config = ScheduleConfig(
        num_train_timesteps=diffusion_args["diffusion_steps"],
        beta_schedule=diffusion_args["noise_schedule"],  # "cosine" (improved-diffusion)
        prediction_type="sample" if diffusion_args["predict_xstart"] else "epsilon",
    )
    coeffs = respaced_setup(
        config,
        diffusion_args["timestep_respacing"],
        variance_type="fixed_small" if diffusion_args["sigma_small"] else "fixed_large",
        rescale_timesteps=diffusion_args["rescale_timesteps"],
        clip_denoised=False,  # the recorded call passes clip_denoised=False
    )
    return config, coeffs


def test_style_e_diffusion_coefficients(fixtures_dir):
    entry, z = load_style_e(fixtures_dir)
    config, coeffs = style_e_setup(entry["diffusion_args"])
    tables = respaced_tables(NoiseSchedule.from_config(config).alphas_cumprod_f64(), coeffs.timestep_map)
    np.testing.assert_array_equal(tables["timestep_map"], z["timestep_map"])
    for ours_name, ref_name in [
        ("betas", "respaced_betas"),
        ("posterior_mean_coef1", "posterior_mean_coef1"),
        ("posterior_mean_coef2", "posterior_mean_coef2"),
        ("posterior_log_variance_clipped", "posterior_log_variance_clipped"),
    ]:
        ref = z[ref_name]
        assert_close(tables[ours_name], ref, name=f"style_e {ref_name} (float64)")
        np.testing.assert_allclose(tables[ours_name], ref, rtol=1e-12, atol=1e-15, err_msg=ref_name)
        # the device arrays are the same numbers, float32, in sampling order
    assert_close(coeffs.posterior_mean_coef1, z["posterior_mean_coef1"][::-1], name="style_e coef1 (float32)")
    assert_close(coeffs.posterior_mean_coef2, z["posterior_mean_coef2"][::-1], name="style_e coef2 (float32)")
    assert_close(
        coeffs.log_variance, z["posterior_log_variance_clipped"][::-1], name="style_e logvar (float32)"
    )
    # the network sees the ORIGINAL timesteps, noisiest first, as integers (rescale_timesteps=False)
    assert coeffs.model_timesteps.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(coeffs.model_timesteps), z["timestep_map"][::-1])
    np.testing.assert_array_equal(np.asarray(coeffs.noise_mask), [1, 1, 1, 1, 0])


def recorded_model(z):
    """A denoise_fn replaying the fixture's x0 predictions, looked up by the ORIGINAL timestep it is called with."""
    tmap = jnp.asarray(z["timestep_map"], jnp.int32)  # ascending
    preds = jnp.asarray(z["sample_pred_x0_seq"])  # sampling order
    K = preds.shape[0]

    def denoise(x, t):
        i = jnp.searchsorted(tmap, t)  # respaced index; a wrong (e.g. respaced) t picks a wrong prediction
        return preds[K - 1 - i]

    return denoise


def test_style_e_trajectory_step_by_step(fixtures_dir):
    """Each recorded p_sample: (x_t, recorded x0, recorded noise) → the recorded next x_t."""
    entry, z = load_style_e(fixtures_dir)
    _, coeffs = style_e_setup(entry["diffusion_args"])
    xs, preds, noises = z["sample_x_seq"], z["sample_pred_x0_seq"], z["sample_step_noise"]
    np.testing.assert_array_equal(xs[0], z["sample_x_T"])
    step = jax.jit(lambda n, x, out, noise: respaced_step(coeffs, n, x, out, noise=noise))
    for n in range(coeffs.num_steps):
        out = step(n, jnp.asarray(xs[n]), jnp.asarray(preds[n]), jnp.asarray(noises[n]))
        assert_close(
            out, xs[n + 1], name=f"style_e p_sample step {n} (respaced i={coeffs.num_steps - 1 - n})"
        )


def test_style_e_trajectory_sample_loop(fixtures_dir):
    """The whole loop under jit + lax.scan with the recorded noise; every intermediate x_t."""
    entry, z = load_style_e(fixtures_dir)
    _, coeffs = style_e_setup(entry["diffusion_args"])
    run = jax.jit(
        lambda x, noises: respaced_sample(recorded_model(z), x, coeffs, noises=noises, return_trajectory=True)
    )
    final, traj = run(jnp.asarray(z["sample_x_T"]), jnp.asarray(z["sample_step_noise"]))
    check_trajectory("style_e ddim5 p_sample_loop (fixture)", traj, z["sample_x_seq"][1:])
    np.testing.assert_array_equal(np.asarray(final), np.asarray(traj[-1]))


def test_style_e_trajectory_epsilon_mode(fixtures_dir):
    """Feeding ε̂ = (x_t − √ᾱ' x̂_0)/√(1−ᾱ') (from the recorded x̂_0) to the epsilon mode gives the same chain."""
    entry, z = load_style_e(fixtures_dir)
    args = dict(entry["diffusion_args"], predict_xstart=False)
    config, coeffs = style_e_setup(args)
    assert coeffs.prediction_type == "epsilon"
    abar = respaced_tables(NoiseSchedule.from_config(config).alphas_cumprod_f64(), coeffs.timestep_map)[
        "alphas_cumprod"
    ][::-1]
    xs = z["sample_x_seq"].astype(np.float64)
    x0 = z["sample_pred_x0_seq"].astype(np.float64)
    eps = np.stack([(xs[n] - np.sqrt(abar[n]) * x0[n]) / np.sqrt(1 - abar[n]) for n in range(len(abar))])
    eps = jnp.asarray(eps.astype(np.float32))
    x = jnp.asarray(z["sample_x_T"])
    traj = []
    for n in range(coeffs.num_steps):
        x = respaced_step(coeffs, n, x, eps[n], noise=jnp.asarray(z["sample_step_noise"][n]))
        traj.append(np.asarray(x))
    check_trajectory("style_e ddim5 epsilon-mode replay", np.stack(traj), z["sample_x_seq"][1:])


def test_space_timesteps():
    assert space_timesteps(1000, "ddim5") == [0, 200, 400, 600, 800]
    assert space_timesteps(1000, "ddim50")[:3] == [0, 20, 40]
    # sections of 5 steps each: 2 kept from [0, 5) (stride 4), 3 kept from [5, 10) (stride 2)
    assert space_timesteps(10, [2, 3]) == [0, 4, 5, 7, 9]
    assert space_timesteps(10, "2,3") == [0, 4, 5, 7, 9]
    assert space_timesteps(100, 100) == list(range(100))
    assert len(space_timesteps(300, "10,15,20")) == 45
    with pytest.raises(ValueError, match="integer stride"):
        space_timesteps(10, "ddim6")  # strides give 10, 5, 4, 3, 2, … steps, never 6
    with pytest.raises(ValueError, match="cannot divide"):
        space_timesteps(10, [6, 1])


def test_rescale_timesteps_and_fixed_large(fixtures_dir):
    _, z = load_style_e(fixtures_dir)
    # rescale_timesteps: a 500-step cosine schedule respaced to 5 shows the model t · 1000/500
    c = respaced_setup(
        ScheduleConfig(num_train_timesteps=500, beta_schedule="cosine", prediction_type="sample"),
        "ddim5",
        rescale_timesteps=True,
    )
    assert c.model_timesteps.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(c.model_timesteps), [800.0, 600.0, 400.0, 200.0, 0.0])
    # fixed_large: log([var_1, β'_1, …]) with var_1 from the fixture's clipped log-variance
    large = respaced_setup(
        ScheduleConfig(beta_schedule="cosine", prediction_type="sample"), "ddim5", variance_type="fixed_large"
    )
    var1 = np.exp(z["posterior_log_variance_clipped"][1])
    expected = np.log(np.concatenate([[var1], z["respaced_betas"][1:]]))[::-1]
    assert_close(large.log_variance, expected, name="fixed_large log variance")


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
@pytest.mark.parametrize("steps", [25, 50])
def test_respaced_matches_diffusers_ddpm_custom_timesteps(prediction_type, steps):
    """DDPMScheduler on custom timesteps τ (β' = 1 − ᾱ_τ/ᾱ_τ', fixed_small, x0 or ε) is respaced p_sample."""
    shape = (2, 32, 16)
    config = ScheduleConfig(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    coeffs = respaced_setup(config, [steps])
    kept = list(coeffs.timestep_map)
    assert len(kept) == steps

    sch = DDPMScheduler(
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        variance_type="fixed_small",
    )
    sch.set_timesteps(timesteps=kept[::-1])
    rng = np.random.default_rng(steps)
    x_T = rng.standard_normal(shape).astype(np.float32)
    P = 0.5 * pattern(shape)
    noises = np.zeros((steps, *shape), np.float32)
    x, ref = torch.from_numpy(x_T.copy()), []
    for n, t in enumerate(sch.timesteps):
        gen = torch.Generator().manual_seed(1000 + n)
        if int(t) > 0:  # DDPMScheduler draws noise only when t > 0
            noises[n] = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + n)).numpy()
        x = sch.step(fake_model_torch(x, int(t), P), t, x, generator=gen).prev_sample
        ref.append(x.numpy().copy())

    np.testing.assert_array_equal(np.asarray(coeffs.model_timesteps), sch.timesteps.numpy())
    run = jax.jit(
        lambda x, z: respaced_sample(make_fake_model_jax(P), x, coeffs, noises=z, return_trajectory=True)
    )
    _, traj = run(jnp.asarray(x_T), jnp.asarray(noises))
    check_trajectory(f"respaced ddpm {prediction_type} N={steps} vs DDPMScheduler", traj, np.stack(ref))


def test_respaced_key_and_errors():
    coeffs = respaced_setup(ScheduleConfig(beta_schedule="cosine", prediction_type="sample"), "ddim5")
    x_T = jnp.ones((2, 32, 64))
    fake = make_fake_model_jax(np.zeros((2, 32, 64), np.float32))
    run = jax.jit(lambda k: respaced_sample(fake, x_T, coeffs, key=k))
    a, b = run(jax.random.key(0)), run(jax.random.key(1))
    assert a.shape == x_T.shape and bool(jnp.all(jnp.isfinite(a)))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3
    with pytest.raises(ValueError, match="needs `key` or `noises`"):
        respaced_sample(fake, x_T, coeffs)
    with pytest.raises(ValueError, match="not one of"):
        respaced_setup(ScheduleConfig(prediction_type="v_prediction"), "ddim5")
    with pytest.raises(ValueError, match="noises must have shape"):
        respaced_sample(fake, x_T, coeffs, noises=jnp.zeros((4, 2, 32, 64)))
