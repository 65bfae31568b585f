"""DDIM sampling (Song et al. 2021), matching diffusers' `DDIMScheduler` step for step.

Setup (`ddim_setup`, host side, static N):
  leading   t_n = (N−1−n)·⌊T/N⌋ + steps_offset            (SD1.5: 961, 921, …, 1 for N = 25)
  trailing  t_n = round(T − n·T/N) − 1                     (V-Express: 999, 959, …, 39)
  linspace  t_n = round(linspace(0, T−1, N))[::-1]
  previous step: t' = t_n − ⌊T/N⌋ for every spacing (diffusers uses the integer ratio even for trailing/linspace);
  ᾱ' = ᾱ[t'] if t' ≥ 0, else 1 (set_alpha_to_one) or ᾱ[0].

Step (`ddim_step`):
  epsilon:       x̂_0 = (x − √(1−ᾱ) ε̂)/√ᾱ
  v_prediction:  x̂_0 = √ᾱ x − √(1−ᾱ) v̂,   ε̂ = √ᾱ v̂ + √(1−ᾱ) x
  sample:        x̂_0 = model output,       ε̂ = (x − √ᾱ x̂_0)/√(1−ᾱ)
  σ² = η² · (1−ᾱ')/(1−ᾱ) · (1 − ᾱ/ᾱ')
  x' = √ᾱ' x̂_0 + √(1 − ᾱ' − σ²) ε̂ + σ z,   z ~ N(0, I)
x̂_0 is clamped to ±clip_sample_range only when `clip_sample` (off by default: SD / V-Express configs turn it off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtalk.diffusion.loop import DenoiseFn, scan_sampler, step_noises
from jaxtalk.diffusion.schedules import PREDICTION_TYPES, NoiseSchedule, ScheduleConfig, schedule_from

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def inference_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
    """diffusers' integer timesteps for N steps, noisiest first (int64)."""
    T, N = int(num_train_timesteps), int(num_inference_steps)
    if not 1 <= N <= T:
        raise ValueError(f"num_inference_steps must be in [1, {T}], got {N}")
    if spacing == "linspace":
        return np.linspace(0, T - 1, N).round()[::-1].astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, N) * (T // N)).round()[::-1].astype(np.int64) + int(steps_offset)
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / N)).astype(np.int64) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is not one of {TIMESTEP_SPACINGS}")


@struct.dataclass
class DDIMCoefficients:
    """Per-step DDIM quantities in sampling order (n = 0 is the noisiest step)."""

    timesteps: jax.Array  # int32 (N,): the timestep the model is called with
    alphas_cumprod: jax.Array  # float32 (N,): ᾱ at t_n
    alphas_cumprod_prev: jax.Array  # float32 (N,): ᾱ at the previous (less noisy) timestep
    prediction_type: str = struct.field(pytree_node=False, default="epsilon")
    eta: float = struct.field(pytree_node=False, default=0.0)
    clip_sample: bool = struct.field(pytree_node=False, default=False)
    clip_sample_range: float = struct.field(pytree_node=False, default=1.0)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


