"""Training pieces against diffusers (add_noise, get_velocity, compute_snr) and the train-script formulas in torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from jaxtalk.diffusion import (
    NoiseSchedule,
    ScheduleConfig,
    add_noise,
    apply_noise_offset,
    diffusion_loss,
    min_snr_weights,
    sample_timesteps,
    snr,
    training_target,
    velocity,
)
from tests.parity import assert_close

SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
VEXPRESS = dict(SD15, rescale_betas_zero_snr=True, prediction_type="v_prediction")


def pair(kw: dict):
    ref = DDPMScheduler(**kw)
    ours = NoiseSchedule.from_config(
        ScheduleConfig(
            beta_start=kw["beta_start"],
            beta_end=kw["beta_end"],
            beta_schedule=kw["beta_schedule"],
            rescale_zero_terminal_snr=kw.get("rescale_betas_zero_snr", False),
            prediction_type=kw.get("prediction_type", "epsilon"),
        )
    )
    return ref, ours


@pytest.mark.parametrize("shape", [(4, 8, 8, 4), (4, 3, 4, 4, 4)], ids=["image", "video"])
@pytest.mark.parametrize("name,kw", [("sd15", SD15), ("vexpress", VEXPRESS)])
def test_add_noise_velocity_targets_match_diffusers(name, kw, shape):
    ref, ours = pair(kw)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(shape).astype(np.float32)
    noise = rng.standard_normal(shape).astype(np.float32)
    t = np.array([0, 261, 777, 999], np.int64)
    tx0, tn, tt = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)

    noisy = jax.jit(add_noise)(ours, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t, jnp.int32))
    assert_close(noisy, ref.add_noise(tx0, tn, tt).numpy(), name=f"add_noise {name} {len(shape)}d")
    v = velocity(ours, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t, jnp.int32))
    assert_close(v, ref.get_velocity(tx0, tn, tt).numpy(), name=f"velocity {name} {len(shape)}d")

    target = training_target(ours, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t, jnp.int32))
    expected = {"epsilon": noise, "v_prediction": ref.get_velocity(tx0, tn, tt).numpy()}[ours.prediction_type]
    assert_close(target, expected, name=f"training_target {name}")
    np.testing.assert_array_equal(
        np.asarray(training_target(ours, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t), "sample")), x0
    )


@pytest.mark.parametrize("name,kw", [("sd15", SD15), ("vexpress", VEXPRESS)])
def test_snr_matches_compute_snr(name, kw):
    ref, ours = pair(kw)
    t = np.array([0, 1, 100, 500, 900, 998], np.int64)
    assert_close(snr(ours, jnp.asarray(t)), compute_snr(ref, torch.from_numpy(t)).numpy(), name=f"snr {name}")
    if kw.get("rescale_betas_zero_snr"):
        assert float(snr(ours, jnp.asarray([999]))[0]) == 0.0


def torch_min_snr(snr_t: torch.Tensor, gamma: float, prediction_type: str, shift_v: bool) -> torch.Tensor:
    """The train-script formulas: Moore-AnimateAnyone / V-Express (`snr += 1` for v, then min/divide) and
    diffusers train_text_to_image (min(snr, γ) divided by snr or snr + 1)."""
    s = snr_t + 1 if (prediction_type == "v_prediction" and shift_v) else snr_t
    clipped = torch.stack([s, gamma * torch.ones_like(s)], dim=1).min(dim=1)[0]
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (snr_t + 1)
    return clipped


@pytest.mark.parametrize(
    "prediction_type,shift_v",
    [("epsilon", True), ("v_prediction", True), ("v_prediction", False), ("sample", True)],
)
def test_min_snr_weights(prediction_type, shift_v):
    snr_values = np.array([0.02, 0.5, 1.0, 4.0, 5.0, 20.0, 4000.0], np.float32)
    ref = torch_min_snr(torch.from_numpy(snr_values), 5.0, prediction_type, shift_v).numpy()
    out = min_snr_weights(jnp.asarray(snr_values), 5.0, prediction_type, shift_v_snr=shift_v)
    assert_close(out, ref, name=f"min_snr {prediction_type} shift_v={shift_v}")


def test_min_snr_zero_terminal_snr_is_finite():
    w_eps = min_snr_weights(jnp.asarray([0.0, 2.0]), 5.0, "epsilon")
    w_v = min_snr_weights(jnp.asarray([0.0, 2.0]), 5.0, "v_prediction")
    np.testing.assert_allclose(np.asarray(w_eps), [1.0, 1.0])
    np.testing.assert_allclose(np.asarray(w_v), [1.0, 1.0])
    with pytest.raises(ValueError, match="prediction_type"):
        min_snr_weights(jnp.asarray([1.0]), 5.0, "x0")


def test_diffusion_loss_matches_torch():
    rng = np.random.default_rng(1)
    out = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    tgt = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    w = np.array([0.5, 1.0, 2.0], np.float32)
    loss = F.mse_loss(torch.from_numpy(out), torch.from_numpy(tgt), reduction="none")
    ref_w = (loss.mean(dim=list(range(1, loss.ndim))) * torch.from_numpy(w)).mean().numpy()
    ref_plain = F.mse_loss(torch.from_numpy(out), torch.from_numpy(tgt)).numpy()
    assert_close(
        jax.jit(diffusion_loss)(jnp.asarray(out), jnp.asarray(tgt), jnp.asarray(w)),
        ref_w,
        name="weighted diffusion loss",
    )
    assert_close(diffusion_loss(jnp.asarray(out), jnp.asarray(tgt)), ref_plain, name="plain diffusion loss")
    with pytest.raises(ValueError, match="differs"):
        diffusion_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_diffusion_loss_element_weights_weigh_positions():
    rng = np.random.default_rng(2)
    out = jnp.asarray(rng.standard_normal((2, 3, 4, 4, 2)), jnp.float32)
    tgt = jnp.asarray(rng.standard_normal((2, 3, 4, 4, 2)), jnp.float32)
    w = jnp.asarray([0.5, 2.0])
    plain = diffusion_loss(out, tgt, w)
    assert_close(diffusion_loss(out, tgt, w, jnp.ones((2, 3, 4, 4, 1))), plain, name="unit element weights")
    assert_close(diffusion_loss(out, tgt, w, 3.0 * jnp.ones((2, 3, 4, 4, 1))), 3.0 * plain, name="scaled")
    mouth = jnp.zeros((2, 3, 4, 4, 1)).at[:, :, 1:3, 2:4].set(1.0)
    err = np.square(np.asarray(out) - np.asarray(tgt))
    extra = (err * np.asarray(mouth)).mean(axis=(1, 2, 3, 4)) * np.asarray(w) * 4.0
    assert_close(diffusion_loss(out, tgt, w, 1.0 + 4.0 * mouth), plain + extra.mean(), name="mouth weighted")


def test_noise_offset_is_per_sample_per_channel():
    """Channels-last: the offset is constant over every axis between batch and channels, and varies over (B, C)."""
    key = jax.random.key(0)
    noise = jax.random.normal(jax.random.key(1), (3, 5, 6, 7, 4))  # (B, F, H, W, C)
    out = jax.jit(apply_noise_offset)(key, noise, 0.05)
    shift = np.asarray(out - noise)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1, :1, :], shift.shape), atol=1e-6)
    per_bc = shift[:, 0, 0, 0, :]
    assert np.unique(np.round(per_bc, 6)).size == per_bc.size
    np.testing.assert_allclose(
        per_bc, 0.05 * np.asarray(jax.random.normal(key, (3, 1, 1, 1, 4)))[:, 0, 0, 0, :], atol=1e-7
    )
    with pytest.raises(ValueError, match="noise must be"):
        apply_noise_offset(key, jnp.zeros((4,)), 0.1)


def test_sample_timesteps_and_errors():
    ours = NoiseSchedule.from_config(ScheduleConfig())
    t = sample_timesteps(jax.random.key(0), 4096, ours)
    assert t.dtype == jnp.int32 and int(t.min()) >= 0 and int(t.max()) <= 999 and int(t.max()) > 990
    with pytest.raises(TypeError, match="integers"):
        add_noise(ours, jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.asarray([0.5, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        add_noise(ours, jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.asarray([1, 2, 3]))
