"""Stable Diffusion kinds: `sd_unet` (diffusers UNet2DConditionModel) and `sd_vae` (diffusers AutoencoderKL).

`config`: the diffusers `model.config` dict (config.json), a `UNetConfig` / `VAEConfig`, or None to infer
it from the tensor shapes. Shapes show the channels, depths, block types, cross-attention width, projection type
and which optional layers exist; what they cannot show takes the SD1.x value (UNet: 8 heads, 32 groups,
eps 1e-5, flip_sin_to_cos, freq_shift 0; VAE: 32 groups, scaling_factor 0.18215). With linear projections
(SD2.x) the head count cannot be guessed, so the config is required.
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp

from jaxtalk.backbones.sd_unet import UNet2DConditionModel, UNetConfig
from jaxtalk.backbones.sd_vae import AutoencoderKL, VAEConfig
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import ConversionError, Kind, register

_UNET_KEEP = frozenset({"linear_1", "linear_2"})


def _count(state: StateDict, pattern: str) -> int:
    """Number of distinct integer captures of `pattern` (a regex with one `(\\d+)` group) over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _shape(state: StateDict, key: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"cannot infer the config from the checkpoint: {key} is missing; pass config=")
    return tuple(state[key].shape)


def infer_unet_config(state: StateDict) -> UNetConfig:
    """The UNetConfig that the tensor shapes imply (see the module docstring for what is assumed)."""
    n = _count(state, r"down_blocks\.(\d+)\.")
    if n == 0:
        raise ConversionError("cannot infer a UNet config: no down_blocks.* keys; pass config=")
    channels = [_shape(state, f"down_blocks.{i}.resnets.0.conv1.weight")[0] for i in range(n)]
    layers = [_count(state, rf"down_blocks\.{i}\.resnets\.(\d+)\.") for i in range(n)]
    down_attn = [f"down_blocks.{i}.attentions.0.norm.weight" in state for i in range(n)]
    up_attn = [f"up_blocks.{i}.attentions.0.norm.weight" in state for i in range(n)]
    depth = []  # the last entry is also the mid block's depth in diffusers
    for i in range(n):
        prefix = "mid_block" if i == n - 1 else f"down_blocks.{i}" if down_attn[i] else f"up_blocks.{n - 1 - i}"
        depth.append(max(1, _count(state, rf"{re.escape(prefix)}\.attentions\.0\.transformer_blocks\.(\d+)\.")))
    cross = [k for k in state if k.endswith("attn2.to_k.weight")]
    if not cross:
        raise ConversionError("cannot infer a UNet config: no cross-attention (attn2) keys; pass config=")
    linear = len(_shape(state, "mid_block.attentions.0.proj_in.weight")) == 2
    if linear:
        raise ConversionError("the checkpoint uses linear projections (SD2.x style): its head count cannot be "
                              "inferred from shapes; pass the diffusers config (config.json) as config=")
    conv_in, conv_out = _shape(state, "conv_in.weight"), _shape(state, "conv_out.weight")
    time_dim = _shape(state, "time_embedding.linear_1.weight")[0]
    return UNetConfig(
        in_channels=conv_in[1], out_channels=conv_out[0], block_out_channels=tuple(channels),
        layers_per_block=tuple(layers), transformer_layers_per_block=tuple(depth),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn),
        cross_attention_dim=_shape(state, cross[0])[1], use_linear_projection=False,
        time_embedding_dim=None if time_dim == 4 * channels[0] else time_dim,
        conv_in_kernel=conv_in[-1], conv_out_kernel=conv_out[-1],
        use_conv_norm_out="conv_norm_out.weight" in state,
    )


def _unet_config(config: Any, state: StateDict) -> UNetConfig:
    if config is None:
        return infer_unet_config(state)
    if isinstance(config, UNetConfig):
        return config
    return UNetConfig.from_diffusers(config)


def _build_unet(config: Any, state: StateDict):
    cfg = _unet_config(config, state)
    return UNet2DConditionModel(cfg), cfg.to_diffusers()


