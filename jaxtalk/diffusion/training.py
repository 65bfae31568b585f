"""DDPM training pieces: forward noising, prediction targets, offset noise, SNR and min-SNR-γ loss weights.

All functions are pure and jit-safe. `timesteps` are integer arrays of shape (B,) indexing the training schedule;
per-sample coefficients are broadcast over every trailing axis of `x`, so any layout works (images NHWC,
video (B, F, H, W, C), sequences (B, T, D)). Arithmetic is float32; results are cast back to the input dtype.

  x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε                    (add_noise)
  v   = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0                    (velocity; Salimans & Ho 2022)
  SNR = ᾱ_t / (1 − ᾱ_t)                                (snr)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtalk.diffusion.schedules import PREDICTION_TYPES, NoiseSchedule


def _per_sample(values: jax.Array, ndim: int) -> jax.Array:
    """(B,) → (B, 1, …, 1) with `ndim` axes in total."""
    values = jnp.reshape(values, (-1,))
    return values.reshape(values.shape + (1,) * (ndim - 1))


def _check_timesteps(timesteps: jax.Array, x: jax.Array, where: str) -> jax.Array:
    timesteps = jnp.asarray(timesteps)
    if not jnp.issubdtype(timesteps.dtype, jnp.integer):
        raise TypeError(
            f"{where}: timesteps must be integers indexing the schedule, got dtype {timesteps.dtype}"
        )
    if timesteps.ndim > 1 or (timesteps.ndim == 1 and timesteps.shape[0] not in (1, x.shape[0])):
        raise ValueError(
            f"{where}: timesteps must be a scalar or have shape (B,) = ({x.shape[0]},), got {timesteps.shape}"
        )
    return jnp.broadcast_to(timesteps, (x.shape[0],))


def _sqrt_alphas(schedule: NoiseSchedule, timesteps: jax.Array, x: jax.Array, where: str):
    t = _check_timesteps(timesteps, x, where)
    abar = _per_sample(schedule.alphas_cumprod[t], x.ndim)
    return jnp.sqrt(abar), jnp.sqrt(1.0 - abar)


def add_noise(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
    """Sample q(x_t | x_0): √ᾱ_t x_0 + √(1 − ᾱ_t) ε (diffusers `add_noise`, improved-diffusion `q_sample`)."""
    if noise.shape != x0.shape:
        raise ValueError(f"add_noise: noise shape {noise.shape} differs from x0 shape {x0.shape}")
    a, s = _sqrt_alphas(schedule, timesteps, x0, "add_noise")
    out = a * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)
    return out.astype(x0.dtype)


def velocity(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
    """The v target: √ᾱ_t ε − √(1 − ᾱ_t) x_0 (diffusers `get_velocity`)."""
    if noise.shape != x0.shape:
        raise ValueError(f"velocity: noise shape {noise.shape} differs from x0 shape {x0.shape}")
    a, s = _sqrt_alphas(schedule, timesteps, x0, "velocity")
    out = a * noise.astype(jnp.float32) - s * x0.astype(jnp.float32)
    return out.astype(x0.dtype)


def training_target(
    schedule: NoiseSchedule,
    x0: jax.Array,
    noise: jax.Array,
    timesteps: jax.Array,
    prediction_type: str | None = None,
) -> jax.Array:
    """What the network should output: ε ("epsilon"), v ("v_prediction") or x_0 ("sample").

    `prediction_type` defaults to the schedule's.
    """
    kind = prediction_type or schedule.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return velocity(schedule, x0, noise, timesteps)
    if kind == "sample":
        return x0
    raise ValueError(f"training_target: prediction_type {kind!r} is not one of {PREDICTION_TYPES}")


def apply_noise_offset(key: jax.Array, noise: jax.Array, offset: float) -> jax.Array:
    """Offset noise (as the diffusers / V-Express train scripts): ε + offset · n, n ~ N(0, 1) of shape (B, 1, …, 1, C).

    Channels are the LAST axis (channels-last layouts); one draw per (sample, channel) is broadcast over every
    axis between batch and channels (H, W for images; F, H, W for video). The PyTorch scripts draw
    randn(B, C, 1, 1[, 1]) on channels-first tensors, which is the same thing.
    """
    if noise.ndim < 2:
        raise ValueError(f"apply_noise_offset: noise must be (B, ..., C), got shape {noise.shape}")
    shape = (noise.shape[0],) + (1,) * (noise.ndim - 2) + (noise.shape[-1],)
    shift = jax.random.normal(key, shape, jnp.float32)
    return (noise.astype(jnp.float32) + offset * shift).astype(noise.dtype)


def sample_timesteps(key: jax.Array, batch_size: int, schedule: NoiseSchedule) -> jax.Array:
    """Uniform training timesteps t ~ U{0, …, T−1}, int32 of shape (B,)."""
    return jax.random.randint(key, (batch_size,), 0, schedule.num_train_timesteps, dtype=jnp.int32)


def snr(schedule: NoiseSchedule, timesteps: jax.Array) -> jax.Array:
    """SNR(t) = (√ᾱ_t / √(1 − ᾱ_t))², float32 of shape (B,) (diffusers `training_utils.compute_snr`)."""
    abar = schedule.alphas_cumprod[jnp.asarray(timesteps)]
    return (jnp.sqrt(abar) / jnp.sqrt(1.0 - abar)) ** 2


def min_snr_weights(
    snr_values: jax.Array, gamma: float, prediction_type: str, shift_v_snr: bool = True
) -> jax.Array:
    """Per-sample min-SNR-γ loss weights (Hang et al. 2023), float32 of shape (B,).

      epsilon:       min(SNR, γ) / SNR
      sample (x_0):  min(SNR, γ)
      v_prediction:  min(SNR + 1, γ) / (SNR + 1)   (shift_v_snr=True: V-Express / Moore-AnimateAnyone / Hallo,
                                                    which add 1 to SNR before both the min and the division)
                     min(SNR, γ) / (SNR + 1)        (shift_v_snr=False: diffusers train_text_to_image)

    Where SNR = 0 (the zero-terminal-SNR step) the epsilon weight 0/0 is replaced by 1 (ε carries no
    information about x_0 there; plain diffusers would give NaN).
    """
    s = jnp.asarray(snr_values, jnp.float32)
    if prediction_type == "epsilon":
        return jnp.where(s > 0, jnp.minimum(s, gamma) / jnp.where(s > 0, s, 1.0), 1.0)
    if prediction_type == "sample":
        return jnp.minimum(s, gamma)
    if prediction_type == "v_prediction":
        if shift_v_snr:
            return jnp.minimum(s + 1.0, gamma) / (s + 1.0)
        return jnp.minimum(s, gamma) / (s + 1.0)
    raise ValueError(f"min_snr_weights: prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")


def diffusion_loss(model_output: jax.Array, target: jax.Array, weights: jax.Array | None = None,
                   element_weights: jax.Array | None = None) -> jax.Array:
    """Weighted MSE: mean_b( w_b · mean_{non-batch}(m · (output − target)²) ), computed in float32.

    `weights` (B,) weigh samples (min-SNR), `element_weights` (broadcastable to the output) weigh positions
    (V-Express's mouth loss weight); with both None this equals the plain mean squared error.
    """
    if model_output.shape != target.shape:
        raise ValueError(
            f"diffusion_loss: output shape {model_output.shape} differs from target {target.shape}"
        )
    err = jnp.square(model_output.astype(jnp.float32) - target.astype(jnp.float32))
    if element_weights is not None:
        err = err * jnp.asarray(element_weights, jnp.float32)
    per_sample = jnp.mean(err, axis=tuple(range(1, err.ndim)))
    if weights is not None:
        per_sample = per_sample * jnp.asarray(weights, jnp.float32).reshape(per_sample.shape)
    return jnp.mean(per_sample)
