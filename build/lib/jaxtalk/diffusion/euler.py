"""Euler sampling in σ-space (Karras et al. 2022, Alg. 1 with s_churn = 0), matching diffusers'
`EulerDiscreteScheduler` (interpolation_type="linear", no Karras / exponential / beta sigmas).

Setup (`euler_setup`, host side):
  σ(t) = √((1 − ᾱ_t)/ᾱ_t) on the integer training grid; with a zero-terminal-SNR schedule ᾱ_{T−1} is set to 2⁻²⁴
  first (as diffusers), so σ_max = 4096 stays finite.
  timesteps are floats: linspace → linspace(0, T−1, N)[::-1] (SD1.5: 999, 957.375, …, 0);
  leading → n·⌊T/N⌋ + steps_offset; trailing → round(T − n·T/N) − 1.
  σ_n = linear interpolation of σ(t) at t_n; σ_N = 0 (final_sigmas_type="zero") or σ(0) ("sigma_min").
  init_noise_sigma = σ_max for linspace / trailing spacing, √(σ_max² + 1) for leading: x_T = init_noise_sigma · z.

Step (`euler_step`), the network sees `x / √(σ_n² + 1)` (`euler_scale_model_input`) and the float t_n:
  epsilon:       x̂_0 = x − σ_n ε̂
  v_prediction:  x̂_0 = −σ_n/√(σ_n²+1) · v̂ + x/(σ_n²+1)
  sample:        x̂_0 = model output
  d = (x − x̂_0)/σ_n,   x' = x + d (σ_{n+1} − σ_n)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtalk.diffusion.loop import DenoiseFn, scan_sampler
from jaxtalk.diffusion.schedules import PREDICTION_TYPES, NoiseSchedule, ScheduleConfig, schedule_from


def euler_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int = 0):
    """diffusers' float32 Euler timesteps, noisiest first."""
    T, N = int(num_train_timesteps), int(num_inference_steps)
    if not 1 <= N <= T:
        raise ValueError(f"num_inference_steps must be in [1, {T}], got {N}")
    if spacing == "linspace":
        return np.linspace(0, T - 1, N, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, N) * (T // N)).round()[::-1].astype(np.float32) + np.float32(steps_offset)
    if spacing == "trailing":
        return np.arange(T, 0, -T / N).round().astype(np.float32) - np.float32(1)
    raise ValueError(f"timestep_spacing {spacing!r} is not one of ('linspace', 'leading', 'trailing')")


@struct.dataclass
class EulerCoefficients:
    """Per-step Euler quantities in sampling order; `sigmas` has one extra trailing entry (σ_N)."""

    timesteps: jax.Array  # float32 (N,): the (fractional) timestep the model is called with
    sigmas: jax.Array  # float32 (N+1,)
    init_noise_sigma: jax.Array  # float32 scalar: x_T = init_noise_sigma · N(0, I)
    prediction_type: str = struct.field(pytree_node=False, default="epsilon")

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


def euler_setup(
    schedule: NoiseSchedule | ScheduleConfig,
    num_inference_steps: int,
    *,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    final_sigmas_type: str = "zero",
    prediction_type: str | None = None,
) -> EulerCoefficients:
    """Static Euler coefficients for N steps (call outside jit)."""
    schedule = schedule_from(schedule)
    kind = prediction_type or schedule.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"euler_setup: prediction_type {kind!r} is not one of {PREDICTION_TYPES}")
    T = schedule.num_train_timesteps
    abar = np.array(schedule.alphas_cumprod, np.float32)
    if schedule.config.rescale_zero_terminal_snr:
        abar[-1] = np.float32(2.0**-24)
    train_sigmas = np.sqrt((np.float32(1) - abar) / abar)
    timesteps = euler_timesteps(T, num_inference_steps, timestep_spacing, steps_offset)
    sigmas = np.interp(timesteps, np.arange(T), train_sigmas)
    if final_sigmas_type == "zero":
        last = 0.0
    elif final_sigmas_type == "sigma_min":
        last = float(train_sigmas[0])
    else:
        raise ValueError(f"euler_setup: final_sigmas_type {final_sigmas_type!r} is not 'zero' or 'sigma_min'")
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
    sigma_max = sigmas.max()
    init = (
        sigma_max if timestep_spacing in ("linspace", "trailing") else np.sqrt(sigma_max**2 + np.float32(1))
    )
    return EulerCoefficients(
        timesteps=jnp.asarray(timesteps, jnp.float32),
        sigmas=jnp.asarray(sigmas),
        init_noise_sigma=jnp.asarray(init, jnp.float32),
        prediction_type=kind,
    )


def euler_scale_model_input(coeffs: EulerCoefficients, n: jax.Array | int, x: jax.Array) -> jax.Array:
    """The network input at step n: x / √(σ_n² + 1)."""
    sigma = coeffs.sigmas[n]
    return (x.astype(jnp.float32) / jnp.sqrt(sigma**2 + 1.0)).astype(x.dtype)


def euler_step(
    coeffs: EulerCoefficients, n: jax.Array | int, x: jax.Array, model_output: jax.Array
) -> jax.Array:
    """One Euler update from σ_n to σ_{n+1} (deterministic; s_churn = 0)."""
    sigma, sigma_next = coeffs.sigmas[n], coeffs.sigmas[n + 1]
    xf, out = x.astype(jnp.float32), model_output.astype(jnp.float32)
    if coeffs.prediction_type == "epsilon":
        x0 = xf - sigma * out
    elif coeffs.prediction_type == "v_prediction":
        x0 = out * (-sigma / jnp.sqrt(sigma**2 + 1.0)) + xf / (sigma**2 + 1.0)
    elif coeffs.prediction_type == "sample":
        x0 = out
    else:
        raise ValueError(
            f"euler_step: prediction_type {coeffs.prediction_type!r} is not one of {PREDICTION_TYPES}"
        )
    derivative = (xf - x0) / sigma
    return (xf + derivative * (sigma_next - sigma)).astype(x.dtype)


def euler_sample(
    denoise_fn: DenoiseFn, x_T: jax.Array, coeffs: EulerCoefficients, *, return_trajectory: bool = False
):
    """Run all N Euler steps from x_T (already scaled: x_T = coeffs.init_noise_sigma · z).

    `denoise_fn(x_scaled, t)` receives x / √(σ² + 1) and the float32 scalar timestep.
    """

    def step(n, x, out, noise):
        return euler_step(coeffs, n, x, out)

    def model_input(n, x):
        return euler_scale_model_input(coeffs, n, x)

    return scan_sampler(
        step, denoise_fn, x_T, coeffs.timesteps, model_input=model_input, return_trajectory=return_trajectory
    )
