"""wav2vec 2.0 encoder (transformers `Wav2Vec2Model`), both the post-LN base and the stable-layer-norm variant.

Feature encoder: 1-d convolutions over the raw waveform (base: 7 layers, 512 channels, kernels 10,3,3,3,3,2,2,
strides 5,2,2,2,2,2,2 = 320x downsampling to 50 Hz), each followed by GELU; `feat_extract_norm="group"` puts a
per-channel GroupNorm after the first conv only, `"layer"` a LayerNorm after every conv. Feature projection:
LayerNorm + Linear to the model width. Positional embedding: a grouped conv (kernel 128, 16 groups, padding 64)
with weight normalisation over the kernel axis — `weight_g` and `weight_v` are kept as params and the weight is
computed in the forward pass so checkpoints round trip exactly — whose last output frame is dropped for an even
kernel, then GELU, added to the features.

Post-LN (`do_stable_layer_norm=False`, base): `encoder.layer_norm` right after adding the positions, then layers
`ln(x + attn(x))`, `final_ln(x + ff(x))`. Stable (large-lv60): layers `x + attn(ln(x))`, `x + ff(final_ln(x))`, and
`encoder.layer_norm` after the last layer.

Returned like transformers 5's `output_hidden_states`: (L+1, B, T, D) = the encoder input (after
`encoder.layer_norm` for post-LN) and every layer's output. For the stable variant the last state is the raw last
layer (transformers 5.23 behaviour); `output="last_hidden_state"` gives `last_hidden_state` (with the final
LayerNorm) instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers, transformer

Dtype = Any


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """Sizes of a wav2vec2 encoder (defaults: wav2vec2-base / base-960h)."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: Literal["group", "layer"] = "group"
    width: int = 768
    heads: int = 12
    layers: int = 12
    ffn_dim: int = 3072
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    feat_extract_activation: str = "gelu"
    masked_spec_embed: bool = True


WAV2VEC2_PRESETS: dict[str, Wav2Vec2Config] = {
    "base": Wav2Vec2Config(),
    "large-lv60": Wav2Vec2Config(conv_bias=True, feat_extract_norm="layer", width=1024, heads=16, layers=24,
                                 ffn_dim=4096, do_stable_layer_norm=True),
}

def _act(name: str):
    return transformer.activation(name, "wav2vec2")


def config_from_hf(config: Mapping[str, Any]) -> Wav2Vec2Config:
    """transformers `Wav2Vec2Config.to_dict()` -> `Wav2Vec2Config`."""
    if config.get("add_adapter"):
        raise ValueError("wav2vec2 with add_adapter=True is not supported (no released audio-driven model uses it)")
    if config.get("adapter_attn_dim") is not None:
        raise ValueError("wav2vec2 attention adapters (adapter_attn_dim, MMS) are not supported")
    d = Wav2Vec2Config()
    get = lambda key, default: config.get(key, default)
    return Wav2Vec2Config(
        conv_dim=tuple(int(x) for x in get("conv_dim", d.conv_dim)),
        conv_kernel=tuple(int(x) for x in get("conv_kernel", d.conv_kernel)),
        conv_stride=tuple(int(x) for x in get("conv_stride", d.conv_stride)),
        conv_bias=bool(get("conv_bias", d.conv_bias)), feat_extract_norm=get("feat_extract_norm", "group"),
        width=int(get("hidden_size", d.width)), heads=int(get("num_attention_heads", d.heads)),
        layers=int(get("num_hidden_layers", d.layers)), ffn_dim=int(get("intermediate_size", d.ffn_dim)),
        num_conv_pos_embeddings=int(get("num_conv_pos_embeddings", 128)),
        num_conv_pos_embedding_groups=int(get("num_conv_pos_embedding_groups", 16)),
        do_stable_layer_norm=bool(get("do_stable_layer_norm", False)),
        layer_norm_eps=float(get("layer_norm_eps", 1e-5)), hidden_act=str(get("hidden_act", "gelu")),
        feat_extract_activation=str(get("feat_extract_activation", "gelu")),
        masked_spec_embed=float(get("mask_time_prob", 0.05)) > 0 or float(get("mask_feature_prob", 0.0)) > 0,
    )


