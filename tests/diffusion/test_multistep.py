"""DPM-Solver++ (2M, SDE) and UniPC parity with diffusers' DPMSolverMultistepScheduler / UniPCMultistepScheduler
over whole chained trajectories, for ε and v prediction, including the zero-terminal-SNR trailing schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from jaxtalk.diffusion import ScheduleConfig, dpm_solver_setup, multistep_sample, unipc_setup
from tests.diffusion.common import check_trajectory, fake_model_torch, make_fake_model_jax, pattern

SHAPE = (2, 8, 8, 4)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
ZERO_SNR_V = dict(SD15, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")

CASES = [
    ("sd15_eps_linspace", SD15),
    ("sd15_v_linspace", dict(SD15, prediction_type="v_prediction")),
    ("sd15_eps_leading", dict(SD15, timestep_spacing="leading", steps_offset=1)),
    ("zero_snr_v_trailing", ZERO_SNR_V),
    ("zero_snr_eps_trailing", dict(ZERO_SNR_V, prediction_type="epsilon")),
]


def schedule(kw: dict) -> ScheduleConfig:
    return ScheduleConfig(beta_start=kw["beta_start"], beta_end=kw["beta_end"], beta_schedule=kw["beta_schedule"],
                          rescale_zero_terminal_snr=kw.get("rescale_betas_zero_snr", False),
                          prediction_type=kw.get("prediction_type", "epsilon"))


def spacing(kw: dict) -> dict:
    return dict(timestep_spacing=kw.get("timestep_spacing", "linspace"), steps_offset=kw.get("steps_offset", 0))


def torch_trajectory(sch, steps: int, x_T: np.ndarray, P: np.ndarray, noises=None):
    sch.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy()) * sch.init_noise_sigma
    traj = []
    for n, t in enumerate(sch.timesteps):
        out = fake_model_torch(sch.scale_model_input(x, t), int(t), P)
        extra = {} if noises is None else {"variance_noise": torch.from_numpy(noises[n])}
        x = sch.step(out, t, x, **extra).prev_sample
        traj.append(x.numpy().copy())
    return sch.timesteps.numpy(), np.stack(traj)


def run_ours(coeffs, x_T, P, noises=None):
    run = jax.jit(lambda x, z: multistep_sample(make_fake_model_jax(P), x, coeffs, noises=z, return_trajectory=True))
    return run(jnp.asarray(x_T), None if noises is None else jnp.asarray(noises))


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_dpm_solver_pp_2m_matches_diffusers(name, kw, steps):
    x_T = np.random.default_rng(steps).standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    ref_t, ref = torch_trajectory(DPMSolverMultistepScheduler(**kw), steps, x_T, P)
    coeffs = dpm_solver_setup(schedule(kw), steps, **spacing(kw))
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), ref_t)
    final, traj = run_ours(coeffs, x_T, P)
    check_trajectory(f"dpm++2M {name} N={steps}", traj, ref)
    np.testing.assert_array_equal(np.asarray(final), np.asarray(traj[-1]))


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("name,kw", [CASES[0], CASES[3]], ids=["sd15_eps", "zero_snr_v"])
def test_sde_dpm_solver_pp_with_matched_noise(name, kw, solver_type):
    steps = 15
    rng = np.random.default_rng(3)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noises = rng.standard_normal((steps, *SHAPE)).astype(np.float32)
    P = pattern(SHAPE)
    sch = DPMSolverMultistepScheduler(**kw, algorithm_type="sde-dpmsolver++", solver_type=solver_type)
    _, ref = torch_trajectory(sch, steps, x_T, P, noises=noises)
    coeffs = dpm_solver_setup(schedule(kw), steps, algorithm_type="sde-dpmsolver++", solver_type=solver_type,
                              **spacing(kw))
    _, traj = run_ours(coeffs, x_T, P, noises)
    check_trajectory(f"sde-dpm++2M {solver_type} {name}", traj, ref)


def test_dpm_solver_pp_heun_and_first_order():
    kw, steps = CASES[1][1], 12
    x_T = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    for extra in (dict(solver_type="heun"), dict(solver_order=1), dict(final_sigmas_type="sigma_min")):
        _, ref = torch_trajectory(DPMSolverMultistepScheduler(**kw, **extra), steps, x_T, P)
        _, traj = run_ours(dpm_solver_setup(schedule(kw), steps, **spacing(kw), **extra), x_T, P)
        check_trajectory(f"dpm++ {extra}", traj, ref)


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_unipc_matches_diffusers(name, kw, steps):
    x_T = np.random.default_rng(steps + 7).standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    ref_t, ref = torch_trajectory(UniPCMultistepScheduler(**kw), steps, x_T, P)
    coeffs = unipc_setup(schedule(kw), steps, **spacing(kw))
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), ref_t)
    _, traj = run_ours(coeffs, x_T, P)
    check_trajectory(f"unipc {name} N={steps}", traj, ref)


def test_unipc_variants():
    kw, steps = ZERO_SNR_V, 12
    x_T = np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    # bh1 with a zero final sigma: diffusers multiplies B(h) = -inf by a zero residual (NaN); ours stays finite.
    for extra in (dict(solver_type="bh1", final_sigmas_type="sigma_min"), dict(solver_order=1), dict(disable_corrector=[0, 3]),
                  dict(lower_order_final=False, final_sigmas_type="sigma_min")):
        _, ref = torch_trajectory(UniPCMultistepScheduler(**kw, **extra), steps, x_T, P)
        _, traj = run_ours(unipc_setup(schedule(kw), steps, **spacing(kw), **extra), x_T, P)
        check_trajectory(f"unipc {extra}", traj, ref)


def test_multistep_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="solver_order"):
        dpm_solver_setup(schedule(SD15), 10, solver_order=3)
    with pytest.raises(ValueError, match="algorithm_type"):
        dpm_solver_setup(schedule(SD15), 10, algorithm_type="dpmsolver")
    with pytest.raises(ValueError, match="solver_type"):
        unipc_setup(schedule(SD15), 10, solver_type="midpoint")
    coeffs = dpm_solver_setup(schedule(SD15), 5, algorithm_type="sde-dpmsolver++")
    with pytest.raises(ValueError, match="needs `key` or `noises`"):
        multistep_sample(make_fake_model_jax(pattern(SHAPE)), jnp.zeros(SHAPE), coeffs)
