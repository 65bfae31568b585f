"""AnimateDiff motion module ("Vanilla" temporal transformer) and the container that holds a UNet's worth of them.

`VanillaTemporalModule` follows guoyww/AnimateDiff `motion_module.py` (the copy V-Express ships is the same):
GroupNorm (eps 1e-6) -> Linear proj_in -> TemporalTransformerBlock(s) -> Linear proj_out (zero-initialised) ->
+ residual. Each block runs `num_attention_blocks` temporal self-attentions (pre-LayerNorm, the sinusoidal table
added to the normed input so it feeds Q, K and V) and a GEGLU feed-forward. Attention runs over the frame axis at
every spatial position.

Call convention (the hook the SD / SVP UNets use): `apply(v, x[B*F, H, W, C], num_frames) -> [B*F, H, W, C]`.

GroupNorm scope: AnimateDiff and V-Express normalise each frame on its own ((b f) c h w); diffusers'
`AnimateDiffTransformer3D` normalises over all frames of a clip (b c f h w). `norm_over_frames` picks diffusers'
behaviour; the weights are the same either way.

The sinusoidal table is kept as a parameter (`.../pos_encoder/pe`, shape (1, max_len, C)) so checkpoints that store
it round-trip exactly; it is constant in spirit (exclude it from the optimiser, e.g. with `optax.masked`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers
from jaxtalk.nn.attention import Implementation, dot_product_attention

Dtype = jnp.dtype


def sinusoidal_table(max_len: int, dim: int) -> np.ndarray:
    """AnimateDiff's `PositionalEncoding.pe`: (1, max_len, dim), sin on even and cos on odd channels."""
    if dim % 2:
        raise ValueError(f"sinusoidal position table needs an even channel count, got {dim}")
    position = np.arange(max_len, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float64) * (-math.log(10000.0) / dim))
    pe = np.zeros((1, max_len, dim), np.float64)
    pe[0, :, 0::2] = np.sin(position * div)
    pe[0, :, 1::2] = np.cos(position * div)
    return pe.astype(np.float32)


class PositionalEncoding(nn.Module):
    """Adds the first F rows of a (1, max_len, C) sinusoidal table to x (N, F, C)."""

    max_len: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        table = sinusoidal_table(self.max_len, dim)
        init = layers.partitioned(lambda *_: jnp.asarray(table, self.param_dtype), (None, None, None))
        pe = self.param("pe", init, (1, self.max_len, dim))
        frames = x.shape[-2]
        if frames > self.max_len:
            raise ValueError(
                f"motion module: {frames} frames exceed the temporal position table ({self.max_len} rows); "
                "use shorter context windows or a module built with a larger temporal_position_encoding_max_len"
            )
        return x + pe[:, :frames].astype(x.dtype)


class TemporalSelfAttention(nn.Module):
    """AnimateDiff `VersatileAttention` in Temporal_Self mode on tokens (N, F, C): (+PE) -> attention over F."""

    heads: int
    dim_head: int
    position_encoding: bool = True
    max_len: int = 32
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.position_encoding:
            x = PositionalEncoding(self.max_len, self.param_dtype, name="pos_encoder")(x)
        inner = self.heads * self.dim_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False, axes=("embed", "heads"))
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.dim_head)
        q = split(layers.dense(inner, name="to_q", **kw)(x))
        k = split(layers.dense(inner, name="to_k", **kw)(x))
        v = split(layers.dense(inner, name="to_v", **kw)(x))
        q = layers.constrain(q, ("act_batch", "act_frames", "act_heads", None))
        o = dot_product_attention(q, k, v, implementation=self.implementation)
        o = o.reshape(*o.shape[:-2], inner)
        return layers.dense(x.shape[-1], name="to_out_0", axes=("heads", "embed"), dtype=self.dtype,
                            param_dtype=self.param_dtype)(o)


class GEGLUFeedForward(nn.Module):
    """diffusers `FeedForward(activation_fn='geglu')`: net.0.proj (C -> 2*mult*C), h * gelu(gate), net.2 back to C."""

    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        inner = dim * self.mult
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _GEGLU(inner, name="net_0", **kw)(x)
        return layers.dense(dim, name="net_2", axes=("mlp", "embed"), **kw)(h)


class _GEGLU(nn.Module):
    inner: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hg = layers.dense(2 * self.inner, name="proj", axes=("embed", "mlp"), dtype=self.dtype,
                          param_dtype=self.param_dtype)(x)
        h, gate = jnp.split(hg, 2, axis=-1)
        h = layers.constrain(h, ("act_batch", "act_frames", "act_mlp"))
        return h * layers.gelu_exact(gate)