def _init_unet(module: UNet2DConditionModel, rng):
    cfg = module.config
    size = 2 ** (len(cfg.block_out_channels) - 1)
    return module.init(rng, jnp.zeros((1, size, size, cfg.in_channels)), jnp.zeros((1,)),
                       jnp.zeros((1, 1, cfg.cross_attention_dim)))


def infer_vae_config(state: StateDict) -> VAEConfig:
    """The VAEConfig that the tensor shapes imply (32 groups and scaling_factor 0.18215 are assumed)."""
    n = _count(state, r"encoder\.down_blocks\.(\d+)\.")
    if n == 0:
        raise ConversionError("cannot infer a VAE config: no encoder.down_blocks.* keys; pass config=")
    return VAEConfig(
        in_channels=_shape(state, "encoder.conv_in.weight")[1],
        out_channels=_shape(state, "decoder.conv_out.weight")[0],
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(_shape(state, f"encoder.down_blocks.{i}.resnets.0.conv1.weight")[0]
                                 for i in range(n)),
        layers_per_block=_count(state, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        latent_channels=_shape(state, "decoder.conv_in.weight")[1],
        use_quant_conv="quant_conv.weight" in state, use_post_quant_conv="post_quant_conv.weight" in state,
        mid_block_add_attention="encoder.mid_block.attentions.0.group_norm.weight" in state,
    )


def _build_vae(config: Any, state: StateDict):
    if config is None:
        cfg = infer_vae_config(state)
    elif isinstance(config, VAEConfig):
        cfg = config
    else:
        cfg = VAEConfig.from_diffusers(config)
    return AutoencoderKL(cfg), cfg.to_diffusers()


def _init_vae(module: AutoencoderKL, rng):
    cfg = module.config
    size = 2 ** (len(cfg.block_out_channels) - 1)
    return module.init(rng, jnp.zeros((1, size, size, cfg.in_channels)))


# Old diffusers / LDM-converted VAE checkpoints name the mid-block attention projections differently.
_DEPRECATED_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_DEPRECATED_RX = re.compile(r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+)\.(query|key|value|proj_attn)\.(.+)$")
_CANONICAL_RX = re.compile(r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(.+)$")


def _vae_to_canonical(state: StateDict) -> tuple[StateDict, str]:
    out, renamed = {}, False
    for key, value in state.items():
        m = _DEPRECATED_RX.match(key)
        if m:
            key, renamed = f"{m.group(1)}.{_DEPRECATED_ATTN[m.group(2)]}.{m.group(3)}", True
        out[key] = value
    return out, ("deprecated_attention" if renamed else "canonical")


def _vae_from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout == "canonical":
        return state
    if layout != "deprecated_attention":
        raise ValueError(f"sd_vae layout {layout!r} unknown; use 'canonical' or 'deprecated_attention'")
    back = {v: k for k, v in _DEPRECATED_ATTN.items()}
    out = {}
    for key, value in state.items():
        m = _CANONICAL_RX.match(key)
        out[f"{m.group(1)}.{back[m.group(2)]}.{m.group(3)}" if m else key] = value
    return out


register(Kind(
    name="sd_unet",
    summary=("diffusers UNet2DConditionModel (SD 1.x / 2.x; config: diffusers model.config or None). "
             "apply({'params': p}, sample[B,H,W,C], timesteps[B] or scalar (int or float), "
             "encoder_hidden_states[B,L,D]) -> [B,H,W,C_out] (NHWC)."),
    build=_build_unet,
    init=_init_unet,
    keep=_UNET_KEEP,
))

register(Kind(
    name="sd_vae",
    summary=("diffusers AutoencoderKL (config: diffusers model.config or None). "
             "apply(v, images[B,H,W,3] in [-1,1], method='encode') -> (mean, logvar) NHWC; "
             "apply(v, latents[B,h,w,4], method='decode') -> images (latents = z / scaling_factor); "
             "module.decode_frames(params, latents[N,h,w,4], chunk) decodes many frames with bounded memory. "
             "Deprecated attention names (query/key/value/proj_attn) are accepted; "
             "to_torch(..., layout='deprecated_attention') writes them back."),
    build=_build_vae,
    init=_init_vae,
    to_canonical=_vae_to_canonical,
    from_canonical=_vae_from_canonical,
))
