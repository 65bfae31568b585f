"""diffusers `UNet2DConditionModel` as SD 1.x / 2.x configure it, channels-last, with composition hooks.

    unet = UNet2DConditionModel(UNetConfig.from_diffusers(config_dict))
    eps = unet.apply({'params': p}, sample[N,H,W,C], timesteps, encoder_hidden_states[N,L,D])

Hooks for video UNets built from these pieces (V-Express / AnimateDiff style), all static module fields:
- `transformer_block`: the class every `Transformer2D` instantiates (protocol in `unet_blocks`); a video block
  adds its own attention layers and reads `block_kwargs` (forwarded as keywords to every block).
- `temporal_module`: when set, `temporal_module(dtype=, param_dtype=, name=f"motion_modules_{j}")` is created
  after each (resnet, attention) pair of a down / up block (after each resnet in attention-free blocks) at the
  resolutions in `temporal_resolutions` (down block i has resolution 2**i, up block i has 2**(n-1-i)), and in
  the mid block between the attention and the second resnet when `temporal_mid_block`; it is called as
  `temporal_module(hidden[B*F, H, W, C], num_frames)`. Configure other settings with `functools.partial`.
- `__call__(..., added_features=None, block_kwargs=None, num_frames=1)`: `added_features` is added to
  `conv_in`'s output (e.g. keypoint-guider features); rows are B*F frames when `num_frames > 1`.
- `remat`: a `jax.checkpoint` policy (`REMAT_POLICIES`) applied to every resnet, transformer and temporal module
  of the down / mid / up blocks, so the backward pass keeps only each block's inputs (plus what the policy saves)
  and recomputes the rest: `none` (store everything), `full` (save nothing inside a block), `dots` (keep matmul /
  conv outputs), `dots_no_batch` (keep only matmuls without batch dimensions: the weight products). The forward
  values and gradients are unchanged. A block that hands values out through a `BlockOutputs` object in
  `block_kwargs` (the ReferenceNet's bank) gets a fresh one inside the checkpoint whose entries are returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.backbones.unet_blocks import (
    IMAGE_AXES,
    BasicTransformerBlock,
    Downsample2D,
    ResnetBlock2D,
    TimestepEmbedding,
    Transformer2D,
    Upsample2D,
    timestep_embedding,
)
from jaxtalk.config import ConfigError, field, from_dict, to_dict
from jaxtalk.nn import layers

Dtype = Any
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

# diffusers keys that carry nothing for the supported architecture: `sample_size` (a default resolution only),
# `dropout` when 0, and settings diffusers passes only to block types this port does not build
# (`resnet_out_scale_factor`, `resnet_skip_time_act`, `cross_attention_norm`, `mid_block_only_cross_attention`,
# `addition_embed_type_num_heads`, `projection_class_embeddings_input_dim`, `class_embeddings_concat` without a
# class embedding). Keys starting with "_" are diffusers metadata.
_IGNORED = frozenset({
    "sample_size", "resnet_out_scale_factor", "resnet_skip_time_act", "cross_attention_norm",
    "mid_block_only_cross_attention", "addition_embed_type_num_heads", "projection_class_embeddings_input_dim",
    "class_embeddings_concat",
})
# Keys whose non-default values select architectures this port does not implement.
_REQUIRED_DEFAULTS = {
    "class_embed_type": None, "num_class_embeds": None, "addition_embed_type": None,
    "addition_time_embed_dim": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None, "timestep_post_act": None, "time_embedding_act_fn": None,
    "time_embedding_type": "positional", "resnet_time_scale_shift": "default", "attention_type": "default",
    "dual_cross_attention": False, "only_cross_attention": False, "act_fn": "silu", "dropout": 0.0,
    "reverse_transformer_layers_per_block": None,
}


def _per_block(value: Any, n: int, name: str) -> tuple:
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ConfigError(f"UNetConfig.{name}: {len(value)} entries for {n} blocks")
        return tuple(value)
    return (value,) * n


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The supported subset of a diffusers `UNet2DConditionModel` config (defaults are diffusers').

    `num_attention_heads` is the head COUNT per block (diffusers' `attention_head_dim` when its
    `num_attention_heads` is None). Per-block settings may be one value or one per down block; they are
    normalised to tuples. `use_conv_norm_out=False` drops `conv_norm_out` and its SiLU (V-Express ReferenceNet).
    """

    in_channels: int = field(4, min=1)
    out_channels: int = field(4, min=1)
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    mid_block_type: str = field("UNetMidBlock2DCrossAttn", choices=("UNetMidBlock2DCrossAttn",))
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int | tuple[int, ...] = 2
    downsample_padding: int = field(1, min=0)
    mid_block_scale_factor: float = 1.0
    norm_num_groups: int = field(32, min=1)
    norm_eps: float = field(1e-5, min=0.0)
    cross_attention_dim: int = field(1280, min=1)
    transformer_layers_per_block: int | tuple[int, ...] = 1
    num_attention_heads: int | tuple[int, ...] = 8
    use_linear_projection: bool = False
    upcast_attention: bool = False
    time_embedding_dim: int | None = None
    conv_in_kernel: int = field(3, min=1)
    conv_out_kernel: int = field(3, min=1)
    use_conv_norm_out: bool = True

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        for name in ("layers_per_block", "transformer_layers_per_block", "num_attention_heads"):
            object.__setattr__(self, name, _per_block(getattr(self, name), n, name))
        for name in ("down_block_types", "up_block_types", "block_out_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        n = len(self.block_out_channels)
        if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ConfigError(
                f"UNetConfig: block_out_channels ({n}), down_block_types ({len(self.down_block_types)}) and "
                f"up_block_types ({len(self.up_block_types)}) must have the same non-zero length"
            )
        for name, allowed in (("down_block_types", DOWN_TYPES), ("up_block_types", UP_TYPES)):
            bad = [t for t in getattr(self, name) if t not in allowed]
            if bad:
                raise ConfigError(f"UNetConfig.{name}: {bad[0]!r} is not supported; supported: {list(allowed)}")
        if self.mid_block_type != "UNetMidBlock2DCrossAttn":
            raise ConfigError(f"UNetConfig.mid_block_type: {self.mid_block_type!r} is not supported; "
                              "supported: ['UNetMidBlock2DCrossAttn']")
        for i, c in enumerate(self.block_out_channels):
            if c % self.norm_num_groups:
                raise ConfigError(f"UNetConfig: block_out_channels[{i}]={c} is not divisible by "
                                  f"norm_num_groups={self.norm_num_groups}")
            if c % self.num_attention_heads[i]:
                raise ConfigError(f"UNetConfig: block_out_channels[{i}]={c} is not divisible by "
                                  f"num_attention_heads[{i}]={self.num_attention_heads[i]}")
        if min(self.layers_per_block) < 1 or min(self.transformer_layers_per_block) < 1:
            raise ConfigError("UNetConfig: layers_per_block and transformer_layers_per_block must be >= 1")
        if self.conv_in_kernel % 2 == 0 or self.conv_out_kernel % 2 == 0:
            raise ConfigError("UNetConfig: conv_in_kernel / conv_out_kernel must be odd")

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
        """From a diffusers `model.config` / config.json dict: unsupported settings are errors, unknown keys too.

        The jaxtalk key `use_conv_norm_out` may be present (as written by `to_diffusers`).
        """
        cfg = {k: v for k, v in dict(config).items() if not k.startswith("_") and k not in _IGNORED}
        for key, default in _REQUIRED_DEFAULTS.items():
            value = cfg.pop(key, default)
            if value != default and not (key == "dropout" and value == 0):
                raise ConfigError(f"UNet config {key}={value!r} is not supported (only {default!r}); "
                                  "this port covers the SD 1.x / 2.x UNet")
        if cfg.get("norm_num_groups", 32) is None:
            raise ConfigError("UNet config norm_num_groups=None is not supported (GroupNorm is required)")
        heads = cfg.pop("num_attention_heads", None)
        head_alias = cfg.pop("attention_head_dim", 8)
        cfg["num_attention_heads"] = head_alias if heads is None else heads
        cross = cfg.get("cross_attention_dim")
        if isinstance(cross, list | tuple):
            if len(set(cross)) != 1:
                raise ConfigError(f"UNet config cross_attention_dim={cross!r}: per-block dims are not supported")
            cfg["cross_attention_dim"] = cross[0]
        tl = cfg.get("transformer_layers_per_block")
        if isinstance(tl, list | tuple) and any(isinstance(t, list | tuple) for t in tl):
            raise ConfigError("UNet config transformer_layers_per_block: nested per-layer lists are not supported")
        return from_dict(cls, cfg, "unet")

    def to_diffusers(self) -> dict[str, Any]:
        """A config dict `diffusers.UNet2DConditionModel(**d)` accepts (plus `use_conv_norm_out` when False)."""
        d = to_dict(self)
        d["attention_head_dim"] = d.pop("num_attention_heads")
        d["freq_shift"] = int(d["freq_shift"]) if float(d["freq_shift"]).is_integer() else d["freq_shift"]
        if d.pop("use_conv_norm_out"):
            return d
        return {**d, "use_conv_norm_out": False}


# The runwayml/stable-diffusion-v1-5 UNet (686 tensors, 859,520,964 parameters).
SD15_UNET_CONFIG: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "attention_head_dim": 8,
    "cross_attention_dim": 768, "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu", "center_input_sample": False,
    "sample_size": 64,
}


