"""CLIP text transformer (OpenAI CLIP / transformers `CLIPTextModel[WithProjection]`).

Token + learned position embeddings, `layers` pre-LN blocks (causal self-attention, MLP with quick_gelu or gelu),
a final LayerNorm, and a pooled vector taken at the end-of-text token, optionally projected (`text_projection`,
no bias). Flax names mirror the transformers state dict: `text_model/embeddings/token_embedding`,
`text_model/encoder/layers_{i}/self_attn/q_proj`, ..., `text_model/final_layer_norm`, `text_projection`.

Pooling follows transformers' rule for the config in use: `pooling="argmax"` takes the position of the largest id
(OpenAI's `encode_text`, and transformers when the config still has the legacy `eos_token_id == 2`), `pooling="eos"`
the first position holding `eos_token_id` (transformers with a fixed config). Both agree on tokenizer output, where
the end token 49407 is the largest id and its first occurrence ends the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers, transformer

Dtype = Any
Pooling = Literal["argmax", "eos"]


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Sizes of a CLIP text tower (defaults: ViT-B/32)."""

    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_dim: int = 2048
    max_length: int = 77
    projection_dim: int | None = 512
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pooling: Pooling = "argmax"
    eos_token_id: int = 49407


CLIP_TEXT_PRESETS: dict[str, CLIPTextConfig] = {
    "ViT-B/32": CLIPTextConfig(),
    "ViT-L/14": CLIPTextConfig(width=768, heads=12, layers=12, mlp_dim=3072, projection_dim=768),
}

def config_from_hf(config: Mapping[str, Any], *, has_projection: bool) -> CLIPTextConfig:
    """A transformers `CLIPTextConfig.to_dict()` (or a full `CLIPConfig.to_dict()`) as a `CLIPTextConfig`."""
    projection_dim = config.get("projection_dim")
    if "text_config" in config:
        config = {**config["text_config"]}
        projection_dim = projection_dim if projection_dim is not None else config.get("projection_dim")
    required = ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                "max_position_embeddings")
    absent = [k for k in required if k not in config]
    if absent:
        raise ValueError(f"clip_text config is missing {absent}; pass transformers' CLIPTextConfig.to_dict()")
    eos = config.get("eos_token_id", 49407)
    return CLIPTextConfig(
        vocab_size=int(config["vocab_size"]), width=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]), layers=int(config["num_hidden_layers"]),
        mlp_dim=int(config["intermediate_size"]), max_length=int(config["max_position_embeddings"]),
        projection_dim=int(projection_dim if projection_dim is not None else 512) if has_projection else None,
        activation=str(config.get("hidden_act", "quick_gelu")),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
        pooling="argmax" if eos == 2 else "eos", eos_token_id=int(eos if eos is not None else 49407),
    )


def config_from_state(state: Mapping[str, np.ndarray]) -> CLIPTextConfig:
    """Sizes read off canonical (transformers-named) weights; heads = width / 64 and quick_gelu, as every OpenAI
    CLIP text tower; pooling at the largest id (OpenAI's rule)."""
    token = state.get("text_model.embeddings.token_embedding.weight")
    pos = state.get("text_model.embeddings.position_embedding.weight")
    fc1 = state.get("text_model.encoder.layers.0.mlp.fc1.weight")
    if token is None or pos is None or fc1 is None:
        raise ValueError("cannot infer the clip_text config: token / position embedding or layer 0 missing; "
                         "pass transformers' CLIPTextConfig.to_dict() as config")
    n_layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers."))
    width = int(token.shape[1])
    if width % 64:
        raise ValueError(f"cannot infer the head count of a width-{width} CLIP text tower; pass a config")
    proj = state.get("text_projection.weight")
    return CLIPTextConfig(
        vocab_size=int(token.shape[0]), width=width, heads=width // 64, layers=n_layers, mlp_dim=int(fc1.shape[0]),
        max_length=int(pos.shape[0]), projection_dim=None if proj is None else int(proj.shape[0]),
    )


CLIPEncoderLayer = transformer.CLIPEncoderLayer


class CLIPTextEmbeddings(nn.Module):
    vocab_size: int
    width: int
    max_length: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        token = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                         embedding_init=layers.partitioned(init, ("vocab", "embed")), name="token_embedding")
        position = nn.Embed(self.max_length, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                            embedding_init=layers.partitioned(init, (None, "embed")), name="position_embedding")
        return token(input_ids) + position(jnp.arange(input_ids.shape[-1]))[None]


class CLIPEncoder(nn.Module):
    """The stack of `layers_{i}` blocks."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        c = self.config
        for i in range(c.layers):
            x = CLIPEncoderLayer(c.heads, c.mlp_dim, c.activation, c.layer_norm_eps, name=f"layers_{i}",
                                 dtype=self.dtype, param_dtype=self.param_dtype)(x, mask)
        return x


class CLIPTextTransformer(nn.Module):
    """Embeddings, causal pre-LN encoder, final LayerNorm; returns (last_hidden_state, pooled)."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        length = input_ids.shape[-1]
        x = CLIPTextEmbeddings(c.vocab_size, c.width, c.max_length, name="embeddings", **kw)(input_ids)
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask.astype(bool)[:, None, None, :]
        x = CLIPEncoder(c, name="encoder", **kw)(x, mask)
        x = layers.layer_norm(name="final_layer_norm", epsilon=c.layer_norm_eps, **kw)(x)
        if c.pooling == "argmax":
            index = jnp.argmax(input_ids, axis=-1)
        else:
            index = jnp.argmax((input_ids == c.eos_token_id).astype(jnp.int32), axis=-1)
        pooled = jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]
        return x, pooled


class CLIPTextEncoder(nn.Module):
    """`apply(v, input_ids[B, L], attention_mask=None) -> (last_hidden_state[B, L, D], pooled[B, P or D])`.

    `pooled` is projected by `text_projection` when `config.projection_dim` is set (CLIPTextModelWithProjection's
    `text_embeds`, OpenAI's `encode_text`), else it is transformers' `pooler_output`. `attention_mask` (B, L), 1 =
    keep, is combined with the causal mask as in transformers (OpenAI CLIP uses none).
    """

    config: CLIPTextConfig = CLIPTextConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        c = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"clip_text expects input_ids of shape (batch, length), got {input_ids.shape}")
        if input_ids.shape[1] > c.max_length:
            raise ValueError(f"clip_text: sequence length {input_ids.shape[1]} exceeds the {c.max_length} "
                             "position embeddings; truncate the tokens (the tokenizer does so by default)")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hidden, pooled = CLIPTextTransformer(c, name="text_model", **kw)(input_ids, attention_mask)
        if c.projection_dim is not None:
            pooled = layers.dense(c.projection_dim, name="text_projection", use_bias=False,
                                  axes=("embed", "mlp"), **kw)(pooled)
        return hidden, pooled

    def init_params(self, rng: jax.Array) -> Any:
        """Randomly initialised (boxed) variables."""
        return self.init(rng, jnp.zeros((1, self.config.max_length), jnp.int32))
