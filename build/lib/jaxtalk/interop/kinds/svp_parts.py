"""Interop kinds for SVP's small parts: V-Express kps guider and audio projection, AnimateDiff motion modules,
StyleTalk style encoder. Sizes are inferred from tensor shapes; head counts (not visible in shapes) come from
`config` (the original constructor kwargs, or a diffusers `MotionAdapter.config`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import ConversionError, Kind, register
from jaxtalk.svp.audio_projection import AudioProjection
from jaxtalk.svp.kps_guider import VKpsGuider
from jaxtalk.svp.motion_module import MotionModules, VanillaTemporalModule
from jaxtalk.svp.style_encoder import StyleEncoder


def _config(config: Any, allowed: set[str], kind: str) -> dict:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        config = dict(config)
    extra = sorted(k for k in config if k not in allowed and not str(k).startswith("_"))
    if extra:
        raise ConversionError(f"{kind}: unknown config keys {extra}; accepted: {sorted(allowed)}")
    return {k: v for k, v in config.items() if not str(k).startswith("_")}


def _need(state: StateDict, key: str, kind: str) -> np.ndarray:
    if key not in state:
        raise ConversionError(f"{kind}: checkpoint has no {key!r}; is this the right kind? "
                              f"first keys: {sorted(state)[:5]}")
    return state[key]


def _count(state: StateDict, pattern: str) -> int:
    """Number of distinct integers captured by `pattern` (one group) over the keys."""
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


# ---------------------------------------------------------------------------------------------- V-Kps guider

def _build_kps_guider(config: Any, state: StateDict):
    kind = "vexpress_kps_guider"
    cfg = _config(config, {"conditioning_embedding_channels", "conditioning_channels", "block_out_channels"}, kind)
    w_in = _need(state, "conv_in.weight", kind)
    n_blocks = _count(state, r"blocks\.(\d+)\.weight")
    chans = [int(w_in.shape[0])] + [int(state[f"blocks.{i}.weight"].shape[0]) for i in range(1, n_blocks, 2)]
    inferred = dict(
        conditioning_embedding_channels=int(_need(state, "conv_out.weight", kind).shape[0]),
        conditioning_channels=int(w_in.shape[1]), block_out_channels=tuple(chans),
    )
    inferred.update({k: tuple(v) if k == "block_out_channels" else int(v) for k, v in cfg.items()})
    return VKpsGuider(**inferred), inferred


register(Kind(
    name="vexpress_kps_guider",
    summary="V-Express VKpsGuider (also SVP's Head-Kps guider). apply(v, kps_images[B,F,H,W,3] in [0,1]) -> "
            "[B,F,H/8,W/8,E], added to the denoising UNet's conv_in(latents).",
    build=_build_kps_guider,
    init=lambda m, rng: m.init(rng, jnp.zeros((1, 1, 8, 8, m.conditioning_channels))),
))


# ---------------------------------------------------------------------------------------- audio projection

def _build_audio_projection(config: Any, state: StateDict):
    kind = "vexpress_audio_projection"
    keys = {"dim", "depth", "dim_head", "heads", "num_queries", "embedding_dim", "output_dim", "ff_mult",
            "max_seq_len", "num_latents_mean_pooled"}
    cfg = _config(config, keys, kind)
    if cfg.pop("num_latents_mean_pooled", 0):
        raise ConversionError(f"{kind}: num_latents_mean_pooled > 0 is not supported (V-Express uses 0)")
    latents = _need(state, "latents", kind)
    pos = _need(state, "pos_emb.weight", kind)
    dim = int(latents.shape[2])
    inner = int(_need(state, "layers.0.0.to_q.weight", kind).shape[0])
    dim_head = int(cfg.get("dim_head", 64 if "heads" not in cfg else inner // int(cfg["heads"])))
    if inner % dim_head:
        raise ConversionError(f"{kind}: attention width {inner} is not a multiple of dim_head={dim_head}; "
                              "pass config={'heads': ..., 'dim_head': ...} (the AudioProjection kwargs)")
    inferred = dict(
        dim=dim, depth=_count(state, r"layers\.(\d+)\."), dim_head=dim_head, heads=inner // dim_head,
        num_queries=int(latents.shape[1]), embedding_dim=int(pos.shape[1]),
        output_dim=int(_need(state, "proj_out.weight", kind).shape[0]),
        ff_mult=int(_need(state, "layers.0.1.1.weight", kind).shape[0]) // dim, max_seq_len=int(pos.shape[0]),
    )
    inferred.update({k: int(v) for k, v in cfg.items()})
    return AudioProjection(**inferred), inferred


register(Kind(
    name="vexpress_audio_projection",
    summary="V-Express AudioProjection (Perceiver resampler). apply(v, windows[N, n_in, embedding_dim]) -> "
            "[N, num_queries, output_dim]; N = batch*frames, windows from svp.audio_projection.window_audio_features. "
            "config: AudioProjection kwargs (None assumes dim_head=64).",
    build=_build_audio_projection,
    init=lambda m, rng: m.init(rng, jnp.zeros((1, m.max_seq_len, m.embedding_dim))),
))


# ------------------------------------------------------------------------------------------ motion modules

_ANIMATEDIFF_KEYS = {"num_attention_heads", "num_transformer_block", "attention_block_types",
                     "temporal_position_encoding", "temporal_position_encoding_max_len", "temporal_attention_dim_div",
                     "zero_initialize", "cross_frame_attention_mode", "norm_num_groups", "norm_over_frames",
                     "in_channels"}
_MOTION_ADAPTER_KEYS = {"block_out_channels", "motion_layers_per_block", "motion_transformer_layers_per_block",
                        "motion_mid_block_layers_per_block", "motion_transformer_layers_per_mid_block",
                        "motion_num_attention_heads", "motion_norm_num_groups", "motion_max_seq_length",
                        "use_motion_mid_block", "conv_in_channels"}


def _temporal_kwargs(config: Any, state: StateDict, prefix: str, kind: str) -> tuple[dict, int]:
    """VanillaTemporalModule kwargs (except in_channels) from one module's keys under `prefix` and the config."""
    cfg = _config(config, _ANIMATEDIFF_KEYS | _MOTION_ADAPTER_KEYS, kind)
    diffusers_cfg = any(k in cfg for k in _MOTION_ADAPTER_KEYS)
    if cfg.get("cross_frame_attention_mode") is not None:
        raise ConversionError(f"{kind}: cross_frame_attention_mode is not supported")
    if any(t != "Temporal_Self" for t in cfg.get("attention_block_types", ())):
        raise ConversionError(f"{kind}: only Temporal_Self attention blocks are supported, got "
                              f"{cfg['attention_block_types']}")
    if cfg.get("conv_in_channels"):
        raise ConversionError(f"{kind}: MotionAdapter conv_in (conv_in_channels) is not supported")
    tt = f"{prefix}temporal_transformer."
    c_in = int(_need(state, tt + "proj_in.weight", kind).shape[1])
    inner = int(state[tt + "proj_in.weight"].shape[0])
    blk = tt + "transformer_blocks.0."
    pe_key = blk + "attention_blocks.0.pos_encoder.pe"
    heads = cfg.get("num_attention_heads", cfg.get("motion_num_attention_heads", 8))
    heads = tuple(int(h) for h in heads) if isinstance(heads, list | tuple) else int(heads)
    has_pe = bool(cfg.get("temporal_position_encoding", pe_key in state))
    if has_pe and pe_key not in state:
        raise ConversionError(
            f"{kind}: checkpoint has no pos_encoder.pe buffers (AnimateDiff saves them non-persistently); add them "
            "with jaxtalk.svp.motion_module.add_position_tables(state, max_len) before importing")
    return dict(
        num_attention_heads=heads,
        num_transformer_block=_count(state, re.escape(tt) + r"transformer_blocks\.(\d+)\."),
        num_attention_blocks=_count(state, re.escape(blk) + r"attention_blocks\.(\d+)\."),
        temporal_position_encoding=has_pe,
        temporal_position_encoding_max_len=int(state[pe_key].shape[1]) if has_pe else 32,  # unused without PE
        temporal_attention_dim_div=c_in // inner,
        norm_num_groups=int(cfg.get("norm_num_groups", cfg.get("motion_norm_num_groups", 32))),
        norm_over_frames=bool(cfg.get("norm_over_frames", diffusers_cfg)),
    ), c_in