def _rows(x: jax.Array, n: int, num_frames: int, what: str) -> jax.Array:
    """Per-row values: `x` has n rows, or n / num_frames rows (one per video, repeated over its frames)."""
    if x.shape[0] == n:
        return x
    if num_frames > 1 and x.shape[0] * num_frames == n:
        return jnp.repeat(x, num_frames, axis=0)
    raise ValueError(f"{what} has {x.shape[0]} rows; expected {n} (one per sample row)"
                     + (f" or {n // num_frames} (one per video of {num_frames} frames)" if num_frames > 1 else ""))


def checkpoint_policy(name: str) -> Callable[..., bool] | None:
    """The `jax.checkpoint` policy of a `remat` setting (None for `none`: no rematerialisation)."""
    policies = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                "dots": jax.checkpoint_policies.dots_saveable,
                "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
    if name not in policies:
        raise ConfigError(f"remat: {name!r} is not a rematerialisation policy; choose from {list(REMAT_POLICIES)}")
    return policies[name]


class BlockOutputs:
    """Values that blocks hand out through `block_kwargs` by side effect (`put(index, value)`); under `remat` each
    checkpointed block writes into a `local()` copy whose entries come out as outputs and are `merge`d back, so
    no traced value escapes the checkpoint."""

    def __init__(self) -> None:
        self.entries: dict[int, jax.Array] = {}

    def put(self, index: int, value: jax.Array) -> None:
        if index in self.entries:
            raise ValueError(f"block output {index} written twice")
        self.entries[index] = value

    def local(self) -> BlockOutputs:
        return BlockOutputs()

    def merge(self, entries: Mapping[int, jax.Array]) -> None:
        for index, value in entries.items():
            self.put(index, value)


