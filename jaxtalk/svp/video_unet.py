"""SVP's denoising video UNet: the SD UNet with reference, audio, style and temporal attention (V-Express layout).

    unet = SVPUNet(SVPUNetConfig.svp())
    v = unet.apply({'params': p}, latents[B,F,h,w,4], t[B], audio_tokens[B,F,Na,D],
                   reference_bank=bank, kps_features=kps[B,F,h,w,C0], style_tokens=s[B,S,Ds])

Every transformer block of the 2D UNet (`jaxtalk.backbones.sd_unet`) is a `VideoTransformerBlock`; the frames run
as B*F rows, so GroupNorm statistics are per frame (V-Express's inflated GroupNorm) and AnimateDiff motion modules
(`jaxtalk.svp.motion_module`) mix the frames. One block, tokens (B*F, HW, C):

    x += attn1(norm1 x)                                   spatial self-attention in each frame
    x += w_ref * attn1_5(norm1_5 x, K/V = bank[index])    V-Express reference attention ("vexpress")
    x += w_aud * attn2(norm2 x, K/V = audio tokens)       audio cross-attention, per frame
    x += w_sty * attn_style(norm_style x, K/V = style)    SVP Eq. 5, zero-initialised output (`use_style`)
    x += ff(norm3 x)

`reference_mode="concat"` is the AnimateAnyone / Hallo form instead: no attn1_5, and attn1's K/V are
cat[norm1 x, bank] (the bank repeated over frames). `"none"` has no reference path. The weights scale the
attention output before the residual add, as V-Express's read-mode hook does.

The bank comes from `jaxtalk.svp.reference_net.ReferenceNet`: one (B, HW, C) entry per transformer block in block
`index` order (down blocks, mid block, up blocks). `reference_bank=None` is V-Express's unconditional branch (a
zero bank: attn1_5 then adds only its output bias) and, in concat mode, plain self-attention.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk import config as cfg
from jaxtalk.backbones.sd_unet import (
    SD15_UNET_CONFIG,
    RematPolicy,
    UNet2DConditionModel,
    UNetConfig,
    num_transformer_blocks,
)
from jaxtalk.backbones.unet_blocks import TOKEN_AXES, BasicTransformerBlock, FeedForward
from jaxtalk.nn import layers
from jaxtalk.nn.attention import Implementation, dot_product_attention
from jaxtalk.nn.standardize import standardize
from jaxtalk.svp.motion_module import VanillaTemporalModule

Dtype = Any
ReferenceMode = Literal["vexpress", "concat", "none"]
REFERENCE_MODES = ("vexpress", "concat", "none")


# ------------------------------------------------------------------------------------------------ config

@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """AnimateDiff motion modules of the video UNet (V-Express `unet_additional_kwargs`, 'Vanilla' type)."""

    enabled: bool = True
    resolutions: tuple[int, ...] = (1, 2, 4, 8)
    mid_block: bool = True
    num_attention_heads: int = cfg.field(8, min=1)
    num_transformer_block: int = cfg.field(1, min=1)
    num_attention_blocks: int = cfg.field(2, min=1, doc="len(attention_block_types), Temporal_Self only")
    temporal_position_encoding: bool = True
    max_len: int = cfg.field(32, min=1, doc="temporal_position_encoding_max_len: most frames per window")
    attention_dim_div: int = cfg.field(1, min=1)
    norm_num_groups: int = cfg.field(32, min=1)
    zero_initialize: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolutions", tuple(self.resolutions))


_ADDITIONAL_KEYS = frozenset({
    "use_inflated_groupnorm", "unet_use_cross_frame_attention", "unet_use_temporal_attention", "use_motion_module",
    "motion_module_resolutions", "motion_module_mid_block", "motion_module_decoder_only", "motion_module_type",
    "motion_module_kwargs",
})
_MOTION_KWARGS = frozenset({
    "num_attention_heads", "num_transformer_block", "attention_block_types", "temporal_position_encoding",
    "temporal_position_encoding_max_len", "temporal_attention_dim_div", "zero_initialize",
    "cross_frame_attention_mode",
})


def motion_config_from_vexpress(kwargs: Mapping[str, Any] | None) -> MotionConfig:
    """MotionConfig from V-Express / AnimateDiff `unet_additional_kwargs` (inference_v2.yaml); strict.

    None means no motion modules (the single-frame stage-1 UNet). Settings this port does not implement
    (clip-wide GroupNorm, cross-frame or block-level temporal attention, decoder-only modules) are errors.
    """
    if kwargs is None:
        return MotionConfig(enabled=False)
    kwargs = dict(kwargs)
    unknown = sorted(set(kwargs) - _ADDITIONAL_KEYS)
    if unknown:
        raise cfg.ConfigError(f"unet_additional_kwargs: unknown keys {unknown}; known: {sorted(_ADDITIONAL_KEYS)}")
    if kwargs.get("use_inflated_groupnorm", True) is not True:
        raise cfg.ConfigError("unet_additional_kwargs.use_inflated_groupnorm=False (GroupNorm over all frames) is "
                              "not supported; V-Express uses True (per-frame statistics)")
    for key in ("unet_use_cross_frame_attention", "unet_use_temporal_attention", "motion_module_decoder_only"):
        if kwargs.get(key):
            raise cfg.ConfigError(f"unet_additional_kwargs.{key}=True is not supported (V-Express uses False)")
    if not kwargs.get("use_motion_module", False):
        return MotionConfig(enabled=False)
    if kwargs.get("motion_module_type", "Vanilla") != "Vanilla":
        raise cfg.ConfigError(f"motion_module_type={kwargs['motion_module_type']!r}: only 'Vanilla' is supported")
    mm = dict(kwargs.get("motion_module_kwargs") or {})
    unknown = sorted(set(mm) - _MOTION_KWARGS)
    if unknown:
        raise cfg.ConfigError(f"motion_module_kwargs: unknown keys {unknown}; known: {sorted(_MOTION_KWARGS)}")
    if mm.get("cross_frame_attention_mode") is not None:
        raise cfg.ConfigError("motion_module_kwargs.cross_frame_attention_mode is not supported")
    types = tuple(mm.get("attention_block_types", ("Temporal_Self", "Temporal_Self")))
    if any(t != "Temporal_Self" for t in types):
        raise cfg.ConfigError(f"motion_module_kwargs.attention_block_types={list(types)}: only Temporal_Self")
    return cfg.from_dict(MotionConfig, dict(
        enabled=True,
        resolutions=tuple(kwargs.get("motion_module_resolutions", (1, 2, 4, 8))),
        mid_block=bool(kwargs.get("motion_module_mid_block", False)),
        num_attention_heads=mm.get("num_attention_heads", 8),
        num_transformer_block=mm.get("num_transformer_block", 2),
        num_attention_blocks=len(types),
        temporal_position_encoding=mm.get("temporal_position_encoding", False),
        max_len=mm.get("temporal_position_encoding_max_len", 24),
        attention_dim_div=mm.get("temporal_attention_dim_div", 1),
        zero_initialize=mm.get("zero_initialize", True),
    ), "motion")


def unet_config_from_vexpress(config: Mapping[str, Any]) -> UNetConfig:
    """UNetConfig from a diffusers config dict, reading V-Express's 3D block names as their 2D equivalents."""
    d = dict(config)
    for key in ("down_block_types", "up_block_types"):
        if key in d:
            d[key] = [t.replace("3D", "2D") for t in d[key]]
    if d.get("mid_block_type") == "UNetMidBlock3DCrossAttn":
        d["mid_block_type"] = "UNetMidBlock2DCrossAttn"
    return UNetConfig.from_diffusers(d)


