"""Euler parity with diffusers' EulerDiscreteScheduler (SD1.5 settings) over whole chained trajectories."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from jaxtalk.diffusion import ScheduleConfig, euler_sample, euler_setup
from tests.diffusion.common import check_trajectory, fake_model_torch, make_fake_model_jax, pattern
from tests.parity import assert_close

SHAPE = (2, 8, 8, 4)
# diffusers calls np.array(tensor) inside set_timesteps, which numpy 2 flags; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
# SD1.5's scheduler config: timestep_spacing "linspace", interpolation "linear", final sigma zero (defaults).


def ours(kw: dict, steps: int):
    config = ScheduleConfig(
        beta_start=kw["beta_start"],
        beta_end=kw["beta_end"],
        beta_schedule=kw["beta_schedule"],
        rescale_zero_terminal_snr=kw.get("rescale_betas_zero_snr", False),
        prediction_type=kw.get("prediction_type", "epsilon"),
    )
    return euler_setup(
        config,
        steps,
        timestep_spacing=kw.get("timestep_spacing", "linspace"),
        steps_offset=kw.get("steps_offset", 0),
    )


def torch_trajectory(kw: dict, steps: int, noise: np.ndarray, P: np.ndarray):
    """The SD pipeline loop: latents = z · init_noise_sigma; per t: scale_model_input, model, step."""
    sch = EulerDiscreteScheduler(**kw)
    sch.set_timesteps(steps)
    x = torch.from_numpy(noise.copy()) * sch.init_noise_sigma
    x_T = x.numpy().copy()
    traj = []
    for t in sch.timesteps:
        out = fake_model_torch(sch.scale_model_input(x, t), float(t), P)
        x = sch.step(out, t, x).prev_sample
        traj.append(x.numpy().copy())
    return sch, x_T, np.stack(traj)


CASES = [
    ("sd15_eps", SD15),
    ("sd15_v", dict(SD15, prediction_type="v_prediction")),
    ("leading_eps", dict(SD15, timestep_spacing="leading")),
    (
        "zero_snr_v_trailing",
        dict(SD15, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"),
    ),
]


@pytest.mark.parametrize("steps", [25, 50])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_euler_trajectory_matches_diffusers(name, kw, steps):
    noise = np.random.default_rng(steps + 1).standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    sch, ref_x_T, ref_traj = torch_trajectory(kw, steps, noise, P)

    coeffs = ours(kw, steps)
    np.testing.assert_allclose(np.asarray(coeffs.timesteps), sch.timesteps.numpy(), rtol=0, atol=0)
    assert_close(coeffs.sigmas, sch.sigmas.numpy(), name=f"euler {name} sigmas N={steps}")
    assert_close(
        coeffs.init_noise_sigma, np.asarray(sch.init_noise_sigma), name=f"euler {name} init_noise_sigma"
    )

    x_T = coeffs.init_noise_sigma * jnp.asarray(noise)
    assert_close(x_T, ref_x_T, name=f"euler {name} x_T")
    run = jax.jit(lambda x: euler_sample(make_fake_model_jax(P), x, coeffs, return_trajectory=True))
    _, traj = run(x_T)
    check_trajectory(f"euler {name} N={steps}", traj, ref_traj)


def test_euler_sd15_documented_values():
    """Research-note numbers for N = 25: t = 999, 957.375, …, 0; σ = 14.61465, 11.43594, …, 0.02917, 0."""
    c = ours(SD15, 25)
    t, s = np.asarray(c.timesteps), np.asarray(c.sigmas)
    np.testing.assert_allclose(t[[0, 1, -1]], [999.0, 957.375, 0.0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        s[[0, 1, 2, -3, -2, -1]], [14.61465, 11.43594, 9.07681, 0.20349, 0.02917, 0.0], atol=1e-4
    )
    np.testing.assert_allclose(float(c.init_noise_sigma), 14.61465, atol=1e-4)
