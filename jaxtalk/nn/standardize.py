"""Per-dimension standardisation of a conditioning input with statistics fixed in the config.

Conditioning vectors whose dimensions share a large constant part (raw 3DMM crop parameters beside small
expression changes; a style prior's tokens around a common mean) leave a linear layer learning the constant
first. Centring and scaling them with training-population statistics stored in the model config (Style-A's
`driving_mean` / `driving_std`, the SVP UNet's `style_mean` / `style_std`) makes the per-sample part what the
layer sees; the statistics travel with the weights, so training and sampling apply the same map.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def population_statistics(samples: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-dimension (mean, std) over every leading axis of `samples` (..., D), as config tuples; a dimension
    that never changes gets std 1, so it is only centred."""
    x = np.asarray(samples, np.float64).reshape(-1, np.shape(samples)[-1])
    std = x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in std)


def standardize(x: jax.Array, mean: Sequence[float] | None, std: Sequence[float] | None) -> jax.Array:
    """(x - mean) / std over the last axis, computed in float32 and returned in x's dtype; x unchanged when
    `mean` is None."""
    if mean is None:
        return x
    out = (x.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return out.astype(x.dtype)