def checkpointed(module: nn.Module, remat: str, *args: Any, **kwargs: Any) -> Any:
    """`module(*args, **kwargs)`, under `jax.checkpoint` with the `remat` policy unless it is `none`.

    Array leaves of the arguments are the checkpoint's inputs; every other leaf (ints such as `num_frames`,
    Python floats, None) stays static, and `BlockOutputs` are swapped for local copies (see `BlockOutputs`).
    """
    if remat == "none":
        return module(*args, **kwargs)
    policy = checkpoint_policy(remat)
    leaves, treedef = jax.tree.flatten((args, kwargs), is_leaf=lambda x: isinstance(x, BlockOutputs))
    dynamic = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array)]
    outputs = [i for i, x in enumerate(leaves) if isinstance(x, BlockOutputs)]

    def run(mdl: nn.Module, values: list[jax.Array]) -> tuple[Any, dict[int, dict[int, jax.Array]]]:
        full = list(leaves)
        for i, v in zip(dynamic, values):
            full[i] = v
        local = {i: leaves[i].local() for i in outputs}
        for i, c in local.items():
            full[i] = c
        a, kw = jax.tree.unflatten(treedef, full)
        return mdl(*a, **kw), {i: dict(c.entries) for i, c in local.items()}

    y, written = nn.remat(run, policy=policy)(module, [leaves[i] for i in dynamic])
    for i, entries in written.items():
        leaves[i].merge(entries)
    return y


class _Stage(nn.Module):
    """Shared fields of the down / mid / up stages (hooks and attention settings from the UNet)."""

    config: UNetConfig
    block: int = 0
    first_index: int = 0
    temporal: bool = False
    transformer_block: Callable[..., nn.Module] = BasicTransformerBlock
    temporal_module: Callable[..., nn.Module] | None = None
    implementation: str = "auto"
    query_chunk_size: int | None = None
    remat: RematPolicy = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _kw(self) -> dict[str, Any]:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def resnet(self, name: str, channels: int, scale: float = 1.0) -> ResnetBlock2D:
        cfg = self.config
        return ResnetBlock2D(channels, groups=cfg.norm_num_groups, eps=cfg.norm_eps, output_scale_factor=scale,
                             name=name, **self._kw())

    def transformer(self, name: str, channels: int, heads: int, num_layers: int, first_index: int) -> Transformer2D:
        cfg = self.config
        return Transformer2D(
            heads=heads, dim_head=channels // heads, num_layers=num_layers,
            use_linear_projection=cfg.use_linear_projection, upcast_attention=cfg.upcast_attention,
            norm_num_groups=cfg.norm_num_groups, first_index=first_index, transformer_block=self.transformer_block,
            implementation=self.implementation, query_chunk_size=self.query_chunk_size, name=name, **self._kw(),
        )

    def motion(self, j: int, h: jax.Array, num_frames: int) -> jax.Array:
        if not self.temporal or self.temporal_module is None:
            return h
        return checkpointed(self.temporal_module(name=f"motion_modules_{j}", **self._kw()), self.remat, h, num_frames)


