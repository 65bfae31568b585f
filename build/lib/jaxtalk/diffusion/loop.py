"""The one sampling loop every sampler's `sample` uses: a `lax.scan` over the N inference steps.

Per step n (0 = noisiest): `out = denoise_fn(model_input(x), model_timesteps[n])`, then `x = step(n, x, out, noise_n)`.
`denoise_fn(x, t)` receives the (possibly scaled) sample and a scalar timestep array; close over params and
conditioning, and broadcast `t` to the batch yourself if the network wants shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def step_noises(
    x: jax.Array, num_steps: int, key: jax.Array | None, noises: jax.Array | None, where: str
) -> jax.Array | None:
    """Per-step N(0, I) inputs of shape (N, *x.shape): explicit `noises`, or drawn from `key` (split into N keys)."""
    if noises is not None and key is not None:
        raise ValueError(f"{where}: pass either `key` or `noises`, not both")
    if noises is not None:
        noises = jnp.asarray(noises)
        if noises.shape != (num_steps, *x.shape):
            raise ValueError(
                f"{where}: noises must have shape (num_steps, *x.shape) = {(num_steps, *x.shape)}, got {noises.shape}"
            )
        return noises
    if key is not None:
        keys = jax.random.split(key, num_steps)
        return jax.vmap(lambda k: jax.random.normal(k, x.shape, jnp.float32))(keys)
    return None


def scan_sampler(
    step: Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None], jax.Array],
    denoise_fn: DenoiseFn,
    x_T: jax.Array,
    model_timesteps: jax.Array,
    *,
    noises: jax.Array | None = None,
    model_input: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    return_trajectory: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Run `step(n, x, model_output, noise_n)` for n = 0 … N−1 under `lax.scan`.

    Returns the final sample, or `(final, trajectory)` with trajectory[n] = x after step n, shape (N, *x.shape).
    """
    num_steps = model_timesteps.shape[0]

    def body(x, inputs):
        n, noise = inputs
        inp = x if model_input is None else model_input(n, x)
        out = denoise_fn(inp, model_timesteps[n])
        x_next = step(n, x, out, noise)
        return x_next, (x_next if return_trajectory else None)

    xs = (jnp.arange(num_steps), noises)
    x_final, trajectory = jax.lax.scan(body, x_T, xs)
    return (x_final, trajectory) if return_trajectory else x_final
