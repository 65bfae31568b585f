"""The SVP sampler section selects DPM-Solver++ / UniPC, and the windowed denoising loop runs them exactly as the
bare `multistep_sample` over the same (window-averaged) denoiser."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config, diffusion
from jaxtalk.config import ConfigError
from jaxtalk.svp import context
from jaxtalk.svp import pipeline as P


class _WindowUNet:
    """Output depends on the whole window, so overlapping windows disagree and the mean overlap matters."""

    dtype = jnp.float32

    def apply(self, variables, x, t, audio, *, reference_bank, kps_features, style_tokens, **weights):
        per_frame = jnp.mean(audio, axis=(2, 3))[:, :, None, None, None]
        return 0.3 * x + 0.1 * jnp.mean(x, axis=1, keepdims=True) + 1e-4 * t[:, None, None, None, None] + per_frame


@pytest.mark.parametrize("kind", ["dpmsolver++", "sde-dpmsolver++", "unipc"])
def test_windowed_loop_runs_the_multistep_solver(kind):
    cfg = config.load("svp_vexpress", overrides=[f"sampler.kind={kind}", "sampler.steps=4", "guidance.scale=1.0"])
    coeffs = P.sampler_coefficients(cfg.sampler)
    assert isinstance(coeffs, diffusion.MultistepCoefficients) and coeffs.solver == kind
    assert coeffs.prediction_type == "v_prediction"
    np.testing.assert_array_equal(np.asarray(coeffs.timesteps), [999, 749, 499, 249])  # zero-SNR trailing

    fake = types.SimpleNamespace(config=cfg, unet=_WindowUNet(), kps_guider=None)
    plan = context.window_plan(7, 4, 1)  # windows 0-3, 3-6
    keys = P.clip_keys(0, 2)
    audio = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 2, 3)), jnp.float32)
    cond = P.Conditions(audio_tokens=audio, reference_bank=())
    scalars = {k: jnp.float32(1.0) for k in ("guidance_scale", "reference_weight", "audio_weight", "style_weight")}
    got = jax.jit(lambda k, c: P.denoise_latents(fake, {"unet": None}, k, c, scalars, plan=plan, coeffs=coeffs,
                                                 latent_shape=(2, 2, 4), do_cfg=False))(keys, cond)

    a = jnp.mean(audio, axis=(2, 3))[:, :, None, None, None]

    def denoise(x, t):  # the same window average written directly
        acc = jnp.zeros_like(x)
        count = np.zeros(7)
        for idx in plan.indices:
            w = x[:, idx]
            pred = 0.3 * w + 0.1 * w.mean(axis=1, keepdims=True) + 1e-4 * t + a[:, idx]
            acc = acc.at[:, idx].add(pred)
            count[idx] += 1
        return acc / count[None, :, None, None, None]

    z = jnp.stack([jax.random.normal(jax.random.fold_in(k, 0), (7, 2, 2, 4)) for k in keys])
    noises = None
    if coeffs.stochastic:
        noises = jnp.stack([jax.random.normal(jax.random.fold_in(k, 2), (4, 7, 2, 2, 4)) for k in keys], 1)
    want = diffusion.multistep_sample(denoise, z, coeffs, noises=noises)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_sampler_section_rejects_eta_and_order_three():
    with pytest.raises(ConfigError, match="eta"):
        config.load("svp_paper", overrides=["sampler.kind=unipc", "sampler.eta=0.5"])
    with pytest.raises(ConfigError):
        config.load("svp_paper", overrides=["sampler.solver_order=3"])