def _diffusers_to_canonical(state: StateDict) -> tuple[StateDict, str]:
    """diffusers MotionAdapter names -> AnimateDiff names (the canonical layout)."""
    if not any(re.search(r"motion_modules\.\d+\.(proj_in|transformer_blocks)\.", k) for k in state):
        return dict(state), "animatediff"
    out: StateDict = {}
    renames = (("norm1.", "norms.0."), ("norm2.", "norms.1."), ("norm3.", "ff_norm."),
               ("attn1.", "attention_blocks.0."), ("attn2.", "attention_blocks.1."), ("ff.", "ff."))
    for key, value in state.items():
        m = re.match(r"(.*motion_modules\.\d+\.)(.*)$", key)
        if m is None:
            out[key] = value
            continue
        head, rest = m.groups()
        tt = head + "temporal_transformer."
        b = re.match(r"(transformer_blocks\.\d+\.)(.*)$", rest)
        if b is None:
            out[tt + rest] = value
            continue
        blk, tail = b.groups()
        if tail == "pos_embed.pe":
            for k in (0, 1):
                out[f"{tt}{blk}attention_blocks.{k}.pos_encoder.pe"] = value
            continue
        for src, dst in renames:  # names outside the table pass through and are reported as unexpected
            if tail.startswith(src):
                tail = dst + tail[len(src):]
                break
        out[tt + blk + tail] = value
    return out, "diffusers"