@dataclasses.dataclass(frozen=True)
class SVPUNetConfig:
    """The denoising video UNet: 2D UNet sizes, motion modules, reference mode and the style attention.

    `style_dim` is d_s of the style tokens; `style_heads` the style attention's head count (None: the block's
    own heads, so the head width is the block's too).
    """

    unet: UNetConfig = cfg.field(default_factory=lambda: UNetConfig.from_diffusers(SD15_UNET_CONFIG))
    motion: MotionConfig = cfg.field(default_factory=MotionConfig)
    reference_mode: ReferenceMode = "vexpress"
    use_style: bool = False
    style_dim: int = cfg.field(256, min=1)
    style_heads: int | None = None
    style_mean: tuple[float, ...] | None = cfg.field(
        None, doc="per-dimension mean of the style tokens over the training population, subtracted before the "
                  "style attention (with style_std)")
    style_std: tuple[float, ...] | None = cfg.field(
        None, doc="per-dimension scale the centred style tokens are divided by (with style_mean)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.reference_mode not in REFERENCE_MODES:
            raise cfg.ConfigError(f"reference_mode={self.reference_mode!r}; choose one of {list(REFERENCE_MODES)}")
        if (self.style_mean is None) != (self.style_std is None):
            raise cfg.ConfigError("style_mean and style_std must be given together (or neither)")
        if self.style_mean is not None:
            if len(self.style_mean) != self.style_dim or len(self.style_std) != self.style_dim:
                raise cfg.ConfigError(f"style_mean / style_std need style_dim={self.style_dim} values, got "
                                      f"{len(self.style_mean)} / {len(self.style_std)}")
            if min(self.style_std) <= 0:
                raise cfg.ConfigError("style_std values must be > 0")
        if self.style_heads is not None:
            for i, c in enumerate(self.unet.block_out_channels):
                if c % self.style_heads:
                    raise cfg.ConfigError(f"style_heads={self.style_heads} does not divide block_out_channels[{i}]={c}")
        if self.motion.enabled:
            for i, c in enumerate(self.unet.block_out_channels):
                if c % self.motion.norm_num_groups or c % (self.motion.num_attention_heads * self.motion.attention_dim_div):
                    raise cfg.ConfigError(
                        f"motion modules: block_out_channels[{i}]={c} must be divisible by norm_num_groups="
                        f"{self.motion.norm_num_groups} and num_attention_heads*attention_dim_div")

    @classmethod
    def vexpress(cls, **overrides: Any) -> SVPUNetConfig:
        """V-Express's denoising UNet (SD1.5 sizes, inference_v2.yaml motion modules), no style attention."""
        base = dict(unet=UNetConfig.from_diffusers(SD15_UNET_CONFIG), motion=MotionConfig(), reference_mode="vexpress",
                    use_style=False)
        return cls(**{**base, **overrides})

    @classmethod
    def svp(cls, **overrides: Any) -> SVPUNetConfig:
        """SVP: the V-Express UNet plus the style attention over 256-d style tokens (StyleTalk width)."""
        return cls.vexpress(**{"use_style": True, "style_dim": 256, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> SVPUNetConfig:
        """A small config for tests and CPU demos (two levels of 32 / 64 channels, 4 heads everywhere)."""
        unet = UNetConfig(block_out_channels=(32, 64), layers_per_block=1, num_attention_heads=4,
                          cross_attention_dim=32, norm_num_groups=8,
                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        motion = MotionConfig(resolutions=(1, 2), num_attention_heads=4, max_len=16, norm_num_groups=8)
        base = dict(unet=unet, motion=motion, use_style=True, style_dim=16)
        return cls(**{**base, **overrides})

    @classmethod
    def from_vexpress(cls, unet_config: Mapping[str, Any], unet_additional_kwargs: Mapping[str, Any] | None = None,
                      **svp: Any) -> SVPUNetConfig:
        """From V-Express's inputs: the diffusers UNet config.json dict and `unet_additional_kwargs`.

        V-Express's 3D block type names (CrossAttnDownBlock3D, ...) are read as their 2D equivalents. `svp` may
        set reference_mode, use_style, style_dim, style_heads.
        """
        return cfg.from_dict(cls, dict(unet=unet_config_from_vexpress(unet_config),
                                       motion=motion_config_from_vexpress(unet_additional_kwargs), **svp))


# ------------------------------------------------------------------------------------------------ blocks

def _scaled(weight: float | jax.Array, y: jax.Array) -> jax.Array:
    """weight * y in y's dtype (a float32 weight array must not promote a bf16 residual stream)."""
    return y * jnp.asarray(weight, y.dtype)


def _per_frame(x: jax.Array, rows: int, num_frames: int, what: str) -> jax.Array:
    """(B, L, D) conditioning for B videos -> (B*F, L, D) rows, one copy per frame ("b l d -> (b f) l d")."""
    if x.ndim != 3:
        raise ValueError(f"{what} must be (batch, tokens, channels), got shape {x.shape}")
    if x.shape[0] * num_frames != rows:
        raise ValueError(f"{what} has {x.shape[0]} rows; expected {rows // num_frames} (one per video; the "
                         f"UNet runs {rows} rows = videos x {num_frames} frames)")
    return jnp.repeat(x, num_frames, axis=0) if num_frames > 1 else x


class StyleCrossAttention(nn.Module):
    """Eq. 5's CrossAttn(Q(z_a), K(s), V(s)) with diffusers names (to_q/to_k/to_v/to_out.0).

    `to_out.0` starts at zero (weight and bias), so a new style layer leaves a pretrained UNet's output unchanged.
    """

    heads: int
    dim_head: int
    implementation: Implementation = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
        inner = self.heads * self.dim_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        proj = functools.partial(layers.dense, inner, use_bias=False, axes=("embed", "heads"), **kw)
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.dim_head)
        q = layers.constrain(split(proj(name="to_q")(x)), ("act_batch", "act_length", "act_heads", None))
        k, v = split(proj(name="to_k")(style)), split(proj(name="to_v")(style))
        o = dot_product_attention(q, k, v, implementation=self.implementation)
        o = o.astype(self.dtype).reshape(*o.shape[:-2], inner)
        return layers.dense(x.shape[-1], name="to_out_0", axes=("heads", "embed"), kernel_init=layers.zeros_init,
                            **kw)(o)


class VideoTransformerBlock(BasicTransformerBlock):
    """The denoising UNet's transformer block (see the module docstring); `unet_blocks` protocol.

    Block kwargs (the same for every block; each picks its own bank entry by `index`):
    `reference_bank` (tuple of (B, HW, C) or None), `style_tokens` ((B, S, Ds) or None: no style term),
    `reference_weight`, `audio_weight`, `style_weight` (scalars, may be traced).
    """

    reference_mode: ReferenceMode = "vexpress"
    use_style: bool = False
    style_dim: int = 256
    style_heads: int | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array, *, num_frames: int = 1,
        reference_bank: Sequence[jax.Array] | None = None, style_tokens: jax.Array | None = None,
        reference_weight: float | jax.Array = 1.0, audio_weight: float | jax.Array = 1.0,
        style_weight: float | jax.Array = 1.0,
    ) -> jax.Array:
        n, _, c = x.shape
        bank = None
        if reference_bank is not None:
            if self.reference_mode == "none":
                raise ValueError("reference_mode='none' has no reference attention; pass reference_bank=None")
            if self.index >= len(reference_bank):
                raise ValueError(f"reference_bank has {len(reference_bank)} entries; block {self.index} needs one")
            bank = _per_frame(reference_bank[self.index], n, num_frames, f"reference_bank[{self.index}]")
            if bank.shape[-1] != c:
                raise ValueError(f"reference_bank[{self.index}] has {bank.shape[-1]} channels; block {self.index} "
                                 f"has {c} (is the bank from a ReferenceNet of the same UNet config?)")
            bank = bank.astype(x.dtype)
        if self.reference_mode == "concat" and not (isinstance(reference_weight, int | float) and reference_weight == 1):
            raise ValueError("reference_weight applies to reference_mode='vexpress' only (concat mode has no "
                             "separate reference attention output to scale)")

        h = self.norm("norm1")(x)
        kv = h if bank is None or self.reference_mode != "concat" else jnp.concatenate([h, bank], axis=1)
        x = x + self.attention("attn1")(h, kv)
        if self.reference_mode == "vexpress":
            if bank is None:  # V-Express's unconditional branch: an all-zero bank
                bank = jnp.zeros((n, 1, c), x.dtype)
            x = x + _scaled(reference_weight, self.attention("attn1_5")(self.norm("norm1_5")(x), bank))
        x = x + _scaled(audio_weight, self.attention("attn2")(self.norm("norm2")(x), context))
        if self.use_style:
            heads = self.heads if self.style_heads is None else self.style_heads
            style = StyleCrossAttention(heads, c // heads, self.implementation, self.dtype, self.param_dtype,
                                        name="attn_style")
            norm = self.norm("norm_style")
            if style_tokens is not None:
                s = _per_frame(style_tokens, n, num_frames, "style_tokens").astype(x.dtype)
                x = x + _scaled(style_weight, style(norm(x), s))
            elif self.is_initializing():  # create the params; without style tokens the term is absent
                style(norm(x), jnp.zeros((n, 1, self.style_dim), x.dtype))
        x = x + FeedForward(name="ff", dtype=self.dtype, param_dtype=self.param_dtype)(self.norm("norm3")(x))
        return layers.constrain(x, TOKEN_AXES)


# ------------------------------------------------------------------------------------------------ the UNet

def standardize_style(style_tokens: jax.Array, config: SVPUNetConfig) -> jax.Array:
    """(s - style_mean) / style_std per dimension when the config has them, else s unchanged.

    A trained style prior's tokens share a large common part (over the synthetic population the per-clip
    variation is ~1/5 of the token norm), and a linear key / value projection learns that common part first:
    the style attention then adds the same vector for every clip. Centring and scaling with population
    statistics makes the per-clip part what the projections see."""
    return standardize(style_tokens, config.style_mean, config.style_std)


class SVPUNet(nn.Module):
    """`apply(v, sample[B,F,h,w,C], timesteps[B], audio_tokens[B,F,Na,D], *, reference_bank, kps_features,
    style_tokens, reference_weight, audio_weight, style_weight) -> [B,F,h,w,C_out]`.

    Param names are the V-Express `denoising_unet` + `motion_module` state-dict names (plus `attn_style` /
    `norm_style` with `use_style`). `timesteps` may be a scalar, [B] or fractional. `kps_features` is added to
    `conv_in`'s output (V-Kps / Head-Kps guider features). `style_tokens` [B,S,style_dim] or None (no style term).
    `remat`: the `jax.checkpoint` policy of the UNet blocks (`jaxtalk.backbones.sd_unet.REMAT_POLICIES`).
    """

    config: SVPUNetConfig
    attention_implementation: Implementation = "auto"
    query_chunk_size: int | None = None
    remat: RematPolicy = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        c = self.config
        block = functools.partial(VideoTransformerBlock, reference_mode=c.reference_mode, use_style=c.use_style,
                                  style_dim=c.style_dim, style_heads=c.style_heads)
        temporal = None
        if c.motion.enabled:
            m = c.motion
            temporal = functools.partial(
                VanillaTemporalModule, num_attention_heads=m.num_attention_heads,
                num_transformer_block=m.num_transformer_block, num_attention_blocks=m.num_attention_blocks,
                temporal_position_encoding=m.temporal_position_encoding,
                temporal_position_encoding_max_len=m.max_len, temporal_attention_dim_div=m.attention_dim_div,
                norm_num_groups=m.norm_num_groups, norm_over_frames=False, zero_initialize=m.zero_initialize,
                implementation=self.attention_implementation,
            )
        self.unet = UNet2DConditionModel(
            c.unet, transformer_block=block, temporal_module=temporal, temporal_resolutions=c.motion.resolutions,
            temporal_mid_block=c.motion.mid_block, attention_implementation=self.attention_implementation,
            query_chunk_size=self.query_chunk_size, remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype,
        )
        nn.share_scope(self, self.unet)  # params at the top level, named like the torch state dict

    @property
    def num_blocks(self) -> int:
        """How many transformer blocks (= reference bank entries) the UNet has; 16 for SD1.5."""
        return num_transformer_blocks(self.config.unet)

    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array | float | int,
        audio_tokens: jax.Array,
        *,
        reference_bank: Sequence[jax.Array] | None = None,
        kps_features: jax.Array | None = None,
        style_tokens: jax.Array | None = None,
        reference_weight: float | jax.Array = 1.0,
        audio_weight: float | jax.Array = 1.0,
        style_weight: float | jax.Array = 1.0,
    ) -> jax.Array:
        c = self.config
        if sample.ndim != 5:
            raise ValueError(f"sample must be video latents [B, F, h, w, C], got shape {sample.shape}")
        b, f, hh, ww, ch = sample.shape
        if c.motion.enabled and c.motion.temporal_position_encoding and f > c.motion.max_len:
            raise ValueError(f"{f} frames exceed the motion modules' position table ({c.motion.max_len}); "
                             "sample in context windows of at most that many frames")
        if audio_tokens.ndim != 4 or audio_tokens.shape[:2] != (b, f):
            raise ValueError(f"audio_tokens must be [B={b}, F={f}, tokens, D], got shape {audio_tokens.shape}")
        context = audio_tokens.reshape(b * f, *audio_tokens.shape[2:])
        added = None
        if kps_features is not None:
            if kps_features.shape[:2] != (b, f):
                raise ValueError(f"kps_features must be [B={b}, F={f}, h, w, C0], got shape {kps_features.shape}")
            added = kps_features.reshape(b * f, *kps_features.shape[2:])
        if reference_bank is not None:
            reference_bank = tuple(reference_bank)
            if len(reference_bank) != self.num_blocks:
                raise ValueError(f"reference_bank has {len(reference_bank)} entries; this UNet has {self.num_blocks} "
                                 "transformer blocks (one entry each, in block index order)")
        if style_tokens is not None:
            if not c.use_style:
                raise ValueError("style_tokens given but the config has use_style=False (no style attention)")
            if style_tokens.ndim != 3 or style_tokens.shape[0] != b or style_tokens.shape[-1] != c.style_dim:
                raise ValueError(f"style_tokens must be [B={b}, S, {c.style_dim}], got shape {style_tokens.shape}")
            style_tokens = standardize_style(style_tokens, c)
        block_kwargs = dict(reference_bank=reference_bank, style_tokens=style_tokens,
                            reference_weight=reference_weight, audio_weight=audio_weight, style_weight=style_weight)
        x = sample.reshape(b * f, hh, ww, ch)
        out = self.unet(x, timesteps, context, added_features=added, block_kwargs=block_kwargs, num_frames=f)
        return out.reshape(b, f, *out.shape[1:])

    def init_inputs(self, frames: int = 1, size: int | None = None) -> dict[str, jax.Array]:
        """Small zero inputs that create every param (`module.init(rng, **module.init_inputs())`)."""
        c = self.config
        s = size or 2 ** (len(c.unet.block_out_channels) - 1)
        out = dict(sample=jnp.zeros((1, frames, s, s, c.unet.in_channels)), timesteps=jnp.zeros((1,)),
                   audio_tokens=jnp.zeros((1, frames, 1, c.unet.cross_attention_dim)))
        if c.use_style:
            out["style_tokens"] = jnp.zeros((1, 1, c.style_dim))
        return out
