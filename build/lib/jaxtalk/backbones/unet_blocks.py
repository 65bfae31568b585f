"""Building blocks of the diffusers-style UNet and VAE, channels-last (NHWC), reusable by the video UNets.

Each module's param names mirror the diffusers state-dict names (`norm1`, `conv1`, `time_emb_proj`,
`attn1/to_q`, `ff/net_0/proj`, ...), so `jaxtalk.interop` converts them with the generic key rule.

Transformer-block protocol (what `Transformer2D` instantiates, so a video UNet can swap in its own block):

    block_cls(heads=int, dim_head=int, index=int, upcast_attention=bool, norm_eps=float,
              implementation=str, query_chunk_size=int | None, dtype=..., param_dtype=..., name=str)
    block(hidden[N, L, C], context[N, Lc, D], *, num_frames: int, **block_kwargs) -> [N, L, C]

`index` is the block's static global order in the UNet (down blocks, mid block, up blocks), so a block can
pick its own entry from a per-block list in `block_kwargs` (e.g. `reference_bank[index]`). `num_frames` is F
when the rows N are B*F flattened video frames. `BasicTransformerBlock` takes no block_kwargs and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.nn import layers
from jaxtalk.nn.attention import Attention

Dtype = Any
IMAGE_AXES = ("act_batch", "act_height", "act_width", "act_channels")
TOKEN_AXES = ("act_batch", "act_length", "act_embed")


def timestep_embedding(
    timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps [N] -> [N, dim] float32 (diffusers `Timesteps`).

    freq_i = exp(-ln(max_period) * i / (half - freq_shift)); the halves are [sin, cos], or [cos, sin] when
    `flip_sin_to_cos`; an odd `dim` is padded with one zero column.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = jnp.asarray(timesteps, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2: the sinusoidal features to the time embedding `temb`."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t_emb: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.dense(self.features, name="linear_1", axes=("embed", "mlp"), **kw)(t_emb)
        return layers.dense(self.features, name="linear_2", axes=("mlp", "embed"), **kw)(nn.silu(h))


class ResnetBlock2D(nn.Module):
    """Pre-norm residual block: conv1(silu(norm1 x)) [+ time_emb_proj(silu temb)] -> conv2(silu(norm2 .)).

    `out = (shortcut(x) + h) / output_scale_factor`; the 1x1 `conv_shortcut` exists only when channels change.
    With `temb=None` there is no `time_emb_proj` (the VAE's resnets).
    """

    out_channels: int
    groups: int = 32
    groups_out: int | None = None
    eps: float = 1e-5
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(layers.group_norm(self.groups, epsilon=self.eps, name="norm1", **kw)(x))
        h = layers.conv(self.out_channels, (3, 3), padding=1, name="conv1", **kw)(h)
        if temb is not None:
            t = layers.dense(self.out_channels, name="time_emb_proj", axes=("embed", "mlp"), **kw)(nn.silu(temb))
            h = h + t[:, None, None, :]
        groups_out = self.groups if self.groups_out is None else self.groups_out
        h = nn.silu(layers.group_norm(groups_out, epsilon=self.eps, name="norm2", **kw)(h))
        h = layers.conv(self.out_channels, (3, 3), padding=1, name="conv2", **kw)(h)
        if x.shape[-1] != self.out_channels:
            x = layers.conv(self.out_channels, (1, 1), name="conv_shortcut", **kw)(x)
        out = x.astype(h.dtype) + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return layers.constrain(out, IMAGE_AXES)


class Downsample2D(nn.Module):
    """3x3 stride-2 conv. `padding=0` pads (0, 1) on height and width first (diffusers / LDM VAE)."""

    out_channels: int
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((0, 1), (0, 1)) if self.padding == 0 else ((self.padding, self.padding),) * 2
        conv = layers.conv(self.out_channels, (3, 3), strides=2, padding=pad, name="conv",
                           dtype=self.dtype, param_dtype=self.param_dtype)
        return layers.constrain(conv(x), IMAGE_AXES)


def upsample_nearest(x: jax.Array, size: Sequence[int] | None = None) -> jax.Array:
    """Nearest-neighbour resize of NHWC `x` to `size` (default 2x), as torch `F.interpolate(mode='nearest')`."""
    n, h, w, c = x.shape
    oh, ow = (2 * h, 2 * w) if size is None else (int(size[0]), int(size[1]))
    if (oh, ow) == (2 * h, 2 * w):
        return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, oh, ow, c)
    rows = (jnp.arange(oh) * h) // oh
    cols = (jnp.arange(ow) * w) // ow
    return x[:, rows][:, :, cols]


class Upsample2D(nn.Module):
    """Nearest 2x (or to `output_size`, when a skip has an odd size) then a 3x3 conv."""

    out_channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, output_size: Sequence[int] | None = None) -> jax.Array:
        x = upsample_nearest(x, output_size)
        conv = layers.conv(self.out_channels, (3, 3), padding=1, name="conv",
                           dtype=self.dtype, param_dtype=self.param_dtype)
        return layers.constrain(conv(x), IMAGE_AXES)


class GEGLU(nn.Module):
    """proj to 2*inner, split into (value, gate), value * gelu(gate) with the exact (erf) GELU."""

    inner: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.dense(2 * self.inner, name="proj", axes=("embed", "mlp"), dtype=self.dtype,
                         param_dtype=self.param_dtype)(x)
        value, gate = jnp.split(h, 2, axis=-1)
        return value * layers.gelu_exact(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward: `net.0` (GEGLU, C -> mult*C) and `net.2` (mult*C -> C); `net.1` is dropout."""

    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GEGLU(self.mult * x.shape[-1], name="net_0", **kw)(x)
        h = layers.constrain(h, ("act_batch", "act_length", "act_mlp"))
        return layers.dense(x.shape[-1], name="net_2", axes=("mlp", "embed"), **kw)(h)


class BasicTransformerBlock(nn.Module):
    """SD transformer block: self-attention, cross-attention to `context`, GEGLU feed-forward (all pre-LN).

    x += attn1(norm1 x); x += attn2(norm2 x, context); x += ff(norm3 x). The normalised hidden state that
    enters the cross-attention is sown as `intermediates/norm2_output` (what a ReferenceNet writes to its bank;
    collect it with `apply(..., mutable=['intermediates'])`, it costs nothing otherwise).
    """

    heads: int
    dim_head: int
    index: int = 0
    upcast_attention: bool = False
    norm_eps: float = 1e-5
    implementation: str = "auto"
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def attention(self, name: str, **overrides: Any) -> Attention:
        """An `Attention` with this block's head layout and settings (for subclasses adding attention layers)."""
        kw = dict(heads=self.heads, dim_head=self.dim_head, upcast=self.upcast_attention,
                  implementation=self.implementation, query_chunk_size=self.query_chunk_size,
                  dtype=self.dtype, param_dtype=self.param_dtype)
        return Attention(**{**kw, **overrides}, name=name)

    def norm(self, name: str) -> nn.LayerNorm:
        return layers.layer_norm(epsilon=self.norm_eps, name=name, dtype=self.dtype, param_dtype=self.param_dtype)

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, *, num_frames: int = 1, **block_kwargs: Any) -> jax.Array:
        if block_kwargs:
            raise TypeError(
                f"BasicTransformerBlock (block {self.index}) takes no block_kwargs, got {sorted(block_kwargs)}; "
                "pass a transformer_block class that consumes them to the UNet"
            )
        x = x + self.attention("attn1")(self.norm("norm1")(x))
        h = self.norm("norm2")(x)
        self.sow("intermediates", "norm2_output", h)
        x = x + self.attention("attn2")(h, context)
        x = x + FeedForward(name="ff", dtype=self.dtype, param_dtype=self.param_dtype)(self.norm("norm3")(x))
        return layers.constrain(x, TOKEN_AXES)


