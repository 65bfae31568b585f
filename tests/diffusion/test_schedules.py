"""β / ᾱ schedules against diffusers (DDPMScheduler) and the improved-diffusion cosine against the Style-E fixture."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as torch_rescale

from jaxtalk.diffusion import NoiseSchedule, ScheduleConfig, make_betas, rescale_zero_terminal_snr
from tests.parity import assert_close

CONFIGS = [
    ("linear", 0.0001, 0.02, False),
    ("scaled_linear", 0.00085, 0.012, False),
    ("squaredcos_cap_v2", 0.0001, 0.02, False),
    ("scaled_linear", 0.00085, 0.012, True),
    ("linear", 0.0001, 0.02, True),
]


@pytest.mark.parametrize("schedule,beta_start,beta_end,rescale", CONFIGS)
def test_schedule_matches_diffusers(schedule, beta_start, beta_end, rescale):
    ref = DDPMScheduler(
        beta_start=beta_start, beta_end=beta_end, beta_schedule=schedule, rescale_betas_zero_snr=rescale
    )
    ours = NoiseSchedule.from_config(
        ScheduleConfig(
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=schedule,
            rescale_zero_terminal_snr=rescale,
        )
    )
    name = f"{schedule}{' zero-snr' if rescale else ''}"
    assert_close(ours.betas, ref.betas.numpy(), name=f"betas {name}")
    assert_close(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), name=f"alphas_cumprod {name}")
    if not rescale:
        # torch's float32 linspace and double-accumulated cumprod are mirrored bit for bit
        np.testing.assert_array_equal(np.asarray(ours.betas), ref.betas.numpy())
        np.testing.assert_array_equal(np.asarray(ours.alphas_cumprod), ref.alphas_cumprod.numpy())


def test_sd15_documented_values():
    s = NoiseSchedule.from_config(
        ScheduleConfig(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    )
    np.testing.assert_allclose(float(s.alphas_cumprod[0]), 0.99915, rtol=1e-6)
    np.testing.assert_allclose(float(s.alphas_cumprod[999]), 0.0046601, rtol=1e-4)


def test_zero_terminal_snr_rescale():
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    out = rescale_zero_terminal_snr(betas)
    ref = torch_rescale(torch.from_numpy(betas)).numpy()
    assert_close(out, ref, name="rescale_zero_terminal_snr float64")
    abar_old, abar_new = np.cumprod(1 - betas), np.cumprod(1 - out)
    assert abar_new[-1] == 0.0 and out[-1] == 1.0
    np.testing.assert_allclose(abar_new[0], abar_old[0], rtol=1e-14)


def test_cosine_is_improved_diffusion_float64():
    """The improved-diffusion "cosine" keeps float64; "squaredcos_cap_v2" is the same formula in float32."""
    cos64 = make_betas(ScheduleConfig(beta_schedule="cosine"))
    cos32 = make_betas(ScheduleConfig(beta_schedule="squaredcos_cap_v2"))
    assert cos64.dtype == np.float64 and cos32.dtype == np.float32
    np.testing.assert_array_equal(cos64.astype(np.float32), cos32)

    def abar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    assert cos64[0] == 1 - abar(0.001) / abar(0.0)
    assert cos64[-1] == 0.999  # capped
    schedule = NoiseSchedule.from_config(ScheduleConfig(beta_schedule="cosine"))
    np.testing.assert_allclose(schedule.alphas_cumprod_f64(), np.cumprod(1 - cos64), rtol=1e-15)


def test_config_errors():
    with pytest.raises(ValueError, match="beta_schedule"):
        ScheduleConfig(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="prediction_type"):
        ScheduleConfig(prediction_type="x0")


def test_schedule_is_a_pytree_with_static_config():
    s = NoiseSchedule.from_config(ScheduleConfig())
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert len(leaves) == 2
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back.config == s.config
    doubled = jax.jit(lambda sch: sch.alphas_cumprod[10] * 2)(s)
    assert float(doubled) == pytest.approx(2 * float(s.alphas_cumprod[10]))