def _canonical_to_diffusers(state: StateDict, layout: str) -> StateDict:
    if layout == "animatediff":
        return dict(state)
    if layout != "diffusers":
        raise ConversionError(f"animatediff motion modules: unknown layout {layout!r}; use 'animatediff' or 'diffusers'")
    renames = (("norms.0.", "norm1."), ("norms.1.", "norm2."), ("ff_norm.", "norm3."),
               ("attention_blocks.0.", "attn1."), ("attention_blocks.1.", "attn2."), ("ff.", "ff."))
    out: StateDict = {}
    for key, value in state.items():
        m = re.match(r"(.*motion_modules\.\d+\.)temporal_transformer\.(.*)$", key)
        if m is None:
            raise ConversionError(f"diffusers layout needs whole-checkpoint keys (…motion_modules.j.…), got {key!r}")
        head, rest = m.groups()
        b = re.match(r"(transformer_blocks\.\d+\.)(.*)$", rest)
        if b is None:
            out[head + rest] = value
            continue
        blk, tail = b.groups()
        pe = re.match(r"attention_blocks\.(\d+)\.pos_encoder\.pe$", tail)
        if pe:
            first = state[f"{head}temporal_transformer.{blk}attention_blocks.0.pos_encoder.pe"]
            if not np.array_equal(first, value):
                raise ConversionError(f"diffusers keeps one pe table per transformer block, but {key} differs "
                                      "from attention_blocks.0's table")
            out[f"{head}{blk}pos_embed.pe"] = value
            continue
        if re.match(r"attention_blocks\.([2-9]|\d\d+)\.", tail):
            raise ConversionError(f"diffusers' motion blocks hold two attentions; cannot write {key}")
        for src, dst in renames:
            if tail.startswith(src):
                tail = dst + tail[len(src):]
                break
        out[head + blk + tail] = value
    return out


def _build_temporal_module(config: Any, state: StateDict):
    kind = "animatediff_temporal_module"
    kwargs, c_in = _temporal_kwargs(config, state, "", kind)
    if not isinstance(kwargs["num_attention_heads"], int):
        raise ConversionError(f"{kind}: one module takes one head count, got {kwargs['num_attention_heads']}")
    kwargs = {"in_channels": c_in, **kwargs}
    return VanillaTemporalModule(**kwargs), kwargs


def _build_motion_modules(config: Any, state: StateDict):
    kind = "animatediff_motion_module"
    found: dict[str, int] = {}
    for key in state:
        m = re.match(r"((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.", key)
        if m is None:
            raise ConversionError(f"{kind}: key {key!r} is not under down_blocks.i / mid_block / up_blocks.i "
                                  ".motion_modules.j (for one module use kind 'animatediff_temporal_module')")
        found[m.group(1)] = max(found.get(m.group(1), 0), int(m.group(2)) + 1)
    n = 1 + max((int(b.split(".")[1]) for b in found if b.startswith("down_blocks")), default=-1)
    if n == 0:
        raise ConversionError(f"{kind}: no down_blocks.i.motion_modules found")
    first = next(f"{b}.motion_modules.0." for b in sorted(found) if b.startswith("down_blocks"))
    kwargs, _ = _temporal_kwargs(config, state, first, kind)
    chans = []
    for i in range(n):
        w = state.get(f"down_blocks.{i}.motion_modules.0.temporal_transformer.proj_in.weight")
        if w is None:
            raise ConversionError(f"{kind}: down_blocks.{i} has no motion modules; cannot infer its channels")
        chans.append(int(w.shape[1]))
    module_kwargs = dict(
        block_out_channels=tuple(chans),
        down_layers=tuple(found.get(f"down_blocks.{i}", 0) for i in range(n)),
        up_layers=tuple(found.get(f"up_blocks.{i}", 0) for i in range(n)),
        mid_layers=found.get("mid_block", 0), **kwargs,
    )
    return MotionModules(**module_kwargs), module_kwargs


