"""DDIM parity with diffusers' DDIMScheduler over whole chained trajectories, and the V-Express fixture."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from jaxtalk.diffusion import ScheduleConfig, ddim_sample, ddim_setup, ddim_step
from tests.diffusion.common import check_trajectory, fake_model_torch, make_fake_model_jax, pattern
from tests.parity import assert_close

SHAPE = (2, 8, 8, 4)  # NHWC; DDIM is elementwise, the torch reference sees the same array

SD15 = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)  # timestep_spacing "leading", prediction "epsilon" (defaults)
VEXPRESS = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    steps_offset=1,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
)  # set_alpha_to_one left at True


def ours(kw: dict, steps: int, eta: float = 0.0):
    """Our schedule + DDIM coefficients from the same diffusers constructor kwargs."""
    config = ScheduleConfig(
        num_train_timesteps=kw.get("num_train_timesteps", 1000),
        beta_start=kw["beta_start"],
        beta_end=kw["beta_end"],
        beta_schedule=kw["beta_schedule"],
        rescale_zero_terminal_snr=kw.get("rescale_betas_zero_snr", False),
        prediction_type=kw.get("prediction_type", "epsilon"),
    )
    return ddim_setup(
        config,
        steps,
        timestep_spacing=kw.get("timestep_spacing", "leading"),
        steps_offset=kw.get("steps_offset", 0),
        set_alpha_to_one=kw.get("set_alpha_to_one", True),
        eta=eta,
        clip_sample=kw.get("clip_sample", True),
    )


def torch_trajectory(kw: dict, steps: int, x_T: np.ndarray, P: np.ndarray, eta=0.0, noises=None):
    sch = DDIMScheduler(**kw)
    sch.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy())
    traj = []
    for n, t in enumerate(sch.timesteps):
        out = fake_model_torch(x, int(t), P)
        extra = {} if noises is None else {"variance_noise": torch.from_numpy(noises[n])}
        x = sch.step(out, t, x, eta=eta, **extra).prev_sample
        traj.append(x.numpy().copy())
    return sch.timesteps.numpy(), np.stack(traj)


CASES = [
    ("sd15_eps_leading", SD15),
    ("vexpress_v_trailing", VEXPRESS),
    ("eps_linspace", dict(SD15, timestep_spacing="linspace", set_alpha_to_one=True)),
    ("sample_pred_leading", dict(SD15, prediction_type="sample")),
]


@pytest.mark.parametrize("steps", [25, 50])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_ddim_trajectory_matches_diffusers(name, kw, steps):
    rng = np.random.default_rng(steps)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    ref_t, ref_traj = torch_trajectory(kw, steps, x_T, P)

    coeffs = ours(kw, steps)
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), ref_t)
    run = jax.jit(lambda x: ddim_sample(make_fake_model_jax(P), x, coeffs, return_trajectory=True))
    final, traj = run(jnp.asarray(x_T))
    check_trajectory(f"ddim {name} N={steps}", traj, ref_traj)
    np.testing.assert_array_equal(np.asarray(final), np.asarray(traj[-1]))


def test_ddim_timesteps_documented_values():
    """The research-note numbers: SD1.5 25 steps 961 … 1, V-Express 25 steps 999 … 39."""
    sd = np.asarray(ours(SD15, 25).timesteps)
    vx = np.asarray(ours(VEXPRESS, 25).timesteps)
    assert (sd[0], sd[1], sd[-1]) == (961, 921, 1)
    assert (vx[0], vx[1], vx[-2], vx[-1]) == (999, 959, 79, 39)


@pytest.mark.parametrize("name,kw", [CASES[0], CASES[1]], ids=["sd15", "vexpress"])
def test_ddim_eta_with_matched_noise(name, kw):
    steps, eta = 25, 0.7
    rng = np.random.default_rng(3)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noises = rng.standard_normal((steps, *SHAPE)).astype(np.float32)
    P = pattern(SHAPE)
    _, ref_traj = torch_trajectory(kw, steps, x_T, P, eta=eta, noises=noises)
    coeffs = ours(kw, steps, eta=eta)
    run = jax.jit(
        lambda x, z: ddim_sample(make_fake_model_jax(P), x, coeffs, noises=z, return_trajectory=True)
    )
    _, traj = run(jnp.asarray(x_T), jnp.asarray(noises))
    check_trajectory(f"ddim {name} eta={eta} N={steps}", traj, ref_traj)


def test_ddim_eta_key_draws_per_step_noise():
    """With a key, step n uses normal(split(key, N)[n]); the result is reproducible and differs per key."""
    steps, eta = 10, 1.0
    coeffs = ours(SD15, steps, eta=eta)
    P = pattern(SHAPE)
    x_T = jnp.asarray(np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32))
    key = jax.random.key(0)
    run = jax.jit(lambda x, k: ddim_sample(make_fake_model_jax(P), x, coeffs, key=k))
    a = run(x_T, key)
    noises = jnp.stack([jax.random.normal(k, SHAPE, jnp.float32) for k in jax.random.split(key, steps)])
    b = jax.jit(lambda x, z: ddim_sample(make_fake_model_jax(P), x, coeffs, noises=z))(x_T, noises)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    c = run(x_T, jax.random.key(1))
    assert float(jnp.max(jnp.abs(a - c))) > 1e-3


def test_ddim_clip_sample_matches_diffusers():
    kw = dict(SD15, clip_sample=True, timestep_spacing="trailing")
    x_T = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    P = pattern(SHAPE)
    _, ref_traj = torch_trajectory(kw, 25, x_T, P)
    coeffs = ours(kw, 25)
    assert coeffs.clip_sample
    _, traj = ddim_sample(make_fake_model_jax(P), jnp.asarray(x_T), coeffs, return_trajectory=True)
    check_trajectory("ddim clip_sample trailing N=25", traj, ref_traj)


def test_ddim_coefficients_as_jit_argument():
    """The coefficient dataclass is a pytree: pass it through jit and step inside a user-written lax.scan."""
    coeffs = ours(VEXPRESS, 25)
    P = pattern(SHAPE)
    fake = make_fake_model_jax(P)
    x_T = jnp.asarray(np.random.default_rng(6).standard_normal(SHAPE).astype(np.float32))

    @jax.jit
    def run(c, x):
        def body(x, n):
            return ddim_step(c, n, x, fake(x, c.timesteps[n])), None

        return jax.lax.scan(body, x, jnp.arange(c.num_steps))[0]

    ref = ddim_sample(fake, x_T, coeffs)
    np.testing.assert_allclose(np.asarray(run(coeffs, x_T)), np.asarray(ref), rtol=1e-6, atol=1e-6)


def test_ddim_vexpress_fixture(fixtures_dir):
    """vx_ddim_scheduler: timesteps, ᾱ, final ᾱ and every recorded step I = 0..4, each alone and chained."""
    folder = fixtures_dir / "svp"
    entry = json.loads((folder / "manifest.json").read_text())["vx_ddim_scheduler"]
    z = np.load(folder / "vx_ddim_scheduler.npz")
    kw = dict(entry["constructor"])
    steps = len(entry["timesteps"])
    coeffs = ours(kw, steps)
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), z["timesteps"])
    from jaxtalk.diffusion import NoiseSchedule

    schedule = NoiseSchedule.from_config(
        ScheduleConfig(
            beta_start=kw["beta_start"],
            beta_end=kw["beta_end"],
            beta_schedule=kw["beta_schedule"],
            rescale_zero_terminal_snr=kw["rescale_betas_zero_snr"],
            prediction_type=kw["prediction_type"],
        )
    )
    assert_close(schedule.alphas_cumprod, z["alphas_cumprod"], name="vx alphas_cumprod")
    assert float(schedule.alphas_cumprod[-1]) == 0.0
    assert float(coeffs.alphas_cumprod_prev[-1]) == float(z["final_alpha_cumprod"]) == 1.0

    step = jax.jit(lambda n, x, out: ddim_step(coeffs, n, x, out))
    x = jnp.asarray(z["step0_sample"])
    chained, ref = [], []
    for i in range(steps):
        assert int(z[f"step{i}_timestep"]) == int(coeffs.timesteps[i])
        alone = step(i, jnp.asarray(z[f"step{i}_sample"]), jnp.asarray(z[f"step{i}_model_output"]))
        assert_close(alone, z[f"step{i}_prev_sample"], name=f"vx ddim step {i}")
        x = step(i, x, jnp.asarray(z[f"step{i}_model_output"]))
        chained.append(np.asarray(x))
        ref.append(z[f"step{i}_prev_sample"])
    check_trajectory("vx_ddim_scheduler fixture chained", np.stack(chained), np.stack(ref))
