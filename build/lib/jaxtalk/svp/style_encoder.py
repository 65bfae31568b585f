"""StyleTalk's `StyleEncoder` (FuxiVirtualHuman/styletalk): a post-norm transformer over per-frame features.

Linear(input_dim -> d_model), the sinusoidal table added once at the encoder input, `num_encoder_layers` post-norm
layers (`x = norm1(x + MHA(x))`, `x = norm2(x + linear2(relu(linear1(x))))`) with a key-padding mask, then an
aggregation over time: self-attention pooling `w = softmax(W2(mish(W1 h)) - 1e5 * pad)`, `style = sum_t w h`
(or the masked mean, or none: the per-frame sequence, which SVP's dual-branch extractor uses).

`apply(v, x[B, T, input_dim], pad_mask[B, T] (True = padded)) -> [B, d_model]` (or [B, T, d_model] for
aggregate='none'). Attention weights use `to_q/to_k/to_v/to_out_0`; the `styletalk_style_encoder` interop kind
splits / fuses torch's `in_proj_weight`.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers
from jaxtalk.nn.attention import Attention, Implementation

Dtype = jnp.dtype
Aggregate = Literal["self_attention_pooling", "average", "none"]


def styletalk_position_table(n_position: int, d_hid: int) -> np.ndarray:
    """StyleTalk `PositionalEncoding.pos_table`: pos / 10000^(2*(j//2)/d), sin on even, cos on odd; (1, n, d)."""
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(d_hid)[None, :]
    angle = pos / np.power(10000, 2 * (j // 2) / d_hid)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table[None].astype(np.float32)


def mish(x: jax.Array) -> jax.Array:
    """x * tanh(softplus(x))."""
    return x * jnp.tanh(jax.nn.softplus(x))


class PositionTable(nn.Module):
    """Holds the (1, n_position, d) table as a param named `pos_table` and returns its first `length` rows."""

    n_position: int
    d_model: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, length: int) -> jax.Array:
        table = styletalk_position_table(self.n_position, self.d_model)
        init = layers.partitioned(lambda *_: jnp.asarray(table, self.param_dtype), (None, None, None))
        t = self.param("pos_table", init, (1, self.n_position, self.d_model))
        if length > self.n_position:
            raise ValueError(f"style encoder: {length} frames exceed pos_embed_len={self.n_position}; "
                             "crop the clip or build the encoder with a longer table")
        return t[:, :length]


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (StyleTalk `TransformerEncoderLayer.forward_post`)."""

    d_model: int
    nhead: int
    dim_feedforward: int
    dropout_rate: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool = True) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        attn = Attention(self.nhead, self.d_model // self.nhead, qkv_bias=True, implementation=self.implementation,
                         name="self_attn", **kw)(x, mask=mask)
        x = layers.layer_norm(name="norm1", **kw)(x + drop(attn))
        act = jax.nn.relu if self.activation == "relu" else layers.gelu_exact
        h = act(layers.dense(self.dim_feedforward, name="linear1", axes=("embed", "mlp"), **kw)(x))
        h = layers.dense(self.d_model, name="linear2", axes=("mlp", "embed"), **kw)(drop(h))
        x = layers.layer_norm(name="norm2", **kw)(x + drop(h))
        return layers.constrain(x, ("act_batch", "act_length", "act_embed"))


class _Encoder(nn.Module):
    """StyleTalk `TransformerEncoder` without its final norm (None for post-norm layers): `layers_{i}`."""

    d_model: int
    nhead: int
    num_layers: int
    dim_feedforward: int
    dropout_rate: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, pad_mask: jax.Array | None, deterministic: bool) -> jax.Array:
        mask = None if pad_mask is None else ~pad_mask[:, None, None, :]  # attend to real frames only
        for i in range(self.num_layers):
            h = EncoderLayer(self.d_model, self.nhead, self.dim_feedforward, self.dropout_rate, self.activation,
                             self.implementation, self.dtype, self.param_dtype, name=f"layers_{i}")(
                h, mask, deterministic)
        return h


class SelfAttentionPooling(nn.Module):
    """`W = [Linear(d, d), Mish, Linear(d, 1)]`; softmax over time with padded frames at -1e5."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, pad_mask: jax.Array | None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = h.shape[-1]
        logits = layers.dense(1, name="W_2", axes=("mlp", None), **kw)(
            mish(layers.dense(d, name="W_0", axes=("embed", "mlp"), **kw)(h)))[..., 0].astype(jnp.float32)
        if pad_mask is not None:
            logits = logits + pad_mask.astype(jnp.float32) * -100000.0
        w = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bt,btd->bd", w.astype(h.dtype), h)


class StyleEncoder(nn.Module):
    """StyleTalk `StyleEncoder`; param names mirror its state dict (see the module docstring)."""

    d_model: int = 256
    nhead: int = 8
    num_encoder_layers: int = 3
    dim_feedforward: int = 1024
    dropout: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    pos_embed_len: int = 256
    input_dim: int = 64
    aggregate_method: Aggregate = "self_attention_pooling"
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pad_mask: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"style encoder expects [B, T, {self.input_dim}] features, got {x.shape}")
        if pad_mask is not None and pad_mask.shape != x.shape[:2]:
            raise ValueError(f"pad_mask must be [B, T] = {x.shape[:2]} (True = padded frame), got {pad_mask.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.dense(self.d_model, name="increase_embed_dim", axes=("mlp", "embed"), **kw)(x.astype(self.dtype))
        h = h + PositionTable(self.pos_embed_len, self.d_model, self.param_dtype, name="pos_embed")(x.shape[1])
        h = h.astype(self.dtype)
        h = _Encoder(self.d_model, self.nhead, self.num_encoder_layers, self.dim_feedforward, self.dropout,
                     self.activation, self.implementation, name="encoder", **kw)(h, pad_mask, deterministic)
        if self.aggregate_method == "none":
            return h
        if self.aggregate_method == "self_attention_pooling":
            return SelfAttentionPooling(name="aggregate_method", **kw)(h, pad_mask)
        if pad_mask is None:
            return h.mean(axis=1)
        keep = (~pad_mask).astype(h.dtype)[..., None]
        return (h * keep).sum(axis=1) / keep.sum(axis=1)
