"""V-Express UNet kinds: `vexpress_denoising_unet` (SVP's video UNet) and `vexpress_reference_net`.

`vexpress_denoising_unet` reads V-Express's `denoising_unet` state dict: the SD1.5 UNet keys plus `attn1_5` /
`norm1_5` in every transformer block, with the AnimateDiff motion-module keys
(`{down_blocks.i|mid_block|up_blocks.i}.motion_modules.j.temporal_transformer.*`, `pos_encoder.pe` included)
either in the same mapping or in V-Express's separate `motion_module` file: pass `{**unet_sd, **motion_sd}`, or
use `load_vexpress_unet(unet_path, motion_path, config)`. A state dict without motion keys (and a config that
asks for none) gives the single-frame stage-1 UNet.

SVP's style attention (`attn_style`, `norm_style`; `use_style=True`) is not in V-Express checkpoints: when the
source has none of those keys they keep the module's initial values, whose zero output projection makes the style
term vanish, so the imported network computes exactly what V-Express computes. `to_torch` writes the V-Express
layout by default (style keys left out); `layout="svp"` writes them too, and that is the layout that round-trips
a checkpoint holding trained style layers.

`config`: an `SVPUNetConfig`; V-Express's own pair `{"unet_config": <diffusers config.json dict>,
"unet_additional_kwargs": <inference_v2.yaml section>}`; or a diffusers config dict that may also carry
`unet_additional_kwargs`. Either dict may add the SVP settings `reference_mode`, `use_style`, `style_dim`,
`style_heads`. What the config leaves out is inferred from the tensors: UNet sizes (SD1.x head count 8, see the
`sd_unet` kind), motion modules (8 heads assumed), `reference_mode` ("vexpress" with attn1_5 keys, else
"concat": AnimateAnyone-style UNets have no extra keys), and `use_style` / `style_dim` from `attn_style` keys.

`vexpress_reference_net`: the V-Express ReferenceNet (SD1.5 keys without `conv_norm_out`, 684 at full size).
`config`: a diffusers UNet config dict, a `UNetConfig`, or None (inferred from shapes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtalk.backbones.sd_unet import UNetConfig
from jaxtalk.config import ConfigError, from_dict
from jaxtalk.interop.kinds.sd import infer_unet_config
from jaxtalk.interop.reading import StateDict, read_state_dict, select_subtree
from jaxtalk.interop.registry import ConversionError, Kind, from_torch, get_kind, register
from jaxtalk.svp.reference_net import ReferenceNet
from jaxtalk.svp.video_unet import (
    MotionConfig,
    SVPUNet,
    SVPUNetConfig,
    motion_config_from_vexpress,
    unet_config_from_vexpress,
)

_KEEP = frozenset({"linear_1", "linear_2", "attn1_5", "norm1_5"})
_STYLE_RX = r".*\.(attn_style|norm_style)\..*"
_SVP_KEYS = ("reference_mode", "use_style", "style_dim", "style_heads")
_MOTION_RX = re.compile(r"^((?:down_blocks|up_blocks)\.(\d+)|mid_block)\.motion_modules\.(\d+)\.")


def _count(state: StateDict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_motion_config(state: StateDict, num_levels: int) -> MotionConfig:
    """Motion-module settings from the keys and shapes (heads are not visible: 8, AnimateDiff's value)."""
    found = [m for k in state if (m := _MOTION_RX.match(k))]
    if not found:
        return MotionConfig(enabled=False)
    resolutions = set()
    for m in found:
        if m.group(2) is not None:
            level = int(m.group(2))
            resolutions.add(2 ** level if m.group(1).startswith("down") else 2 ** (num_levels - 1 - level))
    first = sorted({m.group(0) for m in found})[0]
    tt = first + "temporal_transformer."
    blk = tt + "transformer_blocks.0."
    proj_in = state.get(tt + "proj_in.weight")
    if proj_in is None:
        raise ConversionError(f"motion modules: {tt}proj_in.weight is missing; cannot infer the module settings")
    pe = state.get(blk + "attention_blocks.0.pos_encoder.pe")
    return MotionConfig(
        enabled=True, resolutions=tuple(sorted(resolutions)),
        mid_block=any(m.group(1) == "mid_block" for m in found),
        num_transformer_block=_count(state, re.escape(tt) + r"transformer_blocks\.(\d+)\."),
        num_attention_blocks=_count(state, re.escape(blk) + r"attention_blocks\.(\d+)\."),
        temporal_position_encoding=pe is not None, max_len=int(pe.shape[1]) if pe is not None else 32,
        attention_dim_div=int(proj_in.shape[1]) // int(proj_in.shape[0]),
    )


def _style_settings(state: StateDict) -> dict[str, Any]:
    style_k = sorted(k for k in state if k.endswith("attn_style.to_k.weight"))
    if not style_k:
        return {"use_style": False}
    return {"use_style": True, "style_dim": int(state[style_k[0]].shape[1])}


def resolve_denoising_config(config: Any, state: StateDict) -> SVPUNetConfig:
    """The SVPUNetConfig for `config` (see the module docstring) completed from the checkpoint's tensors."""
    if isinstance(config, SVPUNetConfig):
        return config
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"vexpress_denoising_unet: config must be an SVPUNetConfig, a dict or None, got "
                          f"{type(config).__name__}")
    d = dict(config or {})
    svp = {k: d.pop(k) for k in _SVP_KEYS if k in d}
    has_extra = "unet_additional_kwargs" in d
    extra = d.pop("unet_additional_kwargs", None)
    if "unet_config" in d:
        unet_dict = d.pop("unet_config")
        if d:
            raise ConfigError(f"vexpress_denoising_unet config: unknown keys {sorted(d)} beside unet_config")
    else:
        unet_dict = d or None
    unet = infer_unet_config(state) if unet_dict is None else unet_config_from_vexpress(unet_dict)
    motion = motion_config_from_vexpress(extra) if has_extra else infer_motion_config(
        state, len(unet.block_out_channels))
    inferred = {"reference_mode": "vexpress" if any(".attn1_5." in k for k in state) else "concat",
                **_style_settings(state)}
    return from_dict(SVPUNetConfig, dict(unet=unet, motion=motion, **{**inferred, **svp}))


