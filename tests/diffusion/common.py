"""Shared test helpers: a deterministic fake denoiser (numpy for the torch references, jax for ours) and a
trajectory comparison.

The fake denoiser:

out(x, t) = a(t) · x + b(t) · P,  a(t) = 0.6 + 0.3 · t/1000,  b(t) = 0.25 · (1 − t/1000),
with P a fixed pattern of x's shape. Affine in x, so a whole sampler trajectory is chained through it and an
error in any step shows in every later sample.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch


def pattern(shape: tuple[int, ...], seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def fake_model_np(x: np.ndarray, t: float, P: np.ndarray) -> np.ndarray:
    s = np.float32(float(t) / 1000.0)
    a = np.float32(0.6) + np.float32(0.3) * s
    b = np.float32(0.25) * (np.float32(1.0) - s)
    return (a * x.astype(np.float32) + b * P).astype(np.float32)


def fake_model_torch(x: torch.Tensor, t, P: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(fake_model_np(x.numpy(), float(t), P))


def make_fake_model_jax(P: np.ndarray):
    P = jnp.asarray(P)

    def denoise(x, t):
        s = jnp.asarray(t, jnp.float32) / 1000.0
        return (0.6 + 0.3 * s) * x + (0.25 * (1.0 - s)) * P

    return denoise


def check_trajectory(name: str, out, ref) -> float:
    """Every step within the parity standard of that step, and the whole trajectory (N, ...) against its max|ref|.

    Prints and returns max|Δ| over the whole trajectory.
    """
    from tests.parity import PARITY_RTOL, assert_close, parity_error

    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape, f"{name}: trajectory shape {out.shape} != reference {ref.shape}"
    for n in range(ref.shape[0]):
        err, scale = parity_error(out[n], ref[n])
        assert err <= PARITY_RTOL * scale, f"{name}: step {n}: max|d|={err:.3e} > {PARITY_RTOL} * {scale:.3e}"
    return assert_close(out, ref, name=f"{name} (whole trajectory, {ref.shape[0]} steps)")
