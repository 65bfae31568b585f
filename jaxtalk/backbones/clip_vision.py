"""CLIP ViT image tower (Radford et al. 2021) with transformers' `CLIPVisionModelWithProjection` names.

    patches = Conv(p×p, stride p, no bias)(pixels)            (B, N, D), NHWC input
    x = [class_embedding; patches] + position_embedding       (B, N+1, D)
    x = pre_layrnorm(x)                                      (sic: transformers' spelling)
    layer: x += out_proj(attn(layer_norm1(x)));  x += fc2(quick_gelu(fc1(layer_norm2(x))))
    last_hidden_state = x;  image_embeds = visual_projection(post_layernorm(x[:, 0]))   (no bias)

`apply(v, pixel_values[B,H,W,3])` → `(last_hidden_state[B,N+1,D], image_embeds[B,P])`. Pixels are CLIP-normalised
(`preprocess`). OpenAI `clip` checkpoints (`visual.*`) convert through the `clip_vision` interop kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers, transformer
from jaxtalk.nn.attention import Implementation

Dtype = Any
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Defaults: OpenAI ViT-B/32 (the image tower paired with Style2Talker's text encoder)."""

    image_size: int = 224
    patch_size: int = 32
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    projection_dim: int = 512
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    num_channels: int = 3

    def __post_init__(self) -> None:
        transformer.activation(self.hidden_act, "CLIPVisionConfig.hidden_act")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIPVisionConfig: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPVisionConfig: image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> CLIPVisionConfig:
        """From `CLIPVisionConfig.to_dict()` (or a full `CLIPConfig` dict, whose `vision_config` is used)."""
        if "vision_config" in config:
            config = config["vision_config"]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


class _Embeddings(nn.Module):
    config: CLIPVisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        c = self.config
        p = c.patch_size
        patches = layers.conv(c.hidden_size, (p, p), strides=p, padding=0, use_bias=False, name="patch_embedding",
                              dtype=self.dtype, param_dtype=self.param_dtype)(pixels.astype(self.dtype))
        b = patches.shape[0]
        patches = patches.reshape(b, -1, c.hidden_size)
        cls = self.param("class_embedding", layers.partitioned(nn.initializers.normal(0.02), ("embed",)),
                         (c.hidden_size,), self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size)), patches], axis=1)
        pos = nn.Embed(c.num_positions, c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                       embedding_init=layers.partitioned(nn.initializers.normal(0.02), (None, "embed")),
                       name="position_embedding")
        return x + pos(jnp.arange(c.num_positions))[None]


class _VisionTransformer(nn.Module):
    config: CLIPVisionConfig
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _Embeddings(c, name="embeddings", **kw)(pixels)
        x = layers.layer_norm(name="pre_layrnorm", epsilon=c.layer_norm_eps, **kw)(x)
        x = _Encoder(c, self.implementation, name="encoder", **kw)(x)
        pooled = layers.layer_norm(name="post_layernorm", epsilon=c.layer_norm_eps, **kw)(x[:, 0])
        return x, pooled


class _Encoder(nn.Module):
    config: CLIPVisionConfig
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        for i in range(c.num_hidden_layers):
            x = transformer.CLIPEncoderLayer(c.num_attention_heads, c.intermediate_size, c.hidden_act,
                                             c.layer_norm_eps, self.implementation, self.dtype, self.param_dtype,
                                             name=f"layers_{i}")(x)
        return x


class CLIPVisionModelWithProjection(nn.Module):
    """`apply(v, pixel_values[B,H,W,3])` → `(last_hidden_state, image_embeds)` (see the module docstring)."""

    config: CLIPVisionConfig = CLIPVisionConfig()
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.config
        want = (c.image_size, c.image_size, c.num_channels)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != want:
            raise ValueError(f"CLIPVisionModelWithProjection: pixel_values must be (batch, {want[0]}, {want[1]}, "
                             f"{want[2]}) NHWC, got {pixel_values.shape}; see `preprocess`")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hidden, pooled = _VisionTransformer(c, self.implementation, name="vision_model", **kw)(pixel_values)
        embeds = layers.dense(c.projection_dim, name="visual_projection", use_bias=False, axes=("embed", None),
                              **kw)(pooled)
        return hidden, embeds


def preprocess(frames: np.ndarray | jax.Array, image_size: int = 224) -> jax.Array:
    """uint8 RGB frames (B, H, W, 3) → CLIP pixels (B, S, S, 3): bicubic resize of the short side to S, centre
    crop, scale to [0, 1], normalise with CLIP's mean / std. (jax's antialiased bicubic resize stands in for PIL's;
    the two differ by interpolation detail only.)"""
    x = jnp.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"preprocess: expected RGB frames (batch, height, width, 3), got shape {x.shape}")
    x = x.astype(jnp.float32) / (255.0 if jnp.issubdtype(jnp.asarray(frames).dtype, jnp.integer) else 1.0)
    b, h, w, _ = x.shape
    scale = image_size / min(h, w)
    nh, nw = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    x = jax.image.resize(x, (b, nh, nw, 3), method="bicubic", antialias=True)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    x = jnp.clip(x[:, top:top + image_size, left:left + image_size], 0.0, 1.0)
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