class DownStage(_Stage):
    """CrossAttnDownBlock2D / DownBlock2D: returns (hidden, skips)."""

    @nn.compact
    def __call__(self, h, temb, context, *, num_frames, block_kwargs):
        cfg, i = self.config, self.block
        channels, attn = cfg.block_out_channels[i], cfg.down_block_types[i] == "CrossAttnDownBlock2D"
        depth = cfg.transformer_layers_per_block[i]
        skips = []
        for j in range(cfg.layers_per_block[i]):
            h = checkpointed(self.resnet(f"resnets_{j}", channels), self.remat, h, temb)
            if attn:
                h = checkpointed(self.transformer(f"attentions_{j}", channels, cfg.num_attention_heads[i], depth,
                                                  self.first_index + j * depth), self.remat, h, context,
                                 num_frames=num_frames, block_kwargs=block_kwargs)
            h = self.motion(j, h, num_frames)
            skips.append(h)
        if i < len(cfg.block_out_channels) - 1:
            h = Downsample2D(channels, padding=cfg.downsample_padding, name="downsamplers_0", **self._kw())(h)
            skips.append(h)
        return h, skips


class MidStage(_Stage):
    """UNetMidBlock2DCrossAttn: resnet, attention, [temporal], resnet (resnets scaled by mid_block_scale_factor)."""

    @nn.compact
    def __call__(self, h, temb, context, *, num_frames, block_kwargs):
        cfg = self.config
        channels, scale = cfg.block_out_channels[-1], cfg.mid_block_scale_factor
        h = checkpointed(self.resnet("resnets_0", channels, scale), self.remat, h, temb)
        h = checkpointed(self.transformer("attentions_0", channels, cfg.num_attention_heads[-1],
                                          cfg.transformer_layers_per_block[-1], self.first_index), self.remat,
                         h, context, num_frames=num_frames, block_kwargs=block_kwargs)
        h = self.motion(0, h, num_frames)
        return checkpointed(self.resnet("resnets_1", channels, scale), self.remat, h, temb)


class UpStage(_Stage):
    """CrossAttnUpBlock2D / UpBlock2D (block i counts from the bottom): consumes skips from the end."""

    @nn.compact
    def __call__(self, h, temb, context, skips, *, num_frames, block_kwargs, output_size=None):
        cfg, i = self.config, self.block
        r = len(cfg.block_out_channels) - 1 - i  # the matching down block
        channels, attn = cfg.block_out_channels[r], cfg.up_block_types[i] == "CrossAttnUpBlock2D"
        depth = cfg.transformer_layers_per_block[r]
        for j in range(cfg.layers_per_block[r] + 1):
            h = jnp.concatenate([h, skips[-1 - j].astype(h.dtype)], axis=-1)
            h = checkpointed(self.resnet(f"resnets_{j}", channels), self.remat, h, temb)
            if attn:
                h = checkpointed(self.transformer(f"attentions_{j}", channels, cfg.num_attention_heads[r], depth,
                                                  self.first_index + j * depth), self.remat, h, context,
                                 num_frames=num_frames, block_kwargs=block_kwargs)
            h = self.motion(j, h, num_frames)
        if i < len(cfg.block_out_channels) - 1:
            h = Upsample2D(channels, name="upsamplers_0", **self._kw())(h, output_size)
        return h


def _block_counts(cfg: UNetConfig) -> tuple[list[int], int, list[int]]:
    """Number of transformer blocks in each down block, the mid block and each up block."""
    n = len(cfg.block_out_channels)
    down = [cfg.layers_per_block[i] * cfg.transformer_layers_per_block[i]
            if cfg.down_block_types[i] == "CrossAttnDownBlock2D" else 0 for i in range(n)]
    up = [(cfg.layers_per_block[n - 1 - i] + 1) * cfg.transformer_layers_per_block[n - 1 - i]
          if cfg.up_block_types[i] == "CrossAttnUpBlock2D" else 0 for i in range(n)]
    return down, cfg.transformer_layers_per_block[-1], up


