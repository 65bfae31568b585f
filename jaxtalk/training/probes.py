"""An expression probe trained beside a generator, shared by Style-A and SVP stage 3.

The probe P learns, in the generator's own step, to read the 64 true expression coefficients from real training
frames; its reading of the generated frames (P's params behind `stop_gradient`, as a discriminator's) is a term on
the generator. The probe sees training identities only, so it is not one of the evaluators that score held-out
videos (other identities, another architecture).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.data.facs import EXPRESSION_DIM


class ExpressionProbe(nn.Module):
    """(B, S, S, 3) frames in [-1, 1] -> (B, 64) expression coefficients: stride-2 3x3 convs with LeakyReLU 0.2
    at `widths`, flattened, a hidden dense layer, a linear read-out."""

    widths: tuple[int, ...] = (32, 64, 96)
    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, w in enumerate(self.widths):
            x = nn.leaky_relu(nn.Conv(w, (3, 3), strides=2, padding=1, name=f"conv_{i}")(x), 0.2)
        x = nn.leaky_relu(nn.Dense(self.hidden, name="hidden")(x.reshape(x.shape[0], -1)), 0.2)
        return nn.Dense(EXPRESSION_DIM, name="expression")(x)


def probe_terms(probe: nn.Module, params: Any, real: jax.Array, generated: jax.Array,
                truth: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fit (), read (N,)): the probe's MSE on the real frames (trains the probe) and, per generated frame, the
    MSE of its reading against `truth` with the probe's params frozen (trains the generator only).
    real / generated: (N, S, S, 3) in [-1, 1]; truth: (N, 64)."""
    truth = truth.astype(jnp.float32)
    fit = jnp.mean((probe.apply({"params": params}, real) - truth) ** 2)
    read = probe.apply({"params": jax.lax.stop_gradient(params)}, generated)
    return fit, jnp.mean((read.astype(jnp.float32) - truth) ** 2, axis=-1)