def ddim_setup(
    schedule: NoiseSchedule | ScheduleConfig,
    num_inference_steps: int,
    *,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    set_alpha_to_one: bool = True,
    eta: float = 0.0,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    prediction_type: str | None = None,
) -> DDIMCoefficients:
    """Static DDIM coefficients for N steps (call outside jit). `prediction_type` defaults to the schedule's.

    `steps_offset` only shifts "leading" timesteps, as in diffusers.
    """
    schedule = schedule_from(schedule)
    kind = prediction_type or schedule.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"ddim_setup: prediction_type {kind!r} is not one of {PREDICTION_TYPES}")
    if eta < 0:
        raise ValueError(f"ddim_setup: eta must be >= 0, got {eta}")
    T = schedule.num_train_timesteps
    timesteps = inference_timesteps(T, num_inference_steps, timestep_spacing, steps_offset)
    if timesteps.max() >= T or timesteps.min() < 0:
        raise ValueError(
            f"ddim_setup: timesteps {timesteps.min()}..{timesteps.max()} fall outside [0, {T}); "
            f"reduce steps_offset={steps_offset}"
        )
    abar = np.asarray(schedule.alphas_cumprod, np.float32)
    final = np.float32(1.0) if set_alpha_to_one else abar[0]
    prev = timesteps - T // int(num_inference_steps)
    abar_prev = np.where(prev >= 0, abar[np.clip(prev, 0, T - 1)], final).astype(np.float32)
    return DDIMCoefficients(
        timesteps=jnp.asarray(timesteps, jnp.int32),
        alphas_cumprod=jnp.asarray(abar[timesteps]),
        alphas_cumprod_prev=jnp.asarray(abar_prev),
        prediction_type=kind,
        eta=float(eta),
        clip_sample=bool(clip_sample),
        clip_sample_range=float(clip_sample_range),
    )


def predict_x0_eps(
    prediction_type: str, alpha_prod: jax.Array, x: jax.Array, model_output: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(x̂_0, ε̂) from the model output at noise level ᾱ (float32 arithmetic)."""
    a, s = jnp.sqrt(alpha_prod), jnp.sqrt(1.0 - alpha_prod)
    if prediction_type == "epsilon":
        return (x - s * model_output) / a, model_output
    if prediction_type == "v_prediction":
        return a * x - s * model_output, a * model_output + s * x
    if prediction_type == "sample":
        return model_output, (x - a * model_output) / s
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")


def ddim_step(
    coeffs: DDIMCoefficients,
    n: jax.Array | int,
    x: jax.Array,
    model_output: jax.Array,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> jax.Array:
    """One DDIM update x_{t_n} → x_{t_{n+1}}. With eta > 0 give `noise` (N(0, I), shape of x) or `key`."""
    abar = coeffs.alphas_cumprod[n]
    abar_prev = coeffs.alphas_cumprod_prev[n]
    xf = x.astype(jnp.float32)
    x0, eps = predict_x0_eps(coeffs.prediction_type, abar, xf, model_output.astype(jnp.float32))
    if coeffs.clip_sample:
        x0 = jnp.clip(x0, -coeffs.clip_sample_range, coeffs.clip_sample_range)
    out_dtype = x.dtype
    if coeffs.eta > 0:
        variance = ((1.0 - abar_prev) / (1.0 - abar)) * (1.0 - abar / abar_prev)
        std = coeffs.eta * jnp.sqrt(variance)
        x_prev = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(1.0 - abar_prev - std**2) * eps
        if noise is None:
            if key is None:
                raise ValueError("ddim_step: eta > 0 needs `noise` or `key`")
            noise = jax.random.normal(key, x.shape, jnp.float32)
        return (x_prev + std * noise.astype(jnp.float32)).astype(out_dtype)
    return (jnp.sqrt(abar_prev) * x0 + jnp.sqrt(1.0 - abar_prev) * eps).astype(out_dtype)


def ddim_sample(
    denoise_fn: DenoiseFn,
    x_T: jax.Array,
    coeffs: DDIMCoefficients,
    *,
    key: jax.Array | None = None,
    noises: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Run all N DDIM steps from x_T (pure N(0, I); DDIM's init_noise_sigma is 1).

    `denoise_fn(x, t)` gets int32 scalar t. For eta > 0 give `key` or per-step `noises` (N, *x.shape).
    """
    noises = step_noises(x_T, coeffs.num_steps, key, noises, "ddim_sample") if coeffs.eta > 0 else None

    def step(n, x, out, noise):
        return ddim_step(coeffs, n, x, out, noise=noise)

    if coeffs.eta > 0 and noises is None:
        raise ValueError("ddim_sample: eta > 0 needs `key` or `noises`")
    return scan_sampler(
        step, denoise_fn, x_T, coeffs.timesteps, noises=noises, return_trajectory=return_trajectory
    )
