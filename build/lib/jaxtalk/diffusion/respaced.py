"""Respaced ancestral DDPM sampling: improved-diffusion's `SpacedDiffusion` + `p_sample_loop`.

This is what AGRoL and Style-E run for `timestep_respacing="ddim5"`: despite the name it is ANCESTRAL sampling on
the kept steps (`p_sample_loop`), not DDIM.

Respacing (`space_timesteps`, `respaced_setup`; host side, float64 as improved-diffusion):
  kept steps τ_0 < … < τ_{K−1} ("ddimK" → range(0, T, s) for the smallest stride s giving K steps;
  "a,b,c" / [a, b, c] → evenly strided counts per equal section of [0, T)).
  ᾱ'_i = ᾱ[τ_i],  β'_i = 1 − ᾱ'_i / ᾱ'_{i−1}  (ᾱ'_{−1} = 1).
  posterior q(x_{i−1} | x_i, x_0):
    mean = c1_i x_0 + c2_i x_i,  c1 = β'_i √ᾱ'_{i−1}/(1−ᾱ'_i),  c2 = (1−ᾱ'_{i−1}) √(1−β'_i)/(1−ᾱ'_i)
    var  = β'_i (1−ᾱ'_{i−1})/(1−ᾱ'_i)
  log-variance: "fixed_small" → log(var) with var_0 replaced by var_1 (clipped);
                "fixed_large" → log([var_1, β'_1, …, β'_{K−1}]).

Step (`respaced_step`) at respaced index i (sampling step n = K−1−i; arrays here are in sampling order):
  x̂_0 = model output ("sample", START_X) or √(1/ᾱ'_i) x − √(1/ᾱ'_i − 1) ε̂ ("epsilon"); clamp to [−1, 1] if
  clip_denoised;  x_{i−1} = mean + [i > 0] · exp(½ log-var_i) · z.
The network is called with the ORIGINAL timestep τ_i (improved-diffusion's `_WrappedModel` timestep map), or with
the float τ_i · 1000/T when `rescale_timesteps` (Style-E / AGRoL use rescale_timesteps=False).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtalk.diffusion.loop import DenoiseFn, scan_sampler, step_noises
from jaxtalk.diffusion.schedules import NoiseSchedule, ScheduleConfig, schedule_from

RESPACED_PREDICTIONS = ("sample", "epsilon")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """The kept original timesteps, ascending (improved-diffusion `space_timesteps`)."""
    T = int(num_timesteps)
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, T):
                if len(range(0, T, stride)) == desired:
                    return list(range(0, T, stride))
            raise ValueError(
                f"space_timesteps: cannot take exactly {desired} of {T} steps with an integer stride"
            )
        counts = [int(c) for c in section_counts.split(",")]
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(T, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"space_timesteps: cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += size
    return sorted(set(kept))


@struct.dataclass
class RespacedCoefficients:
    """Per-step quantities in SAMPLING order (n = 0 is respaced index K−1); float32 on device."""

    model_timesteps: jax.Array  # (K,) what the network sees: int32 τ_i, or float32 τ_i·1000/T if rescaled
    posterior_mean_coef1: jax.Array  # (K,) c1
    posterior_mean_coef2: jax.Array  # (K,) c2
    log_variance: jax.Array  # (K,) clipped log-variance of the chosen variance type
    noise_mask: jax.Array  # (K,) 1 except 0 at the last step (respaced index 0)
    sqrt_recip_alphas_cumprod: jax.Array  # (K,) √(1/ᾱ')
    sqrt_recipm1_alphas_cumprod: jax.Array  # (K,) √(1/ᾱ' − 1)
    # the kept original timesteps τ, ascending (respaced order, improved-diffusion's `timestep_map`)
    timestep_map: tuple[int, ...] = struct.field(pytree_node=False, default=())
    prediction_type: str = struct.field(pytree_node=False, default="sample")
    clip_denoised: bool = struct.field(pytree_node=False, default=False)

    @property
    def num_steps(self) -> int:
        return int(self.posterior_mean_coef1.shape[0])


def respaced_tables(alphas_cumprod: np.ndarray, use_timesteps: Sequence[int]) -> dict[str, np.ndarray]:
    """float64 respaced β' and posterior coefficients in respaced order (index i = 0 … K−1)."""
    abar_full = np.asarray(alphas_cumprod, np.float64)
    kept = sorted(set(int(t) for t in use_timesteps))
    abar = abar_full[kept]
    betas = 1.0 - abar / np.append(1.0, abar[:-1])
    abar_prev = np.append(1.0, abar[:-1])
    variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    second = variance[1] if len(kept) > 1 else variance[0]
    return {
        "timestep_map": np.asarray(kept, np.int64),
        "betas": betas,
        "alphas_cumprod": abar,
        "posterior_variance": variance,
        "posterior_log_variance_clipped": np.log(np.append(second, variance[1:])),
        "log_variance_fixed_large": np.log(np.append(second, betas[1:])),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
    }