def _build_denoising_unet(config: Any, state: StateDict):
    cfg = resolve_denoising_config(config, state)
    return SVPUNet(cfg), cfg


def _init_denoising_unet(module: SVPUNet, rng):
    return module.init(rng, **module.init_inputs())


def _denoising_from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout == "svp":
        return dict(state)
    if layout != "vexpress":
        raise ConversionError(f"vexpress_denoising_unet: unknown layout {layout!r}; use 'vexpress' (default, "
                              "without SVP's style attention) or 'svp' (with it)")
    return {k: v for k, v in state.items() if not re.fullmatch(_STYLE_RX, k)}


register(Kind(
    name="vexpress_denoising_unet",
    summary=("V-Express denoising UNet (+ motion modules; SVP style attention) -> SVPUNet. "
             "apply({'params': p}, sample[B,F,h,w,4], timesteps[B], audio_tokens[B,F,Na,D], reference_bank=(B,HW,C) "
             "per block or None, kps_features=[B,F,h,w,C0], style_tokens=[B,S,Ds], reference_weight=, "
             "audio_weight=, style_weight=) -> [B,F,h,w,4]. config: SVPUNetConfig, {'unet_config', "
             "'unet_additional_kwargs'} or None. Style keys absent from the source keep their zero-output init; "
             "to_torch writes the V-Express keys, layout='svp' adds the style keys."),
    build=_build_denoising_unet,
    init=_init_denoising_unet,
    keep=_KEEP,
    init_if_missing=(_STYLE_RX,),
    from_canonical=_denoising_from_canonical,
    default_layout="vexpress",
))


def _build_reference_net(config: Any, state: StateDict):
    if config is None:
        cfg = infer_unet_config(state)
    elif isinstance(config, UNetConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = UNetConfig.from_diffusers({k: v for k, v in config.items() if k != "use_conv_norm_out"})
    else:
        raise ConfigError(f"vexpress_reference_net: config must be a diffusers config dict, a UNetConfig or None, "
                          f"got {type(config).__name__}")
    return ReferenceNet(cfg), cfg


def _init_reference_net(module: ReferenceNet, rng):
    c = module.config
    size = 2 ** (len(c.block_out_channels) - 1)
    return module.init(rng, jnp.zeros((1, size, size, c.in_channels)), jnp.zeros((1,)),
                       jnp.zeros((1, 1, c.cross_attention_dim)))


register(Kind(
    name="vexpress_reference_net",
    summary=("V-Express ReferenceNet (SD UNet without conv_norm_out). apply({'params': p}, latent[B,h,w,4], "
             "timesteps, context[B,L,D]) -> (out[B,h,w,4], bank): bank = tuple of norm2 hidden states (B,HW,C), one "
             "per transformer block in block index order (svp.reference_net.transformer_block_names), the "
             "reference_bank of vexpress_denoising_unet. config: diffusers UNet config dict or None."),
    build=_build_reference_net,
    init=_init_reference_net,
    keep=_KEEP,
))


def load_vexpress_unet(unet_path: str | Path | Mapping[str, Any], motion_path: str | Path | Mapping[str, Any] | None = None,
                       config: Any = None) -> tuple[SVPUNet, Any]:
    """Import V-Express's `denoising_unet` file plus its `motion_module` file as one `(SVPUNet, params)`.

    Either argument may be a path (.pth/.bin/.pt/.ckpt/.safetensors) or a loaded mapping. The motion file may
    hold only motion-module keys; where both files hold one, the motion file's value is used (V-Express loads
    it last). `config` as for the `vexpress_denoising_unet` kind.
    """
    kind = get_kind("vexpress_denoising_unet")
    state = dict(select_subtree(read_state_dict(unet_path), kind.containers, kind.strip_prefixes))
    if motion_path is not None:
        motion = select_subtree(read_state_dict(motion_path), kind.containers, kind.strip_prefixes)
        foreign = sorted(k for k in motion if not _MOTION_RX.match(k))
        if foreign:
            raise ConversionError(f"motion module file holds {len(foreign)} keys outside "
                                  f"...motion_modules.j.* (first: {foreign[:3]}); is it the motion_module file?")
        if not motion:
            raise ConversionError("motion module file is empty")
        state.update({k: np.asarray(v) for k, v in motion.items()})
    return from_torch("vexpress_denoising_unet", state, config)
