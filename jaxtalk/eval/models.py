"""The three small evaluator networks (Flax linen), trained on ground-truth synthetic data by `jaxtalk.eval.train`.

- `FrameRegressor`: a frame -> the 64 expression coefficients and the 16 synthetic landmarks (8 Head-Kps + 8 mouth,
  `metrics.LANDMARK_NAMES`) as fractions of the frame side: the synthetic stand-in for the 3DMM encoder and the
  landmark detector of the papers' evaluations.
- `EmotionClassifier`: an expression window (T, 64) of any length >= 1 -> logits over MEAD's 8 emotions
  (`facs.EMOTIONS`); its penultimate features (`features`) are a fixed, deterministic style code.
- `IdentityEncoder`: a frame -> an L2-normalised identity embedding (and logits over the training identities,
  used only for training); embeddings of unseen identities still separate them (held-out figures in the manifest).

All frame models see `INPUT_SIZE` x `INPUT_SIZE` RGB floats in [0, 1]; `prepare_frames` converts uint8 / float
frames of any square size (antialiased resize), so 64 and 128-pixel videos go through the same nets.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.data import facs

INPUT_SIZE = 64
NUM_LANDMARKS = 16
EXPRESSION_SCALE = 2.0  # coefficients are divided by this inside the nets (their std is ~0.5-1)


def prepare_frames(frames) -> jax.Array:
    """(..., S, S, 3) uint8 or [0, 1] float frames of any square size -> (N, 64, 64, 3) float32 (leading axes
    flattened). Raises ValueError for non-square or non-RGB input."""
    x = jnp.asarray(frames)
    if x.ndim < 3 or x.shape[-1] != 3 or x.shape[-2] != x.shape[-3]:
        raise ValueError(f"frames must be (..., S, S, 3) square RGB, got shape {tuple(x.shape)}")
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    x = x.reshape((-1,) + x.shape[-3:])
    if x.shape[1] != INPUT_SIZE:
        x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), method="linear", antialias=True)
    return x


class _ConvTrunk(nn.Module):
    """64 px -> 32 px stem (2x2 space-to-depth, or 2x2 average pooling for `pool`), a 3x3 conv, then strided 3x3
    convs down to 4 px, flattened, one dense layer; GELU throughout."""

    channels: tuple[int, ...]
    hidden: int
    pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x * 2.0 - 1.0
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c)
        x = x.mean((2, 4)) if self.pool else x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c)
        x = nn.gelu(nn.Conv(self.channels[0], (3, 3), padding="SAME", name="stem")(x))
        for i, ch in enumerate(self.channels[1:]):
            x = nn.gelu(nn.Conv(ch, (3, 3), strides=(2, 2), padding="SAME", name=f"down{i}")(x))
        x = x.reshape(n, -1)
        return nn.gelu(nn.Dense(self.hidden, name="fc")(x))


class FrameRegressor(nn.Module):
    """(N, 64, 64, 3) frames -> {"expression": (N, 64), "landmarks": (N, 16, 2) in fractions of the side}."""

    channels: tuple[int, ...] = (32, 48, 64, 96)
    hidden: int = 192

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        h = _ConvTrunk(self.channels, self.hidden, name="trunk")(x)
        expression = nn.Dense(facs.EXPRESSION_DIM, name="expression")(h) * EXPRESSION_SCALE
        landmarks = nn.Dense(NUM_LANDMARKS * 2, name="landmarks")(h).reshape(-1, NUM_LANDMARKS, 2) * 0.1 + 0.5
        return {"expression": expression, "landmarks": landmarks}


class IdentityEncoder(nn.Module):
    """(N, 64, 64, 3) frames -> (unit-norm embedding (N, embed_dim), logits over `num_identities`)."""

    num_identities: int
    channels: tuple[int, ...] = (16, 32, 48, 64)
    hidden: int = 128
    embed_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = _ConvTrunk(self.channels, self.hidden, pool=True, name="trunk")(x)
        e = nn.Dense(self.embed_dim, name="embed")(h)
        e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-6)
        # Cosine classifier (scaled): embeddings of one identity gather around its class direction.
        w = self.param("classes", nn.initializers.normal(1.0), (self.embed_dim, self.num_identities))
        w = w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-6)
        return e, 16.0 * e @ w


class EmotionClassifier(nn.Module):
    """(N, T, 64) expression windows (any T >= 1) -> {"logits": (N, 8), "features": (N, features)}."""

    width: int = 96
    features: int = 64

    @nn.compact
    def __call__(self, expression: jax.Array) -> dict[str, jax.Array]:
        x = expression / EXPRESSION_SCALE
        x = nn.gelu(nn.Dense(self.width, name="frame")(x))
        x = nn.gelu(nn.Conv(self.width, (3,), padding="SAME", name="temporal")(x))
        pooled = jnp.concatenate([x.mean(1), x.max(1)], axis=-1)
        f = nn.gelu(nn.Dense(self.features, name="penultimate")(pooled))
        return {"logits": nn.Dense(len(facs.EMOTIONS), name="head")(f), "features": f}


def param_count(params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