_MOTION_SUMMARY = (
    "x[B*F,H,W,C], num_frames -> same shape. config: AnimateDiff motion_module_kwargs or a diffusers "
    "MotionAdapter.config (heads default 8; a MotionAdapter config or norm_over_frames=True selects diffusers' "
    "clip-wide GroupNorm, otherwise per frame as in AnimateDiff / V-Express)."
)
register(Kind(
    name="animatediff_temporal_module",
    summary="One AnimateDiff VanillaTemporalModule (keys temporal_transformer.*). apply(v, " + _MOTION_SUMMARY,
    build=_build_temporal_module,
    init=lambda m, rng: m.init(rng, jnp.zeros((1, 1, 1, m.in_channels)), 1),
))
register(Kind(
    name="animatediff_motion_module",
    summary="Whole AnimateDiff / V-Express motion-module checkpoint (mm_sd_v15_v2, motion_module.bin; "
            "layout='diffusers' for MotionAdapter names) -> MotionModules {down_blocks_i, mid_block, up_blocks_i: "
            "{motion_modules_j}}. apply(v, " + _MOTION_SUMMARY.replace("same shape.", "same shape, block=, index=."),
    build=_build_motion_modules,
    init=lambda m, rng: m.init(rng, method=MotionModules.init_all),
    to_canonical=_diffusers_to_canonical,
    from_canonical=_canonical_to_diffusers,
))


# ---------------------------------------------------------------------------------------- StyleTalk encoder

def _split_in_proj(state: StateDict) -> tuple[StateDict, str]:
    """torch MultiheadAttention fused in_proj (3d, d) -> to_q/to_k/to_v; out_proj -> to_out.0."""
    if not any(k.endswith("in_proj_weight") for k in state):
        return dict(state), "jaxtalk"
    out: StateDict = {}
    for key, value in state.items():
        m = re.match(r"(.*self_attn\.)(in_proj_weight|in_proj_bias|out_proj\.(weight|bias))$", key)
        if m is None:
            out[key] = value
            continue
        head, name = m.group(1), m.group(2)
        if name.startswith("out_proj"):
            out[head + "to_out.0." + m.group(3)] = value
            continue
        leaf = "weight" if name == "in_proj_weight" else "bias"
        if value.shape[0] % 3:
            raise ConversionError(f"{key}: fused in_proj has {value.shape[0]} rows, not a multiple of 3")
        for part, chunk in zip(("to_q", "to_k", "to_v"), np.split(value, 3, axis=0)):
            out[f"{head}{part}.{leaf}"] = np.ascontiguousarray(chunk)
    return out, "styletalk"


def _fuse_in_proj(state: StateDict, layout: str) -> StateDict:
    if layout == "jaxtalk":
        return dict(state)
    if layout != "styletalk":
        raise ConversionError(f"styletalk_style_encoder: unknown layout {layout!r}; use 'styletalk' or 'jaxtalk'")
    out: StateDict = {}
    for key, value in state.items():
        m = re.match(r"(.*self_attn\.)(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", key)
        if m is None:
            out[key] = value
        elif m.group(2) == "to_out.0":
            out[f"{m.group(1)}out_proj.{m.group(3)}"] = value
        elif m.group(2) == "to_q":
            head, leaf = m.group(1), m.group(3)
            parts = [state[f"{head}{p}.{leaf}"] for p in ("to_q", "to_k", "to_v")]
            out[f"{head}in_proj_{leaf}"] = np.concatenate(parts, axis=0)
    return out


def _build_style_encoder(config: Any, state: StateDict):
    kind = "styletalk_style_encoder"
    keys = {"d_model", "nhead", "num_encoder_layers", "dim_feedforward", "dropout", "activation", "normalize_before",
            "pos_embed_len", "input_dim", "aggregate_method"}
    cfg = _config(config, keys, kind)
    if cfg.pop("normalize_before", False):
        raise ConversionError(f"{kind}: normalize_before=True (pre-norm) is not supported; StyleTalk uses False")
    w = _need(state, "increase_embed_dim.weight", kind)
    table = _need(state, "pos_embed.pos_table", kind)
    inferred = dict(
        d_model=int(w.shape[0]), nhead=8, num_encoder_layers=_count(state, r"encoder\.layers\.(\d+)\."),
        dim_feedforward=int(_need(state, "encoder.layers.0.linear1.weight", kind).shape[0]), dropout=0.1,
        activation="relu", pos_embed_len=int(table.shape[1]), input_dim=int(w.shape[1]),
        aggregate_method="self_attention_pooling" if "aggregate_method.W.0.weight" in state else "average",
    )
    inferred.update(cfg)
    return StyleEncoder(**inferred), inferred


register(Kind(
    name="styletalk_style_encoder",
    summary="StyleTalk StyleEncoder. apply(v, x[B,T,input_dim], pad_mask[B,T] (True = padded)) -> [B, d_model]. "
            "config: StyleEncoder kwargs (nhead default 8). to_torch writes StyleTalk's fused in_proj_weight / "
            "out_proj (layout='jaxtalk': split to_q/to_k/to_v/to_out.0).",
    build=_build_style_encoder,
    init=lambda m, rng: m.init(rng, jnp.zeros((1, 1, m.input_dim))),
    to_canonical=_split_in_proj,
    from_canonical=_fuse_in_proj,
    default_layout="styletalk",
))