def num_transformer_blocks(cfg: UNetConfig) -> int:
    """How many transformer blocks the UNet has (the range of their `index`); 16 for SD1.5."""
    down, mid, up = _block_counts(cfg)
    return sum(down) + mid + sum(up)


class UNet2DConditionModel(nn.Module):
    """The SD UNet: `apply(v, sample[N,H,W,C], timesteps, encoder_hidden_states[N,L,D]) -> [N,H,W,C_out]`.

    `timesteps`: a scalar, [N], or [N / num_frames] (per video); integers or floats. The output is in `dtype`.
    See the module docstring for the composition hooks.
    """

    config: UNetConfig
    transformer_block: Callable[..., nn.Module] = BasicTransformerBlock
    temporal_module: Callable[..., nn.Module] | None = None
    temporal_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    temporal_mid_block: bool = True
    attention_implementation: str = "auto"
    query_chunk_size: int | None = None
    remat: RematPolicy = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array | float | int,
        encoder_hidden_states: jax.Array,
        *,
        added_features: jax.Array | None = None,
        block_kwargs: Mapping[str, Any] | None = None,
        num_frames: int = 1,
    ) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if sample.ndim != 4 or sample.shape[-1] != cfg.in_channels:
            raise ValueError(f"sample must be [N, H, W, {cfg.in_channels}] (NHWC), got {sample.shape}")
        n = sample.shape[0]
        if num_frames < 1 or n % num_frames:
            raise ValueError(f"sample has {n} rows, not a multiple of num_frames={num_frames}")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != cfg.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states must be [N, L, {cfg.cross_attention_dim}], "
                             f"got {encoder_hidden_states.shape}")
        context = _rows(encoder_hidden_states, n, num_frames, "encoder_hidden_states").astype(self.dtype)
        context = layers.constrain(context, ("act_batch", "act_length", "act_embed"))
        t = jnp.asarray(timesteps)
        t = jnp.broadcast_to(t, (n,)) if t.ndim == 0 else _rows(t.reshape(-1), n, num_frames, "timesteps")

        # time
        t_emb = timestep_embedding(t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                                   freq_shift=cfg.freq_shift).astype(self.dtype)
        temb = TimestepEmbedding(cfg.time_embed_dim, name="time_embedding", **kw)(t_emb)

        # stem
        x = sample.astype(self.dtype)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        pad = (cfg.conv_in_kernel - 1) // 2
        h = layers.conv(cfg.block_out_channels[0], (cfg.conv_in_kernel,) * 2, padding=pad, name="conv_in", **kw)(x)
        if added_features is not None:
            if added_features.shape != h.shape:
                raise ValueError(f"added_features must match conv_in's output {h.shape}, got {added_features.shape}")
            h = h + added_features.astype(h.dtype)
        h = layers.constrain(h, IMAGE_AXES)

        nb = len(cfg.block_out_channels)
        down_counts, mid_count, up_counts = _block_counts(cfg)
        stage = dict(config=cfg, transformer_block=self.transformer_block, temporal_module=self.temporal_module,
                     implementation=self.attention_implementation, query_chunk_size=self.query_chunk_size,
                     remat=self.remat, **kw)
        call = dict(num_frames=num_frames, block_kwargs=block_kwargs)
        skips, index = [h], 0
        for i in range(nb):
            h, s = DownStage(block=i, first_index=index, temporal=2**i in self.temporal_resolutions,
                             name=f"down_blocks_{i}", **stage)(h, temb, context, **call)
            skips += s
            index += down_counts[i]
        h = MidStage(first_index=index, temporal=self.temporal_mid_block, name="mid_block", **stage)(
            h, temb, context, **call)
        index += mid_count
        for i in range(nb):
            r = nb - 1 - i
            used = cfg.layers_per_block[r] + 1
            skips, taken = skips[:-used], skips[-used:]
            output_size = skips[-1].shape[1:3] if i < nb - 1 else None
            h = UpStage(block=i, first_index=index, temporal=2**r in self.temporal_resolutions,
                        name=f"up_blocks_{i}", **stage)(h, temb, context, taken, output_size=output_size, **call)
            index += up_counts[i]

        if cfg.use_conv_norm_out:
            h = nn.silu(layers.group_norm(cfg.norm_num_groups, epsilon=cfg.norm_eps, name="conv_norm_out", **kw)(h))
        pad = (cfg.conv_out_kernel - 1) // 2
        out = layers.conv(cfg.out_channels, (cfg.conv_out_kernel,) * 2, padding=pad, name="conv_out", **kw)(h)
        return layers.constrain(out, IMAGE_AXES)
