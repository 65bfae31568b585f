"""An expression probe trained beside a generator, shared by Style-A and SVP stage 3.

The probe P learns, in the generator's own step, to read the 64 true expression coefficients from real training
frames; its reading of the generated frames (P's params behind `stop_gradient`, as a discriminator's) is a term on
the generator. The probe sees training identities only, so it is not one of the evaluators that score held-out
videos (other identities, another architecture). `ExpressionProbeTask` fits a probe alone (`train_expression_probe`),
the starting point where the generator's step trains it too slowly to read anything early on (SVP stage 3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp

from jaxtalk.data.facs import EXPRESSION_DIM
from jaxtalk.training import data as data_lib
from jaxtalk.training import sources
from jaxtalk.training.config import InitSource, SVPDataConfig, TrainExpressionProbeConfig
from jaxtalk.training.loop import Task


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


def read_error(probe: nn.Module, params: Any, frames: jax.Array, truth: jax.Array) -> jax.Array:
    """(N,): per frame, the MSE of the probe's reading of `frames` (N, S, S, 3) in [-1, 1] against `truth` (N, 64)."""
    read = probe.apply({"params": params}, frames).astype(jnp.float32)
    return jnp.mean((read - truth.astype(jnp.float32)) ** 2, axis=-1)


def random_shift(rng: jax.Array, frames: jax.Array, max_shift: int) -> jax.Array:
    """(N, S, S, C) frames, each moved by its own random whole-pixel offset in [-max_shift, max_shift] along y and x
    (edge padded, same size): an augmentation that keeps the probe from memorising exact training frames."""
    if max_shift <= 0:
        return frames
    n, h, w, _ = frames.shape
    padded = jnp.pad(frames, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * max_shift + 1)
    return jax.vmap(lambda f, o: jax.lax.dynamic_slice(f, (o[0], o[1], 0), (h, w, f.shape[-1])))(padded, offsets)


def probe_terms(probe: nn.Module, params: Any, real: jax.Array, generated: jax.Array,
                truth: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fit (), read (N,)): the probe's MSE on the real frames (trains the probe) and, per generated frame, the
    MSE of its reading against `truth` with the probe's params frozen (trains the generator only)."""
    fit = jnp.mean(read_error(probe, params, real, truth))
    return fit, read_error(probe, jax.lax.stop_gradient(params), generated, truth)


@dataclasses.dataclass(frozen=True)
class ExpressionProbeTask(Task):
    """Fits the probe to real frames' true coefficients (`TrainExpressionProbeConfig`); the run's
    `expression_probe` component is an init source of SVP stage 3 with `expression_loss`."""

    data: SVPDataConfig
    init: tuple[InitSource, ...] = ()

    name = "expression_probe"

    @classmethod
    def from_config(cls, cfg: TrainExpressionProbeConfig) -> ExpressionProbeTask:
        return cls(cfg.data, cfg.init)

    def init_variables(self, rng: jax.Array) -> dict:
        size = self.data.image_size
        return {"params": {"expression_probe": ExpressionProbe().init(rng, jnp.zeros((1, size, size, 3)))["params"]}}

    def trainable_patterns(self) -> None:
        return None

    def prepare_params(self, params: dict) -> dict:
        return sources.apply_init_sources(params, self.init)[0]

    def dataset(self) -> grain.MapDataset:
        return data_lib.frame_batches(self.data)

    def device_fields(self) -> tuple[str, ...]:
        return ("frames", "expression")

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        frames = batch["frames"]
        x = frames.reshape(-1, *frames.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        truth = batch["expression"].reshape(x.shape[0], -1).astype(jnp.float32)
        mse = jnp.mean(read_error(ExpressionProbe(), params["expression_probe"], x, truth))
        # the share of the batch's coefficient variance the probe explains (1 - MSE / variance)
        explained = 1.0 - mse / jnp.maximum(jnp.mean(jnp.var(truth, axis=0)), 1e-8)
        return mse, {"explained": explained}