def respaced_setup(
    schedule: NoiseSchedule | ScheduleConfig,
    section_counts: str | int | Sequence[int] = "ddim5",
    *,
    prediction_type: str | None = None,
    variance_type: str = "fixed_small",
    rescale_timesteps: bool = False,
    clip_denoised: bool = False,
) -> RespacedCoefficients:
    """Static respaced-DDPM coefficients (call outside jit). Style-E: cosine schedule, "ddim5", "sample",
    fixed_small, no timestep rescale, clip_denoised=False. `prediction_type` defaults to the schedule's."""
    schedule = schedule_from(schedule)
    kind = prediction_type or schedule.prediction_type
    if kind not in RESPACED_PREDICTIONS:
        raise ValueError(f"respaced_setup: prediction_type {kind!r} is not one of {RESPACED_PREDICTIONS}")
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"respaced_setup: variance_type {variance_type!r} is not one of {VARIANCE_TYPES}")
    T = schedule.num_train_timesteps
    tables = respaced_tables(schedule.alphas_cumprod_f64(), space_timesteps(T, section_counts))
    K = len(tables["timestep_map"])
    logvar = tables[
        "posterior_log_variance_clipped" if variance_type == "fixed_small" else "log_variance_fixed_large"
    ]

    def sampling_order(a: np.ndarray, dtype=jnp.float32) -> jax.Array:
        return jnp.asarray(np.asarray(a)[::-1].copy(), dtype)

    if rescale_timesteps:
        model_t = sampling_order(tables["timestep_map"].astype(np.float32) * np.float32(1000.0 / T))
    else:
        model_t = sampling_order(tables["timestep_map"], jnp.int32)
    return RespacedCoefficients(
        model_timesteps=model_t,
        posterior_mean_coef1=sampling_order(tables["posterior_mean_coef1"]),
        posterior_mean_coef2=sampling_order(tables["posterior_mean_coef2"]),
        log_variance=sampling_order(logvar),
        noise_mask=sampling_order((np.arange(K) != 0).astype(np.float32)),
        sqrt_recip_alphas_cumprod=sampling_order(tables["sqrt_recip_alphas_cumprod"]),
        sqrt_recipm1_alphas_cumprod=sampling_order(tables["sqrt_recipm1_alphas_cumprod"]),
        timestep_map=tuple(int(t) for t in tables["timestep_map"]),
        prediction_type=kind,
        clip_denoised=bool(clip_denoised),
    )


def respaced_predict_x0(
    coeffs: RespacedCoefficients, n: jax.Array | int, x: jax.Array, model_output: jax.Array
):
    """x̂_0 at sampling step n (float32), clamped to [−1, 1] when `clip_denoised`."""
    out = model_output.astype(jnp.float32)
    if coeffs.prediction_type == "sample":
        x0 = out
    else:
        x0 = (
            coeffs.sqrt_recip_alphas_cumprod[n] * x.astype(jnp.float32)
            - coeffs.sqrt_recipm1_alphas_cumprod[n] * out
        )
    return jnp.clip(x0, -1.0, 1.0) if coeffs.clip_denoised else x0


def respaced_step(
    coeffs: RespacedCoefficients,
    n: jax.Array | int,
    x: jax.Array,
    model_output: jax.Array,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> jax.Array:
    """One ancestral step (`p_sample`). Give the N(0, I) `noise` (shape of x) or a `key`; at the last step it is
    multiplied by 0, as improved-diffusion does, so any value may be passed there."""
    x0 = respaced_predict_x0(coeffs, n, x, model_output)
    mean = coeffs.posterior_mean_coef1[n] * x0 + coeffs.posterior_mean_coef2[n] * x.astype(jnp.float32)
    if noise is None:
        if key is None:
            raise ValueError("respaced_step: ancestral sampling needs `noise` or `key`")
        noise = jax.random.normal(key, x.shape, jnp.float32)
    std = coeffs.noise_mask[n] * jnp.exp(0.5 * coeffs.log_variance[n])
    return (mean + std * noise.astype(jnp.float32)).astype(x.dtype)


def respaced_sample(
    denoise_fn: DenoiseFn,
    x_T: jax.Array,
    coeffs: RespacedCoefficients,
    *,
    key: jax.Array | None = None,
    noises: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """`p_sample_loop` from x_T ~ N(0, I). Give `key`, or `noises` (K, *x.shape) in sampling order
    (noises[n] is the `randn_like` drawn at respaced index K−1−n). `denoise_fn(x, t)` gets the original timestep."""
    noises = step_noises(x_T, coeffs.num_steps, key, noises, "respaced_sample")
    if noises is None:
        raise ValueError("respaced_sample: ancestral sampling needs `key` or `noises`")

    def step(n, x, out, noise):
        return respaced_step(coeffs, n, x, out, noise=noise)

    return scan_sampler(
        step, denoise_fn, x_T, coeffs.model_timesteps, noises=noises, return_trajectory=return_trajectory
    )