class TemporalTransformerBlock(nn.Module):
    """`num_attention_blocks` x (LayerNorm -> temporal self-attention, residual), then LayerNorm -> GEGLU FF."""

    heads: int
    dim_head: int
    num_attention_blocks: int = 2
    position_encoding: bool = True
    max_len: int = 32
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for k in range(self.num_attention_blocks):
            normed = layers.layer_norm(name=f"norms_{k}", **kw)(h)
            h = h + TemporalSelfAttention(
                self.heads, self.dim_head, self.position_encoding, self.max_len, self.implementation,
                name=f"attention_blocks_{k}", **kw,
            )(normed)
        return h + GEGLUFeedForward(name="ff", **kw)(layers.layer_norm(name="ff_norm", **kw)(h))


class TemporalTransformer3D(nn.Module):
    """AnimateDiff `TemporalTransformer3DModel` on (B*F, H, W, C) with `num_frames` frames per clip."""

    in_channels: int
    heads: int = 8
    num_transformer_block: int = 1
    num_attention_blocks: int = 2
    position_encoding: bool = True
    max_len: int = 32
    attention_dim_div: int = 1
    norm_num_groups: int = 32
    norm_over_frames: bool = False
    zero_initialize: bool = True
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
        bf, hh, ww, c = x.shape
        if c != self.in_channels:
            raise ValueError(f"motion module built for {self.in_channels} channels got input {x.shape}")
        if bf % num_frames:
            raise ValueError(f"motion module: leading dim {bf} is not batch x num_frames with num_frames={num_frames}")
        b = bf // num_frames
        dim_head = self.in_channels // self.heads // self.attention_dim_div
        inner = self.heads * dim_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        norm = layers.group_norm(self.norm_num_groups, epsilon=1e-6, name="norm", **kw)
        if self.norm_over_frames:  # diffusers: statistics over the whole clip
            h = norm(x.reshape(b, num_frames * hh, ww, c)).reshape(bf, hh, ww, c)
        else:  # AnimateDiff / V-Express: statistics per frame
            h = norm(x)
        # (B*F, H, W, C) -> (B*H*W, F, C): every spatial position is one temporal sequence.
        h = h.reshape(b, num_frames, hh * ww, c).transpose(0, 2, 1, 3).reshape(b * hh * ww, num_frames, c)
        h = layers.constrain(h, ("act_batch", "act_frames", "act_embed"))
        h = layers.dense(inner, name="proj_in", axes=("embed", "mlp"), **kw)(h)
        for i in range(self.num_transformer_block):
            h = TemporalTransformerBlock(
                self.heads, dim_head, self.num_attention_blocks, self.position_encoding, self.max_len,
                self.implementation, name=f"transformer_blocks_{i}", **kw,
            )(h)
        out_init = layers.zeros_init if self.zero_initialize else layers.torch_default_init
        h = layers.dense(c, name="proj_out", axes=("mlp", "embed"), kernel_init=out_init, **kw)(h)
        h = h.reshape(b, hh * ww, num_frames, c).transpose(0, 2, 1, 3).reshape(bf, hh, ww, c)
        return (h + x).astype(self.dtype)


class VanillaTemporalModule(nn.Module):
    """AnimateDiff `VanillaTemporalModule`: `apply(v, x[B*F, H, W, C], num_frames) -> same shape`.

    Field names follow the AnimateDiff / V-Express `motion_module_kwargs` (`num_attention_heads`,
    `num_transformer_block`, `temporal_position_encoding`, `temporal_position_encoding_max_len`,
    `temporal_attention_dim_div`, `zero_initialize`); `num_attention_blocks` is len(attention_block_types)
    (Temporal_Self only). `in_channels=None` takes the width from the input, so
    `functools.partial(VanillaTemporalModule, ...)` serves as the SD UNet's `temporal_module` hook at every level.
    """

    in_channels: int | None = None
    num_attention_heads: int = 8
    num_transformer_block: int = 1
    num_attention_blocks: int = 2
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 32
    temporal_attention_dim_div: int = 1
    norm_num_groups: int = 32
    norm_over_frames: bool = False
    zero_initialize: bool = True
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(
                f"motion module expects frames stacked as (B*F, H, W, C), got shape {x.shape}; "
                "reshape video (B, F, H, W, C) with x.reshape(B * F, H, W, C)"
            )
        return TemporalTransformer3D(
            x.shape[-1] if self.in_channels is None else self.in_channels, self.num_attention_heads, self.num_transformer_block, self.num_attention_blocks,
            self.temporal_position_encoding, self.temporal_position_encoding_max_len,
            self.temporal_attention_dim_div, self.norm_num_groups, self.norm_over_frames, self.zero_initialize,
            self.implementation, self.dtype, self.param_dtype, name="temporal_transformer",
        )(x, num_frames)


