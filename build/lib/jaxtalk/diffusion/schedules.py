"""Beta schedules and the `NoiseSchedule` they define.

Forward process: q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I) with ᾱ_t = ∏_{s≤t} (1 − β_s), t = 0 … T−1.

Schedules (names as diffusers / improved-diffusion spell them):
  linear             β_t = linspace(β_start, β_end, T)                                    (diffusers, float32)
  scaled_linear      β_t = linspace(√β_start, √β_end, T)²                                 (SD1.5, float32)
  squaredcos_cap_v2  β_t = min(1 − ā((t+1)/T) / ā(t/T), 0.999),
                     ā(s) = cos²((s + 0.008)/1.008 · π/2)                                 (diffusers, float32)
  cosine             the same formula as squaredcos_cap_v2, but kept in float64 until ᾱ is formed, as
                     improved-diffusion / AGRoL / Style-E do (`get_named_beta_schedule('cosine')`). The two differ
                     only by float32 rounding of β before the cumulative product.

The diffusers schedules follow diffusers' (PyTorch's) arithmetic bit for bit: float32 `linspace` evaluated from
both ends with the step rounded to float32, β rounded to float32, and ᾱ accumulated in float64 then rounded (torch's
CPU cumprod accumulates float32 in double). The "cosine" schedule keeps ᾱ in float64 (its float64 values feed the respaced sampler, see
`respaced.py`) and rounds only the stored arrays.

Zero terminal SNR (Lin et al. 2023, Alg. 1; diffusers `rescale_zero_terminal_snr`): with a = √ᾱ,
a ← (a − a_{T−1}) · a_0 / (a_0 − a_{T−1}), so ᾱ_{T−1} = 0 exactly and ᾱ_0 is unchanged; β is recomputed
from ratios of consecutive ᾱ.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Training noise schedule (the fields of diffusers' scheduler configs that define β and the target).

    `prediction_type`: what the network outputs — "epsilon" (ε), "v_prediction" (v = √ᾱ ε − √(1−ᾱ) x_0) or
    "sample" (x_0, improved-diffusion's START_X).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    rescale_zero_terminal_snr: bool = False
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"ScheduleConfig.beta_schedule={self.beta_schedule!r} is not supported; use one of {BETA_SCHEDULES}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"ScheduleConfig.prediction_type={self.prediction_type!r} is not supported; "
                f"use one of {PREDICTION_TYPES}"
            )
        if int(self.num_train_timesteps) < 2:
            raise ValueError(
                f"ScheduleConfig.num_train_timesteps must be >= 2, got {self.num_train_timesteps}"
            )


def cosine_alpha_bar(s: float) -> float:
    """ā(s) = cos²((s + 0.008)/1.008 · π/2) for s ∈ [0, 1] (Nichol & Dhariwal 2021, eq. 17)."""
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar=cosine_alpha_bar, max_beta: float = 0.999
) -> np.ndarray:
    """β_t = min(1 − ā((t+1)/T) / ā(t/T), max_beta), in float64."""
    return np.array(
        [
            min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
            for i in range(num_timesteps)
        ],
        dtype=np.float64,
    )


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale β so that ᾱ_{T−1} = 0 while ᾱ_0 is kept (computed in the dtype of `betas`)."""
    betas = np.asarray(betas)
    one = betas.dtype.type(1)
    sqrt_abar = np.sqrt(alphas_cumprod_of(betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return (one - alphas).astype(betas.dtype)


def linspace_f32(start: float, end: float, num: int) -> np.ndarray:
    """float32 linspace as torch computes it: step = (end − start)/(num − 1) in float32, the first half counted up
    from `start`, the second half down from `end`, each product-sum rounded once."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(num - 1))
    i = np.arange(num, dtype=np.float64)
    up = np.float64(start32) + step * i
    down = np.float64(end32) - step * (num - 1 - i)
    return np.where(i < num // 2, up, down).astype(np.float32)


def make_betas(config: ScheduleConfig) -> np.ndarray:
    """β for `config` (float32 for the diffusers schedules, float64 for "cosine"), rescaled if asked."""
    n = int(config.num_train_timesteps)
    if config.beta_schedule == "linear":
        betas = linspace_f32(config.beta_start, config.beta_end, n)
    elif config.beta_schedule == "scaled_linear":
        roots = linspace_f32(config.beta_start**0.5, config.beta_end**0.5, n)
        betas = roots * roots
    elif config.beta_schedule == "squaredcos_cap_v2":
        betas = betas_for_alpha_bar(n).astype(np.float32)
    else:  # "cosine" (improved-diffusion)
        betas = betas_for_alpha_bar(n)
    if config.rescale_zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def alphas_cumprod_of(betas: np.ndarray) -> np.ndarray:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), accumulated in float64 and returned in the dtype of `betas`."""
    betas = np.asarray(betas)
    alphas = betas.dtype.type(1) - betas
    return np.cumprod(alphas.astype(np.float64)).astype(betas.dtype)


@struct.dataclass
class NoiseSchedule:
    """β and ᾱ as float32 arrays (pytree leaves) plus the static `ScheduleConfig`.

    Usable as a jit argument or closure constant; index with integer timesteps inside jit.
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    config: ScheduleConfig = struct.field(pytree_node=False)

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> NoiseSchedule:
        betas = make_betas(config)
        abar = alphas_cumprod_of(betas)
        return cls(
            betas=jnp.asarray(betas, jnp.float32),
            alphas_cumprod=jnp.asarray(abar, jnp.float32),
            config=config,
        )

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    def alphas_cumprod_f64(self) -> np.ndarray:
        """ᾱ recomputed on the host in float64 from the config (what improved-diffusion uses)."""
        betas = make_betas(self.config).astype(np.float64)
        return alphas_cumprod_of(betas)


def schedule_from(schedule: NoiseSchedule | ScheduleConfig) -> NoiseSchedule:
    """Accept either a built `NoiseSchedule` or its `ScheduleConfig`."""
    if isinstance(schedule, NoiseSchedule):
        return schedule
    if isinstance(schedule, ScheduleConfig):
        return NoiseSchedule.from_config(schedule)
    raise TypeError(f"expected a NoiseSchedule or ScheduleConfig, got {type(schedule).__name__}")
