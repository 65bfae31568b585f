"""Audio tokens for the video UNet's audio cross-attention: per-frame windowing and V-Express's `AudioProjection`.

Pipeline (V-Express `prepare_audio_embeddings`): frame-rate-free audio features (wav2vec2 last_hidden_state,
768-d at 50 Hz) are resampled linearly to `vectors_per_frame * L` vectors for L video frames, padded with
`vectors_per_frame * P` zero vectors at each end, and frame f takes the window
`emb[v*f : v*(f + 2P + 1)]` (frames f-P .. f+P; 10 vectors for v=2, P=2). `AudioProjection` (an IP-Adapter style
Perceiver resampler) turns each window into `num_queries` tokens.

SVP's Whisper path (paper §3.1 uses Whisper-Tiny, 5 hidden states x 384 = 1920-d per 20 ms): the same windowing
over the concatenated hidden states (`stack_whisper_hidden_states`), then the same resampler with
`embedding_dim=1920` (`AudioProjectionConfig.svp_whisper()`). We keep the resampler rather than an MLP because it
is what the V-Express backbone was trained with (only its input width changes), its cost does not grow with the
window length, and the window position is still encoded by its `pos_emb`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk import config as cfg
from jaxtalk.nn import layers
from jaxtalk.nn.attention import dot_product_attention

Dtype = jnp.dtype


def interpolate_linear(x: jax.Array, size: int) -> jax.Array:
    """Resample (..., T, D) to (..., size, D) like `F.interpolate(mode='linear', align_corners=False)` over T."""
    t = x.shape[-2]
    if size <= 0 or t <= 0:
        raise ValueError(f"interpolate_linear: need a positive input length and size, got T={t}, size={size}")
    scale = t / size
    src = jnp.maximum((jnp.arange(size, dtype=jnp.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), t - 1)
    i1 = jnp.minimum(i0 + 1, t - 1)
    lam = (src - i0.astype(jnp.float32))[:, None]
    x0 = jnp.take(x, i0, axis=-2).astype(jnp.float32)
    x1 = jnp.take(x, i1, axis=-2).astype(jnp.float32)
    return ((1.0 - lam) * x0 + lam * x1).astype(x.dtype)


def window_audio_features(
    features: jax.Array, num_frames: int, num_pad: int = 2, vectors_per_frame: int = 2,
) -> jax.Array:
    """Per-frame audio windows: (..., T_a, D) -> (..., num_frames, vectors_per_frame*(2*num_pad+1), D).

    V-Express defaults: 2 vectors per frame, 2 padding frames each side -> 10 vectors per frame.
    """
    if num_frames <= 0 or num_pad < 0 or vectors_per_frame <= 0:
        raise ValueError(f"window_audio_features: bad num_frames={num_frames}, num_pad={num_pad}, "
                         f"vectors_per_frame={vectors_per_frame}")
    v = vectors_per_frame
    emb = interpolate_linear(features, v * num_frames)
    widths = [(0, 0)] * (emb.ndim - 2) + [(v * num_pad, v * num_pad), (0, 0)]
    emb = jnp.pad(emb, widths)
    win = v * (2 * num_pad + 1)
    starts = v * jnp.arange(num_frames)
    idx = starts[:, None] + jnp.arange(win)[None, :]  # (F, win)
    return jnp.take(emb, idx, axis=-2)


def stack_whisper_hidden_states(hidden_states: jax.Array) -> jax.Array:
    """Whisper encoder hidden states [L+1, B, T, D] (the `whisper_encoder` kind's output) -> [B, T, (L+1)*D].

    For Whisper-Tiny (L=4, D=384) this is SVP's 1920-d audio feature per 20 ms frame.
    """
    if hidden_states.ndim != 4:
        raise ValueError(f"expected stacked hidden states [L+1, B, T, D], got shape {hidden_states.shape}")
    n, b, t, d = hidden_states.shape
    return jnp.transpose(hidden_states, (1, 2, 0, 3)).reshape(b, t, n * d)


class PerceiverAttention(nn.Module):
    """Latents attend to cat[x, latents]; q and k each scaled by dim_head^-0.25; no biases."""

    dim_head: int = 64
    heads: int = 8
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.heads * self.dim_head
        x = layers.layer_norm(name="norm1", **kw)(x)
        latents = layers.layer_norm(name="norm2", **kw)(latents)
        q = layers.dense(inner, name="to_q", use_bias=False, axes=("embed", "heads"), **kw)(latents)
        kv = layers.dense(2 * inner, name="to_kv", use_bias=False, axes=("embed", "heads"), **kw)(
            jnp.concatenate([x, latents], axis=-2))
        k, v = jnp.split(kv, 2, axis=-1)
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.dim_head)
        s = self.dim_head ** -0.25
        o = dot_product_attention(split(q) * s, split(k) * s, split(v), scale=1.0)
        o = o.reshape(*o.shape[:-2], inner)
        return layers.dense(latents.shape[-1], name="to_out", use_bias=False, axes=("heads", "embed"), **kw)(o)


class FeedForward(nn.Module):
    """LayerNorm -> Linear (no bias) -> GELU -> Linear (no bias); torch indices 0, 1, 3."""

    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        h = layers.layer_norm(name="0", **kw)(x)
        h = layers.dense(dim * self.mult, name="1", use_bias=False, axes=("embed", "mlp"), **kw)(h)
        h = layers.gelu_exact(h)
        return layers.dense(dim, name="3", use_bias=False, axes=("mlp", "embed"), **kw)(h)


class _ResamplerLayer(nn.Module):
    """One `layers.k` entry: [0] PerceiverAttention, [1] FeedForward, both residual on the latents."""

    dim_head: int
    heads: int
    ff_mult: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        latents = latents + PerceiverAttention(self.dim_head, self.heads, name="0", **kw)(x, latents)
        return latents + FeedForward(self.ff_mult, name="1", **kw)(latents)


class AudioProjection(nn.Module):
    """V-Express `AudioProjection`: `apply(v, x[N, n_in, embedding_dim]) -> [N, num_queries, output_dim]`.

    N is usually batch*frames (one window per frame); n_in <= max_seq_len.
    """

    dim: int = 768
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 5
    embedding_dim: int = 768
    output_dim: int = 768
    ff_mult: int = 4
    max_seq_len: int = 10
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3 or x.shape[-1] != self.embedding_dim:
            raise ValueError(f"AudioProjection expects [N, n_in, {self.embedding_dim}] windows, got {x.shape}")
        n = x.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f"AudioProjection: window of {n} vectors exceeds max_seq_len={self.max_seq_len}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        pos_emb = nn.Embed(
            self.max_seq_len, self.embedding_dim, param_dtype=self.param_dtype, dtype=self.dtype,
            embedding_init=layers.partitioned(nn.initializers.normal(1.0), (None, "embed")), name="pos_emb",
        )
        x = x.astype(self.dtype) + pos_emb(jnp.arange(n))[None]
        latents0 = self.param(
            "latents", layers.partitioned(nn.initializers.normal(self.dim ** -0.5), (None, None, "embed")),
            (1, self.num_queries, self.dim), self.param_dtype,
        )
        latents = jnp.broadcast_to(latents0.astype(self.dtype), (x.shape[0], self.num_queries, self.dim))
        x = layers.dense(self.dim, name="proj_in", axes=("mlp", "embed"), **kw)(x)
        for i in range(self.depth):
            latents = _ResamplerLayer(self.dim_head, self.heads, self.ff_mult, name=f"layers_{i}", **kw)(x, latents)
            latents = layers.constrain(latents, ("act_batch", "act_length", "act_embed"))
        latents = layers.dense(self.output_dim, name="proj_out", axes=("embed", "mlp"), **kw)(latents)
        return layers.layer_norm(name="norm_out", **kw)(latents)


@dataclasses.dataclass(frozen=True)
class AudioProjectionConfig:
    """Audio windowing + resampler sizes. Defaults: V-Express (wav2vec2, 768-d); `svp_whisper()` for SVP."""

    dim: int = cfg.field(768, min=1)
    depth: int = cfg.field(4, min=1)
    dim_head: int = cfg.field(64, min=1)
    heads: int = cfg.field(12, min=1)
    num_queries: int = cfg.field(5, min=1, doc="audio tokens per frame")
    embedding_dim: int = cfg.field(768, min=1, doc="input feature width: 768 wav2vec2, 1920 Whisper-Tiny x5")
    output_dim: int = cfg.field(768, min=1, doc="the UNet's cross_attention_dim")
    ff_mult: int = cfg.field(4, min=1)
    num_pad_audio_frames: int = cfg.field(2, min=0, doc="context frames on each side of a frame")
    vectors_per_frame: int = cfg.field(2, min=1)

    @property
    def window(self) -> int:
        return self.vectors_per_frame * (2 * self.num_pad_audio_frames + 1)

    @classmethod
    def svp_whisper(cls, **overrides) -> AudioProjectionConfig:
        return cls(**{"embedding_dim": 1920, **overrides})

    def module(self, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> AudioProjection:
        return AudioProjection(
            self.dim, self.depth, self.dim_head, self.heads, self.num_queries, self.embedding_dim,
            self.output_dim, self.ff_mult, self.window, dtype, param_dtype,
        )

    def windows(self, features: jax.Array, num_frames: int) -> jax.Array:
        """(B, T_a, D) features -> (B*F, window, D), ready for `module()`."""
        w = window_audio_features(features, num_frames, self.num_pad_audio_frames, self.vectors_per_frame)
        return w.reshape(-1, *w.shape[-2:])
