"""`wav2vec2`: transformers `Wav2Vec2Model` weights (base / base-960h as V-Express and Hallo use, large-lv60).

Canonical layout: `Wav2Vec2Model` names without prefix, with the positional conv's weight norm stored as
`encoder.pos_conv_embed.conv.weight_g` (1, 1, K) / `weight_v` (D, D/groups, K), as in the hub files. Accepted
layouts (the name `to_torch(layout=...)` takes to write them back):

- `"hf"`: the canonical names;
- `"hf_parametrizations"`: transformers 5 / torch parametrisation names,
  `...conv.parametrizations.weight.original0` (g) and `original1` (v);
- `"hf_prefixed"`, `"hf_prefixed_parametrizations"`: the same under `wav2vec2.`, as in `Wav2Vec2ForCTC`
  (base-960h) and `Wav2Vec2ForPreTraining` files. Keys outside the prefix (`lm_head.*`, `quantizer.*`,
  `project_q.*`, `project_hid.*`, ...) are heads and are set aside, so the round trip gives back the encoder keys.

`config`: transformers `Wav2Vec2Config.to_dict()`, a preset (`"base"`, `"large-lv60"`), a `Wav2Vec2Config`, or None
(sizes from shapes; see `jaxtalk.backbones.wav2vec2.config_from_state` for what shapes cannot tell).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtalk.backbones.wav2vec2 import (
    WAV2VEC2_PRESETS,
    Wav2Vec2Config,
    Wav2Vec2Model,
    config_from_hf,
    config_from_state,
    receptive_field,
)
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import Kind, register

LAYOUTS = ("hf", "hf_parametrizations", "hf_prefixed", "hf_prefixed_parametrizations")
_PREFIX = "wav2vec2."
_POS = "encoder.pos_conv_embed.conv."
_PARAMETRIZED = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


def to_canonical(state: StateDict) -> tuple[StateDict, str]:
    prefixed = any(k.startswith(_PREFIX) for k in state)
    if prefixed:
        state = {k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)}
    parametrized = False
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(_POS) and key[len(_POS):] in _PARAMETRIZED:
            parametrized = True
            key = _POS + _PARAMETRIZED[key[len(_POS):]]
        out[key] = value
    layout = "hf_prefixed" if prefixed else "hf"
    return out, layout + ("_parametrizations" if parametrized else "")


def from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout not in LAYOUTS:
        raise ValueError(f"wav2vec2: unknown layout {layout!r}; choose one of {LAYOUTS}")
    renamed = {v: k for k, v in _PARAMETRIZED.items()}
    out: StateDict = {}
    for key, value in state.items():
        if layout.endswith("_parametrizations") and key.startswith(_POS) and key[len(_POS):] in renamed:
            key = _POS + renamed[key[len(_POS):]]
        out[(_PREFIX if layout.startswith("hf_prefixed") else "") + key] = value
    return out


def resolve_config(config: Any, state: StateDict) -> Wav2Vec2Config:
    if config is None:
        return config_from_state(state)
    if isinstance(config, str):
        if config not in WAV2VEC2_PRESETS:
            raise ValueError(f"unknown wav2vec2 preset {config!r}; choose one of {sorted(WAV2VEC2_PRESETS)}")
        config = WAV2VEC2_PRESETS[config]
    elif isinstance(config, Mapping):
        config = config_from_hf(config)
    elif not isinstance(config, Wav2Vec2Config):
        raise TypeError(f"wav2vec2 config must be a dict, preset name, Wav2Vec2Config or None, got {type(config)}")
    # The SpecAugment vector is a training leftover: follow the checkpoint rather than the mask probabilities.
    return dataclasses.replace(config, masked_spec_embed="masked_spec_embed" in state)


def _build(config: Any, state: StateDict):
    cfg = resolve_config(config, state)
    return Wav2Vec2Model(cfg), cfg


_G = r"encoder\.pos_conv_embed\.conv\.weight_g"
_V = r"encoder\.pos_conv_embed\.conv\.weight_v"

register(Kind(
    name="wav2vec2",
    summary=("wav2vec 2.0 encoder (transformers Wav2Vec2Model; base post-LN or stable-layer-norm). "
             "apply({'params': p}, input_values[B,N] 16 kHz (normalize_waveform first when the checkpoint expects "
             "it), output='hidden_states') -> hidden states [L+1,B,T,D] at 50 Hz as transformers "
             "output_hidden_states; output='last_hidden_state' -> [B,T,D]. to_torch layouts: 'hf' (default), "
             "'hf_parametrizations', 'hf_prefixed', 'hf_prefixed_parametrizations'."),
    build=_build,
    init=lambda module, rng: module.init(rng, jnp.zeros((1, receptive_field(module.config)))),
    to_canonical=to_canonical,
    from_canonical=from_canonical,
    leaf_overrides=(
        (_G, lambda g: np.ascontiguousarray(np.reshape(g, (-1,))),
         lambda g: np.ascontiguousarray(np.reshape(g, (1, 1, -1)))),
        (_V, lambda v: np.ascontiguousarray(np.transpose(v, (2, 1, 0))),
         lambda v: np.ascontiguousarray(np.transpose(v, (2, 1, 0)))),
    ),
))