def _per_block(value: int | tuple[int, ...], n: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{what}: expected one value per UNet block ({n}), got {value}")
    return value


class _BlockModules(nn.Module):
    """The motion modules of one UNet block: `motion_modules_{j}`."""

    specs: tuple[tuple[tuple[str, object], ...], ...]  # hashable (name, value) items per module

    def setup(self):
        self.motion_modules = [VanillaTemporalModule(**dict(s)) for s in self.specs]

    def __call__(self, x: jax.Array, num_frames: int, index: int) -> jax.Array:
        return self.motion_modules[index](x, num_frames)


class MotionModules(nn.Module):
    """Every motion module of an AnimateDiff / V-Express UNet, as one standalone importable tree.

    Params: `{down_blocks_i: {motion_modules_j: ...}, mid_block: {motion_modules_0: ...}, up_blocks_i: ...}` —
    the same subtrees a motion-enabled UNet holds at those paths, so an imported checkpoint grafts in directly.
    `down_layers[i]` modules in down block i, `up_layers[i]` in up block i (channels reversed), `mid_layers` in the
    mid block (0 = none). `MotionModules.for_unet` gives the AnimateDiff layout (up blocks have one more).
    `apply(v, x[B*F,H,W,C], num_frames, block='down_blocks_0', index=0)` runs one module.
    """

    block_out_channels: tuple[int, ...]
    down_layers: tuple[int, ...]
    up_layers: tuple[int, ...]
    mid_layers: int = 1
    num_attention_heads: int | tuple[int, ...] = 8
    num_transformer_block: int = 1
    num_attention_blocks: int = 2
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 32
    temporal_attention_dim_div: int = 1
    norm_num_groups: int = 32
    norm_over_frames: bool = False
    zero_initialize: bool = True
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @classmethod
    def for_unet(cls, block_out_channels, layers_per_block: int = 2, mid_block: bool = True, **kw) -> MotionModules:
        n = len(block_out_channels)
        down = _per_block(layers_per_block, n, "layers_per_block")
        return cls(tuple(block_out_channels), down, tuple(d + 1 for d in reversed(down)), int(mid_block), **kw)

    def _spec(self, channels: int, heads: int) -> dict:
        return dict(
            in_channels=channels, num_attention_heads=heads, num_transformer_block=self.num_transformer_block,
            num_attention_blocks=self.num_attention_blocks, temporal_position_encoding=self.temporal_position_encoding,
            temporal_position_encoding_max_len=self.temporal_position_encoding_max_len,
            temporal_attention_dim_div=self.temporal_attention_dim_div, norm_num_groups=self.norm_num_groups,
            norm_over_frames=self.norm_over_frames, zero_initialize=self.zero_initialize,
            implementation=self.implementation, dtype=self.dtype, param_dtype=self.param_dtype,
        )

    def _layout(self) -> list[tuple[str, int, int, int]]:
        """(block name, channels, heads, module count) for every block with modules."""
        n = len(self.block_out_channels)
        heads = _per_block(self.num_attention_heads, n, "num_attention_heads")
        down = _per_block(self.down_layers, n, "down_layers")
        up = _per_block(self.up_layers, n, "up_layers")
        out = [(f"down_blocks_{i}", self.block_out_channels[i], heads[i], down[i]) for i in range(n)]
        if self.mid_layers:
            out.append(("mid_block", self.block_out_channels[-1], heads[-1], self.mid_layers))
        rc, rh = self.block_out_channels[::-1], heads[::-1]
        out += [(f"up_blocks_{i}", rc[i], rh[i], up[i]) for i in range(n)]
        return out

    def setup(self):
        blocks = {name: _BlockModules(tuple(tuple(self._spec(c, h).items()) for _ in range(count)), name=name)
                  for name, c, h, count in self._layout() if count}
        self.blocks = blocks

    def __call__(self, x: jax.Array, num_frames: int, block: str, index: int) -> jax.Array:
        if block not in self.blocks:
            raise ValueError(f"no motion modules in block {block!r}; blocks with modules: {sorted(self.blocks)}")
        return self.blocks[block](x, num_frames, index)

    def init_all(self) -> None:
        """Touch every module once (use as `init(rng, method=MotionModules.init_all)`)."""
        for name, c, _, count in self._layout():
            for j in range(count):
                self.blocks[name](jnp.zeros((1, 1, 1, c), self.dtype), 1, j)


def add_position_tables(state: Mapping[str, np.ndarray], max_len: int) -> dict[str, np.ndarray]:
    """Add the sinusoidal `pos_encoder.pe` buffers to an AnimateDiff state dict saved without them.

    AnimateDiff HEAD registers `pe` as a non-persistent buffer, so checkpoints saved from it lack the tables the
    strict converter expects; they are a fixed function of (max_len, channels), so they can be recreated.
    """
    out = dict(state)
    for key, value in state.items():
        suffix = ".to_q.weight"
        if ".attention_blocks." in key and key.endswith(suffix):
            pe_key = key[: -len(suffix)] + ".pos_encoder.pe"
            out.setdefault(pe_key, sinusoidal_table(max_len, value.shape[1]))
    return out
