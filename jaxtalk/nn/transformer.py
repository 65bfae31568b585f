"""Transformer pieces shared by the transformers-named backbones (CLIP text and vision, wav2vec2, Whisper).

One activation table, one multi-head self-attention with transformers' parameter names (`q_proj`, `k_proj`,
`v_proj`, `out_proj`; Whisper's key projection has no bias), one two-layer MLP whose layer names are fields
(`fc1`/`fc2` in CLIP and Whisper, `intermediate_dense`/`output_dense` in wav2vec2), and CLIP's pre-LN encoder
layer, which the text and the vision tower share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers
from jaxtalk.nn.attention import Implementation, dot_product_attention

Dtype = Any


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's sigmoid approximation of GELU."""
    return x * jax.nn.sigmoid(1.702 * x)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """transformers' `gelu_new` / `gelu_pytorch_tanh` (the tanh approximation)."""
    return jax.nn.gelu(x, approximate=True)


# transformers' `ACT2FN` names -> functions, for every activation a ported checkpoint config may name.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": layers.gelu_exact,
    "quick_gelu": quick_gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": jax.nn.relu,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
}


def activation(name: str, owner: str = "transformer") -> Callable[[jax.Array], jax.Array]:
    """The activation called `name` in a transformers config; `owner` names the model in the error."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported {owner} activation {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class SelfAttention(nn.Module):
    """Multi-head self-attention with transformers' names: q_proj, k_proj, v_proj, out_proj (biased unless
    `key_bias=False`, Whisper's key). `mask` (bool, broadcastable to (B, H, Lq, Lk)) keeps the True positions."""

    heads: int
    key_bias: bool = True
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, axes=("embed", "heads"))
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, width // self.heads)
        q = layers.dense(width, name="q_proj", **kw)(x)
        k = layers.dense(width, name="k_proj", use_bias=self.key_bias, **kw)(x)
        v = layers.dense(width, name="v_proj", **kw)(x)
        o = dot_product_attention(split(q), split(k), split(v), mask=mask, implementation=self.implementation)
        o = o.reshape(*x.shape[:-1], width).astype(self.dtype)
        return layers.dense(width, name="out_proj", dtype=self.dtype, param_dtype=self.param_dtype,
                            axes=("heads", "embed"))(o)


def feed_forward(x: jax.Array, hidden: int, activation_name: str, inner_name: str = "fc1", out_name: str = "fc2",
                 *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> jax.Array:
    """`out(act(inner(x)))` back to the input width, its two layers created in the calling compact module (Whisper
    keeps fc1 / fc2 on the layer itself)."""
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    h = layers.dense(hidden, name=inner_name, axes=("embed", "mlp"), **kw)(x)
    h = layers.constrain(activation(activation_name)(h), ("act_batch", "act_length", "act_mlp"))
    return layers.dense(x.shape[-1], name=out_name, axes=("mlp", "embed"), **kw)(h)


class MLP(nn.Module):
    """`feed_forward` as a submodule; the two layer names are the checkpoint's."""

    hidden: int
    activation: str = "gelu"
    inner_name: str = "fc1"
    out_name: str = "fc2"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return feed_forward(x, self.hidden, self.activation, self.inner_name, self.out_name, dtype=self.dtype,
                            param_dtype=self.param_dtype)


class CLIPEncoderLayer(nn.Module):
    """CLIP's pre-LN block (text and vision towers): x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x))."""

    heads: int
    mlp_dim: int
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.layer_norm(name="layer_norm1", epsilon=self.layer_norm_eps, **kw)(x)
        x = x + SelfAttention(self.heads, implementation=self.implementation, name="self_attn", **kw)(h, mask)
        h = layers.layer_norm(name="layer_norm2", epsilon=self.layer_norm_eps, **kw)(x)
        x = x + MLP(self.mlp_dim, self.activation, name="mlp", **kw)(h)
        return layers.constrain(x, ("act_batch", "act_length", "act_embed"))
