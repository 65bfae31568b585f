"""`whisper_encoder`: the Whisper audio encoder from transformers or openai-whisper checkpoints.

Canonical layout: transformers `WhisperEncoder` names without prefix (`conv1.weight`, `embed_positions.weight`,
`layers.{i}.self_attn.{q,k,v,out}_proj.*`, `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`,
`layer_norm.*`). Accepted layouts (the name `to_torch(layout=...)` takes to write them back):

- `"hf"`: the canonical names;
- `"hf_model"`: `encoder.`-prefixed (`WhisperModel`); `"hf_generation"`: `model.encoder.`-prefixed
  (`WhisperForConditionalGeneration`, the hub files);
- `"openai"`: openai-whisper `AudioEncoder` names (`conv1`, `conv2`, `positional_embedding`,
  `blocks.{i}.attn.{query,key,value,out}`, `attn_ln`, `mlp.0`, `mlp.2`, `mlp_ln`, `ln_post`);
  `"openai_model"`: the same `encoder.`-prefixed (a `Whisper` state dict; the released `.pt` files hold it under
  `model_state_dict`, next to `dims`).

Whole-model checkpoints are accepted: only the encoder keys are taken, the decoder (and `proj_out`) are set aside,
so a round trip gives back the encoder keys exactly. `config`: transformers `WhisperConfig.to_dict()`,
openai-whisper `dims`, a preset name (`"tiny"`, `"base"`, `"small"`, `"medium"`, `"large-v2"`, `"large-v3"`), a
`WhisperEncoderConfig`, or None (sizes from shapes, heads = width / 64).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxtalk.backbones.whisper import (
    WHISPER_PRESETS,
    WhisperEncoder,
    WhisperEncoderConfig,
    config_from_dict,
    config_from_state,
)
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import Kind, register

_PREFIXES = {"hf": "", "hf_model": "encoder.", "hf_generation": "model.encoder.", "openai": "",
             "openai_model": "encoder."}
LAYOUTS = tuple(_PREFIXES)
# openai-whisper -> transformers, by regex over un-prefixed keys.
_OPENAI_TO_HF = (
    (r"positional_embedding", r"embed_positions.weight"),
    (r"blocks\.(\d+)\.attn\.query\.", r"layers.\1.self_attn.q_proj."),
    (r"blocks\.(\d+)\.attn\.key\.", r"layers.\1.self_attn.k_proj."),
    (r"blocks\.(\d+)\.attn\.value\.", r"layers.\1.self_attn.v_proj."),
    (r"blocks\.(\d+)\.attn\.out\.", r"layers.\1.self_attn.out_proj."),
    (r"blocks\.(\d+)\.attn_ln\.", r"layers.\1.self_attn_layer_norm."),
    (r"blocks\.(\d+)\.mlp\.0\.", r"layers.\1.fc1."),
    (r"blocks\.(\d+)\.mlp\.2\.", r"layers.\1.fc2."),
    (r"blocks\.(\d+)\.mlp_ln\.", r"layers.\1.final_layer_norm."),
    (r"ln_post\.", r"layer_norm."),
)
_HF_TO_OPENAI = (
    (r"embed_positions\.weight", r"positional_embedding"),
    (r"layers\.(\d+)\.self_attn\.q_proj\.", r"blocks.\1.attn.query."),
    (r"layers\.(\d+)\.self_attn\.k_proj\.", r"blocks.\1.attn.key."),
    (r"layers\.(\d+)\.self_attn\.v_proj\.", r"blocks.\1.attn.value."),
    (r"layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.attn.out."),
    (r"layers\.(\d+)\.self_attn_layer_norm\.", r"blocks.\1.attn_ln."),
    (r"layers\.(\d+)\.fc1\.", r"blocks.\1.mlp.0."),
    (r"layers\.(\d+)\.fc2\.", r"blocks.\1.mlp.2."),
    (r"layers\.(\d+)\.final_layer_norm\.", r"blocks.\1.mlp_ln."),
    (r"layer_norm\.", r"ln_post."),
)


def _rename(key: str, table) -> str:
    for pattern, repl in table:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    return key


def to_canonical(state: StateDict) -> tuple[StateDict, str]:
    prefix = ""
    for candidate in ("model.encoder.", "encoder."):
        if any(k.startswith(candidate) for k in state):
            prefix = candidate
            break
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    openai = "positional_embedding" in state or any(k.startswith("blocks.") for k in state)
    if openai:
        state = {_rename(k, _OPENAI_TO_HF): v for k, v in state.items()}
        return state, "openai_model" if prefix else "openai"
    return state, {"": "hf", "encoder.": "hf_model", "model.encoder.": "hf_generation"}[prefix]


def from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout not in _PREFIXES:
        raise ValueError(f"whisper_encoder: unknown layout {layout!r}; choose one of {LAYOUTS}")
    if layout.startswith("openai"):
        state = {_rename(k, _HF_TO_OPENAI): v for k, v in state.items()}
    return {_PREFIXES[layout] + k: v for k, v in state.items()}


def resolve_config(config: Any, state: StateDict) -> WhisperEncoderConfig:
    if config is None:
        return config_from_state(state)
    if isinstance(config, WhisperEncoderConfig):
        return config
    if isinstance(config, str):
        if config not in WHISPER_PRESETS:
            raise ValueError(f"unknown whisper preset {config!r}; choose one of {sorted(WHISPER_PRESETS)}")
        return WHISPER_PRESETS[config]
    if isinstance(config, Mapping):
        return config_from_dict(config)
    raise TypeError(f"whisper_encoder config must be a dict, preset name, WhisperEncoderConfig or None, "
                    f"got {type(config)}")


def _build(config: Any, state: StateDict):
    cfg = resolve_config(config, state)
    return WhisperEncoder(cfg), cfg


register(Kind(
    name="whisper_encoder",
    summary=("Whisper audio encoder (transformers WhisperEncoder/WhisperModel or openai-whisper). "
             "apply({'params': p}, log_mel[B,T_mel,n_mels] channels-last, final_layer_norm=True) -> hidden states "
             "[L+1,B,T_mel/2,D] (embedding, layer outputs, the last after layer_norm as transformers; "
             "final_layer_norm=False: without, as openai-whisper include_embeddings). Features from "
             "jaxtalk.backbones.whisper.log_mel_spectrogram. to_torch layouts: 'hf' (default), 'hf_model', "
             "'hf_generation', 'openai', 'openai_model'."),
    build=_build,
    init=lambda module, rng: module.init(rng, jnp.zeros((1, 2 * module.config.max_positions, module.config.n_mels))),
    containers=("model_state_dict", "state_dict"),
    to_canonical=to_canonical,
    from_canonical=from_canonical,
))