class Transformer2D(nn.Module):
    """GroupNorm -> proj_in -> transformer blocks over the H*W tokens -> proj_out, plus the input (residual).

    `proj_in` / `proj_out` are 1x1 convs (SD1.x) or Linear layers (`use_linear_projection`, SD2.x). Block k is
    `transformer_block(..., index=first_index + k)`; `block_kwargs` is forwarded to every block.
    """

    heads: int
    dim_head: int
    num_layers: int = 1
    use_linear_projection: bool = False
    upcast_attention: bool = False
    norm_num_groups: int = 32
    first_index: int = 0
    transformer_block: Callable[..., nn.Module] = BasicTransformerBlock
    implementation: str = "auto"
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array, *, num_frames: int = 1,
        block_kwargs: Mapping[str, Any] | None = None,
    ) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n, h, w, c = x.shape
        inner = self.heads * self.dim_head
        y = layers.group_norm(self.norm_num_groups, epsilon=1e-6, name="norm", **kw)(x)
        if self.use_linear_projection:
            y = layers.dense(inner, name="proj_in", axes=("embed", "mlp"), **kw)(y.reshape(n, h * w, c))
        else:
            y = layers.conv(inner, (1, 1), name="proj_in", **kw)(y).reshape(n, h * w, inner)
        y = layers.constrain(y, TOKEN_AXES)
        for k in range(self.num_layers):
            block = self.transformer_block(
                heads=self.heads, dim_head=self.dim_head, index=self.first_index + k,
                upcast_attention=self.upcast_attention, norm_eps=1e-5, implementation=self.implementation,
                query_chunk_size=self.query_chunk_size, name=f"transformer_blocks_{k}", **kw,
            )
            y = block(y, context, num_frames=num_frames, **dict(block_kwargs or {}))
        if self.use_linear_projection:
            y = layers.dense(c, name="proj_out", axes=("mlp", "embed"), **kw)(y).reshape(n, h, w, c)
        else:
            y = layers.conv(c, (1, 1), name="proj_out", **kw)(y.reshape(n, h, w, inner))
        return layers.constrain(y + x.astype(y.dtype), IMAGE_AXES)
