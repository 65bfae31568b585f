"""`clip_text`: the CLIP text tower from transformers or OpenAI `clip` checkpoints.

Canonical layout (what `to_torch` returns by default): transformers `CLIPTextModelWithProjection` names,
`text_model.embeddings.token_embedding.weight`, ..., `text_model.final_layer_norm.*`, `text_projection.weight`
(present only when the source has a projection). Accepted besides, with the layout name `to_torch(layout=...)`
takes to write them back:

- `"hf"`: the canonical names (also `CLIPTextModel` files saved by transformers 4, and the text half of a full
  `CLIPModel` file: `vision_model.*`, `visual_projection.weight` and `logit_scale` are set aside, as is the
  `position_ids` buffer old files carry);
- `"hf_text_model"`: transformers 5 `CLIPTextModel.state_dict()` names, without the `text_model.` prefix (no
  projection);
- `"openai"`: OpenAI `clip` names: `token_embedding.weight`, `positional_embedding`,
  `transformer.resblocks.{i}.attn.in_proj_weight` (fused q, k, v), `ln_1`, `mlp.c_fc`, `mlp.c_proj`, `ln_2`,
  `ln_final`, `text_projection` stored (in, out). Full CLIP state dicts are accepted: the image tower (`visual.*`),
  `logit_scale` and the `input_resolution` / `context_length` / `vocab_size` entries are set aside, so the round
  trip gives back the text keys exactly. OpenAI's released `ViT-B-32.pt` files are TorchScript archives, which
  the safe reader refuses: pass `torch.jit.load(path, map_location="cpu").state_dict()` (or re-save it).

`config`: transformers `CLIPTextConfig.to_dict()` (or a full `CLIPConfig.to_dict()`), a preset name
(`"ViT-B/32"`, `"ViT-L/14"`), a `CLIPTextConfig`, or None (sizes from shapes, heads = width / 64, quick_gelu,
pooling at the largest id as OpenAI's `encode_text`; the projection follows the checkpoint).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtalk.backbones.clip_text import (
    CLIP_TEXT_PRESETS,
    CLIPTextConfig,
    CLIPTextEncoder,
    config_from_hf,
    config_from_state,
)
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import Kind, register

LAYOUTS = ("hf", "hf_text_model", "openai")
_PREFIX = "text_model."
_HF_SET_ASIDE = re.compile(r"vision_model\..*|visual_projection\.weight|logit_scale")
_OPENAI_SET_ASIDE = re.compile(r"visual\..*|logit_scale|input_resolution|context_length|vocab_size")
_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)")
# OpenAI block-local names <-> transformers layer-local names (the fused in_proj is handled apart).
_BLOCK_NAMES = {
    "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_TOP_NAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}


def _is_openai(state: StateDict) -> bool:
    return "positional_embedding" in state or "token_embedding.weight" in state


def _openai_to_hf(state: StateDict) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        if _OPENAI_SET_ASIDE.fullmatch(key):
            continue
        if key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = np.ascontiguousarray(value.T)
        elif (m := _BLOCK.fullmatch(key)) is not None:
            layer, rest = f"text_model.encoder.layers.{m.group(1)}.", m.group(2)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                leaf = "weight" if rest.endswith("weight") else "bias"
                if value.shape[0] % 3:
                    raise ValueError(f"{key}: fused q/k/v of length {value.shape[0]} does not split in three")
                for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
                    out[f"{layer}self_attn.{name}.{leaf}"] = np.ascontiguousarray(part)
                continue
            module, _, leaf = rest.rpartition(".")
            out[layer + (_BLOCK_NAMES.get(module, module)) + "." + leaf] = value
        else:
            out[key] = value  # left for the strict check to report
    return out


def _hf_to_openai(state: StateDict) -> StateDict:
    top = {v: k for k, v in _TOP_NAMES.items()}
    block = {v: k for k, v in _BLOCK_NAMES.items()}
    out: StateDict = {}
    fused: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = np.ascontiguousarray(value.T)
        elif (m := _HF_LAYER.fullmatch(key)) is not None:
            layer, rest = f"transformer.resblocks.{m.group(1)}.", m.group(2)
            module, _, leaf = rest.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault((layer, leaf), {})[module[-6]] = value
                continue
            out[layer + block.get(module, module) + "." + leaf] = value
        else:
            raise ValueError(f"clip_text: {key} has no OpenAI name")
    for (layer, leaf), parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"clip_text: {layer} lacks some of q/k/v {leaf} to fuse into in_proj_{leaf}")
        out[f"{layer}attn.in_proj_{leaf}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


def to_canonical(state: StateDict) -> tuple[StateDict, str]:
    if _is_openai(state):
        return _openai_to_hf(state), "openai"
    state = {k: v for k, v in state.items() if not _HF_SET_ASIDE.fullmatch(k)}
    if state and not any(k.startswith(_PREFIX) for k in state):
        return {_PREFIX + k: v for k, v in state.items()}, "hf_text_model"
    return state, "hf"


def from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout == "hf":
        return dict(state)
    if layout == "hf_text_model":
        if "text_projection.weight" in state:
            raise ValueError("clip_text: layout 'hf_text_model' (CLIPTextModel) cannot hold text_projection; "
                             "use layout 'hf' (CLIPTextModelWithProjection)")
        return {k[len(_PREFIX):]: v for k, v in state.items()}
    if layout == "openai":
        return _hf_to_openai(state)
    raise ValueError(f"clip_text: unknown layout {layout!r}; choose one of {LAYOUTS}")


def resolve_config(config: Any, state: Mapping[str, np.ndarray]) -> CLIPTextConfig:
    """Any accepted config form -> `CLIPTextConfig`, with the projection following the checkpoint."""
    proj = state.get("text_projection.weight")
    if config is None:
        return config_from_state(state)
    if isinstance(config, str):
        if config not in CLIP_TEXT_PRESETS:
            raise ValueError(f"unknown CLIP text preset {config!r}; choose one of {sorted(CLIP_TEXT_PRESETS)}")
        config = CLIP_TEXT_PRESETS[config]
    elif isinstance(config, Mapping):
        config = config_from_hf(config, has_projection=proj is not None)
    elif not isinstance(config, CLIPTextConfig):
        raise TypeError(f"clip_text config must be a dict, preset name, CLIPTextConfig or None, got {type(config)}")
    return dataclasses.replace(config, projection_dim=None if proj is None else int(proj.shape[0]))


def _build(config: Any, state: StateDict):
    cfg = resolve_config(config, state)
    return CLIPTextEncoder(cfg), cfg


register(Kind(
    name="clip_text",
    summary=("CLIP text tower (transformers CLIPTextModel[WithProjection] or OpenAI clip). "
             "apply({'params': p}, input_ids[B,L] int, attention_mask=None) -> (last_hidden_state[B,L,D], "
             "pooled[B,P]); pooled is taken at the end token and projected when the source has text_projection. "
             "to_torch layouts: 'hf' (default), 'hf_text_model', 'openai'."),
    build=_build,
    init=lambda module, rng: module.init(rng, jnp.zeros((1, module.config.max_length), jnp.int32)),
    ignore=(r"text_model\.embeddings\.position_ids",),
    to_canonical=to_canonical,
    from_canonical=from_canonical,
))