def config_from_state(state: Mapping[str, np.ndarray]) -> Wav2Vec2Config:
    """Sizes read off canonical weights. Not visible in shapes, so taken as in every released facebook model:
    heads = width / 64, the base strides for a 7-layer feature encoder, and the stable-layer-norm variant exactly
    when every conv has a LayerNorm (`feat_extract_norm="layer"`, the lv60 models)."""
    n_conv = sum(1 for k in state if k.startswith("feature_extractor.conv_layers.") and k.endswith(".conv.weight"))
    if n_conv == 0 or "feature_projection.projection.weight" not in state:
        raise ValueError("cannot infer the wav2vec2 config: feature encoder or projection weights missing; "
                         "pass transformers' Wav2Vec2Config.to_dict()")
    if n_conv != 7:
        raise ValueError(f"cannot infer the conv strides of a {n_conv}-layer wav2vec2 feature encoder; pass a config")
    convs = [state[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(n_conv)]
    width = int(state["feature_projection.projection.weight"].shape[0])
    if width % 64:
        raise ValueError(f"cannot infer the head count of a width-{width} wav2vec2; pass a config")
    layer_norm_everywhere = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    v = state["encoder.pos_conv_embed.conv.weight_v"]
    return Wav2Vec2Config(
        conv_dim=tuple(int(w.shape[0]) for w in convs), conv_kernel=tuple(int(w.shape[2]) for w in convs),
        conv_stride=Wav2Vec2Config().conv_stride, conv_bias="feature_extractor.conv_layers.0.conv.bias" in state,
        feat_extract_norm="layer" if layer_norm_everywhere else "group", width=width, heads=width // 64,
        layers=1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")),
        ffn_dim=int(state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        num_conv_pos_embeddings=int(v.shape[2]), num_conv_pos_embedding_groups=width // int(v.shape[1]),
        do_stable_layer_norm=layer_norm_everywhere, masked_spec_embed="masked_spec_embed" in state,
    )


def normalize_waveform(audio: np.ndarray, lengths: Sequence[int] | None = None) -> np.ndarray:
    """`Wav2Vec2FeatureExtractor(do_normalize=True)`: per utterance (x - mean) / sqrt(var + 1e-7), statistics over
    the first `lengths[b]` samples, padding set back to 0. Input (N,) or (B, N); float32 out."""
    x = np.asarray(audio, np.float32)
    single = x.ndim == 1
    x = x[None] if single else x
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        n = x.shape[1] if lengths is None else int(lengths[b])
        seg = x[b, :n]
        out[b, :n] = (seg - seg.mean()) / np.sqrt(seg.var() + 1e-7)
    return out[0] if single else out


def feature_lengths(num_samples: int, config: Wav2Vec2Config) -> int:
    """Frames the feature encoder makes from `num_samples` samples (no padding: floor((n - k) / s) + 1 per conv)."""
    n = num_samples
    for k, s in zip(config.conv_kernel, config.conv_stride):
        n = (n - k) // s + 1
    return n


def receptive_field(config: Wav2Vec2Config) -> int:
    """Samples needed for one output frame (400 for the base feature encoder)."""
    n = 1
    for k, s in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        n = (n - 1) * s + k
    return n


class FeatureEncoder(nn.Module):
    config: Wav2Vec2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = audio[..., None]
        act = _act(c.feat_extract_activation)
        for i, (dim, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
            x = _ConvLayer(dim, k, s, c.conv_bias, norm=_conv_norm(c.feat_extract_norm, i), name=f"conv_layers_{i}",
                           **kw)(x)
            x = act(x)
        return x


def _conv_norm(mode: str, index: int) -> str | None:
    if mode == "group":
        return "group" if index == 0 else None
    if mode == "layer":
        return "layer"
    raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {mode!r}")


class _ConvLayer(nn.Module):
    features: int
    kernel: int
    stride: int
    use_bias: bool
    norm: str | None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.conv(self.features, (self.kernel,), strides=self.stride, use_bias=self.use_bias, name="conv",
                        **kw)(x)
        if self.norm == "group":  # one group per channel: normalise each channel over time
            x = layers.group_norm(self.features, name="layer_norm", **kw)(x)
        elif self.norm == "layer":
            x = layers.layer_norm(name="layer_norm", **kw)(x)
        return x


class WeightNormConv(nn.Module):
    """Grouped 1-d conv whose weight is `g * v / ||v||`, the norm taken over (in, out) per kernel tap
    (`torch.nn.utils.weight_norm(conv, dim=2)`). Params: `weight_g` (K,), `weight_v` (K, in/groups, out), `bias`."""

    features: int
    kernel: int
    groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_per_group = x.shape[-1] // self.groups
        v = self.param("weight_v", layers.partitioned(layers.torch_default_init, ("conv_kh", "conv_in", "conv_out")),
                       (self.kernel, in_per_group, self.features), self.param_dtype)
        g = self.param("weight_g", layers.partitioned(nn.initializers.ones_init(), ("conv_kh",)), (self.kernel,),
                       self.param_dtype)
        b = self.param("bias", layers.partitioned(layers.zeros_init, ("conv_out",)), (self.features,),
                       self.param_dtype)
        v32 = v.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(v32 * v32, axis=(1, 2), keepdims=True))
        kernel = (g.astype(jnp.float32)[:, None, None] * v32 / norm).astype(self.dtype)
        pad = self.kernel // 2
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel, window_strides=(1,), padding=[(pad, pad)],
            dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups,
        )
        return y + b.astype(self.dtype)


class PositionalConvEmbedding(nn.Module):
    """conv (weight-normed, grouped) -> drop the last frame for an even kernel (SamePad) -> activation."""

    config: Wav2Vec2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        y = WeightNormConv(c.width, c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups, name="conv",
                           dtype=self.dtype, param_dtype=self.param_dtype)(x)
        if c.num_conv_pos_embeddings % 2 == 0:
            y = y[:, :-1]
        return _act(c.feat_extract_activation)(y)


class EncoderLayer(nn.Module):
    """Post-LN (`stable=False`) or pre-LN (`stable=True`) transformer layer with wav2vec2's names."""

    config: Wav2Vec2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = transformer.SelfAttention(c.heads, name="attention", **kw)
        ln = layers.layer_norm(name="layer_norm", epsilon=c.layer_norm_eps, **kw)
        ff = transformer.MLP(c.ffn_dim, c.hidden_act, "intermediate_dense", "output_dense", name="feed_forward", **kw)
        final_ln = layers.layer_norm(name="final_layer_norm", epsilon=c.layer_norm_eps, **kw)
        if c.do_stable_layer_norm:
            x = x + attn(ln(x))
            x = x + ff(final_ln(x))
        else:
            x = ln(x + attn(x))
            x = final_ln(x + ff(x))
        return layers.constrain(x, ("act_batch", "act_length", "act_embed"))


class Encoder(nn.Module):
    """Positions, the layers, and `layer_norm` (before the layers for post-LN, after them for stable).
    Returns (states list, last_hidden_state)."""

    config: Wav2Vec2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x + PositionalConvEmbedding(c, name="pos_conv_embed", **kw)(x)
        ln = layers.layer_norm(name="layer_norm", epsilon=c.layer_norm_eps, **kw)
        if not c.do_stable_layer_norm:
            x = ln(x)
        states = [x]
        for i in range(c.layers):
            x = EncoderLayer(c, name=f"layers_{i}", **kw)(x)
            states.append(x)
        return states, ln(x) if c.do_stable_layer_norm else x


class Wav2Vec2Model(nn.Module):
    """`apply(v, input_values[B, N]) -> hidden states (L+1, B, T, D)` (T = `feature_lengths(N)`, 50 Hz).

    `input_values`: 16 kHz audio, normalised by `normalize_waveform` when the checkpoint's feature extractor has
    `do_normalize=True` (base-960h, V-Express). `output="last_hidden_state"` returns (B, T, D) instead.
    """

    config: Wav2Vec2Config = Wav2Vec2Config()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_values: jax.Array,
                 output: Literal["hidden_states", "last_hidden_state"] = "hidden_states") -> jax.Array:
        c = self.config
        if input_values.ndim != 2:
            raise ValueError(f"wav2vec2 expects raw audio (batch, samples), got shape {input_values.shape}")
        if input_values.shape[1] < receptive_field(c):
            raise ValueError(f"wav2vec2 needs at least {receptive_field(c)} samples, got {input_values.shape[1]}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if c.masked_spec_embed:  # SpecAugment's mask vector: training-only, kept so checkpoints round trip
            self.param("masked_spec_embed", layers.partitioned(nn.initializers.uniform(1.0), ("embed",)),
                       (c.width,), self.param_dtype)
        features = FeatureEncoder(c, name="feature_extractor", **kw)(input_values.astype(self.dtype))
        hidden = _Projection(c, name="feature_projection", **kw)(features)
        states, last = Encoder(c, name="encoder", **kw)(hidden)
        if output == "last_hidden_state":
            return last
        if output != "hidden_states":
            raise ValueError(f"output must be 'hidden_states' or 'last_hidden_state', got {output!r}")
        return jnp.stack(states)

    def init_params(self, rng: jax.Array) -> Any:
        """Randomly initialised (boxed) variables."""
        return self.init(rng, jnp.zeros((1, receptive_field(self.config))))


class _Projection(nn.Module):
    """`feature_projection`: LayerNorm over the conv channels, then Linear to the model width."""

    config: Wav2Vec2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.layer_norm(name="layer_norm", epsilon=self.config.layer_norm_eps, **kw)(x)
        return layers.dense(self.config.width, name="projection", axes=("mlp", "embed"), **kw)(x)
