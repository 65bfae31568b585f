"""Kinds `style2talker_style_e`, `sadtalker_audio2exp` and `clip_vision` (Style2Talker's emotion stage).

- `style2talker_style_e`: the official Style-E `MetaModel` state dict (`input_process.*`, `sparse_process.*`,
  `output_process.*`, `embed_timestep.pe`, `mlp.motion_mlp.mlps.{l}.{conct (block 0 only), emb_fc, norm0, fc0,
  norm1, fc1}.*`). `checkpoints/Style-E/checkpoint.pth` is a plain state dict; wrapped files (`state_dict`,
  `model`, `model_state_dict`) and a `module.` prefix are accepted. `config`: None (sizes from shapes), a
  `StyleEConfig`, or the `MetaModel` constructor kwargs / training `args.json` dict.
- `sadtalker_audio2exp`: SadTalker `SimpleWrapperV2` (`audio_encoder.{0..12}.conv_block.{0,1}.*`, `mapping1.*`),
  as SadTalker's `auido2exp_00300-model.pth` (under `model`), its safetensors bundle (under `audio2exp.`) or
  Style2Talker's `AudioEncoder` (prefix `netG.`). BatchNorm running stats go to 'batch_stats';
  `num_batches_tracked` carries nothing. `config`: None (widths from shapes), or `{"width_scale": s}`.
- `clip_vision`: CLIP ViT image tower, transformers `CLIPVisionModelWithProjection` names (canonical, layout
  "hf") or OpenAI `clip` `visual.*` names (layout "openai": fused `in_proj`, `conv1`, `ln_pre`, `ln_post`, `proj`
  stored (in, out)). The text half of a full CLIP state dict (transformers `text_model.*`, `text_projection`,
  `logit_scale`; OpenAI non-`visual.` keys) is set aside — it is the `clip_text` kind's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtalk.backbones.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import Kind, register
from jaxtalk.style2talker.audio2exp import ENCODER_UNITS, MEL_STEP_SIZE, NUM_MELS, SimpleWrapperV2
from jaxtalk.style2talker.style_e import StyleE, StyleEConfig

# ---------------------------------------------------------------------------------------------------- Style-E

_BLOCK_FC0 = re.compile(r"mlp\.motion_mlp\.mlps\.(\d+)\.fc0\.weight")


def style_e_config_from_state(state: Mapping[str, np.ndarray]) -> StyleEConfig:
    """Sizes read off the checkpoint shapes."""
    need = ("input_process.weight", "sparse_process.weight", "embed_timestep.pe", "mlp.motion_mlp.mlps.0.conct.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"style2talker_style_e: cannot infer the sizes, the checkpoint lacks {missing}; "
                         "is this a Style-E MetaModel state dict?")
    latent, nfeats = state["input_process.weight"].shape
    layers = [int(m.group(1)) for k in state if (m := _BLOCK_FC0.fullmatch(k))]
    return StyleEConfig(
        nfeats=int(nfeats), latent_dim=int(latent), num_layers=max(layers) + 1 if layers else 0,
        sparse_dim=int(state["sparse_process.weight"].shape[1]),
        text_dim=int(state["mlp.motion_mlp.mlps.0.conct.weight"].shape[1] - 2 * latent),
        window=int(state["mlp.motion_mlp.mlps.0.fc0.weight"].shape[0]),
        max_timesteps=int(state["embed_timestep.pe"].shape[0]),
    )


def _style_e_build(config: Any, state: StateDict):
    if config is None:
        cfg = style_e_config_from_state(state)
    elif isinstance(config, StyleEConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = StyleEConfig.from_torch_kwargs(config)
        if "embed_timestep.pe" in state and "max_timesteps" not in config:
            cfg = StyleEConfig(**{**cfg.__dict__, "max_timesteps": int(state["embed_timestep.pe"].shape[0])})
    else:
        raise TypeError(f"style2talker_style_e config must be None, a StyleEConfig or a dict, got {type(config)}")
    return StyleE(cfg), cfg


def _style_e_init(module: StyleE, rng):
    c = module.config
    z = lambda d: jnp.zeros((1, c.window, d), jnp.float32)
    return module.init(rng, z(c.nfeats), jnp.zeros((1,), jnp.int32), z(c.sparse_dim), z(c.text_dim))


register(Kind(
    name="style2talker_style_e",
    summary=("Style2Talker Style-E denoiser (AGRoL DiffMLP over 3DMM expression windows). "
             "apply({'params': p}, x_t[B,T,64], timesteps[B] int, sparse[B,T,64], text[B,512] or [B,T,512]) -> "
             "x0_hat[B,T,64]; sampling: jaxtalk.style2talker.style_e.sample_windows / generate_expression."),
    build=_style_e_build,
    init=_style_e_init,
    containers=("state_dict", "model_state_dict", "model"),
))

# ---------------------------------------------------------------------------------------------------- audio2exp


def _audio2exp_build(config: Any, state: StateDict):
    if config is None:
        w0 = state.get("audio_encoder.0.conv_block.0.weight")
        if w0 is None:
            raise ValueError("sadtalker_audio2exp: the checkpoint lacks audio_encoder.0.conv_block.0.weight; "
                             "is this a SadTalker SimpleWrapperV2 (audio2exp netG) state dict?")
        scale = float(w0.shape[0]) / ENCODER_UNITS[0][0]
    elif isinstance(config, Mapping):
        unknown = set(config) - {"width_scale"}
        if unknown:
            raise ValueError(f"sadtalker_audio2exp config accepts only 'width_scale', got {sorted(unknown)}")
        scale = float(config.get("width_scale", 1.0))
    else:
        raise TypeError(f"sadtalker_audio2exp config must be None or {{'width_scale': s}}, got {type(config)}")
    return SimpleWrapperV2(width_scale=scale), {"width_scale": scale}


def _audio2exp_init(module: SimpleWrapperV2, rng):
    return module.init(rng, jnp.zeros((1, NUM_MELS, MEL_STEP_SIZE)), jnp.zeros((1, 64)), jnp.zeros((1,)))


register(Kind(
    name="sadtalker_audio2exp",
    summary=("SadTalker audio2exp SimpleWrapperV2 (Style2Talker's audio encoder). Returns variables "
             "{'params', 'batch_stats'}: apply(v, mels[N,80,16], ref[N,64], blink_ratio[N]) -> exp[N,64]; "
             "per clip: jaxtalk.style2talker.audio2exp.audio2exp(module, v, mels[B,T,80,16], ref[B,64], ratio[B,T])."),
    build=_audio2exp_build,
    init=_audio2exp_init,
    containers=("state_dict", "model", "audio2exp"),
    strip_prefixes=("module.", "netG."),
    ignore=(r"audio_encoder\.\d+\.conv_block\.1\.num_batches_tracked",),
))

# ---------------------------------------------------------------------------------------------------- CLIP vision

CLIP_VISION_LAYOUTS = ("hf", "openai")
_V = "vision_model."
_HF_SET_ASIDE = re.compile(r"text_model\..*|text_projection\.weight|logit_scale|vision_model\.embeddings\.position_ids")
_OAI_BLOCK = re.compile(r"visual\.transformer\.resblocks\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.(.+)")
_OAI_BLOCK_NAMES = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_OAI_TOP = {
    "visual.conv1.weight": _V + "embeddings.patch_embedding.weight",
    "visual.class_embedding": _V + "embeddings.class_embedding",
    "visual.positional_embedding": _V + "embeddings.position_embedding.weight",
    "visual.ln_pre.weight": _V + "pre_layrnorm.weight", "visual.ln_pre.bias": _V + "pre_layrnorm.bias",
    "visual.ln_post.weight": _V + "post_layernorm.weight", "visual.ln_post.bias": _V + "post_layernorm.bias",
}


def _openai_to_hf(state: StateDict) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith("visual."):
            continue  # text tower, logit_scale, input_resolution, ...: the clip_text kind's
        if key in _OAI_TOP:
            out[_OAI_TOP[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = np.ascontiguousarray(np.asarray(value).T)
        elif (m := _OAI_BLOCK.fullmatch(key)) is not None:
            layer, rest = f"{_V}encoder.layers.{m.group(1)}.", m.group(2)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                leaf = rest.rsplit("_", 1)[-1]
                if value.shape[0] % 3:
                    raise ValueError(f"{key}: fused q/k/v of length {value.shape[0]} does not split in three")
                for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(np.asarray(value), 3, axis=0)):
                    out[f"{layer}self_attn.{name}.{leaf}"] = np.ascontiguousarray(part)
                continue
            module, _, leaf = rest.rpartition(".")
            out[f"{layer}{_OAI_BLOCK_NAMES.get(module, module)}.{leaf}"] = value
        else:
            out[key] = value  # reported by the strict check
    return out


def _hf_to_openai(state: StateDict) -> StateDict:
    top = {v: k for k, v in _OAI_TOP.items()}
    block = {v: k for k, v in _OAI_BLOCK_NAMES.items()}
    out: StateDict = {}
    fused: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = np.ascontiguousarray(value.T)
        elif (m := _HF_LAYER.fullmatch(key)) is not None:
            layer, rest = f"visual.transformer.resblocks.{m.group(1)}.", m.group(2)
            module, _, leaf = rest.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault((layer, leaf), {})[module[-6]] = value
                continue
            out[f"{layer}{block.get(module, module)}.{leaf}"] = value
        else:
            raise ValueError(f"clip_vision: {key} has no OpenAI name")
    for (layer, leaf), parts in fused.items():
        out[f"{layer}attn.in_proj_{leaf}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


def _clip_vision_to_canonical(state: StateDict) -> tuple[StateDict, str]:
    if any(k.startswith("visual.") for k in state):
        return _openai_to_hf(state), "openai"
    return {k: v for k, v in state.items() if not _HF_SET_ASIDE.fullmatch(k)}, "hf"


def _clip_vision_from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout == "hf":
        return dict(state)
    if layout == "openai":
        return _hf_to_openai(state)
    raise ValueError(f"clip_vision: unknown layout {layout!r}; choose one of {CLIP_VISION_LAYOUTS}")


def clip_vision_config_from_state(state: Mapping[str, np.ndarray]) -> CLIPVisionConfig:
    """Sizes from the (canonical) shapes; heads = width / 64 as in every OpenAI ViT."""
    key = _V + "embeddings.patch_embedding.weight"
    if key not in state or "visual_projection.weight" not in state:
        raise ValueError("clip_vision: cannot infer the sizes (no patch embedding / visual projection); "
                         "is this a CLIP vision tower with projection?")
    width, channels, patch, _ = state[key].shape
    num_pos = state[_V + "embeddings.position_embedding.weight"].shape[0]
    grid = int(round((num_pos - 1) ** 0.5))
    layers = [int(m.group(1)) for k in state if (m := _HF_LAYER.fullmatch(k))]
    return CLIPVisionConfig(
        image_size=grid * int(patch), patch_size=int(patch), hidden_size=int(width),
        intermediate_size=int(state[_V + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=max(layers) + 1, num_attention_heads=max(1, int(width) // 64),
        projection_dim=int(state["visual_projection.weight"].shape[0]), num_channels=int(channels),
    )


def _clip_vision_build(config: Any, state: StateDict):
    if config is None:
        cfg = clip_vision_config_from_state(state)
    elif isinstance(config, CLIPVisionConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = CLIPVisionConfig.from_hf(config)
    else:
        raise TypeError(f"clip_vision config must be None, a CLIPVisionConfig or a transformers config dict, "
                        f"got {type(config)}")
    return CLIPVisionModelWithProjection(cfg), cfg


def _clip_vision_init(module: CLIPVisionModelWithProjection, rng):
    c = module.config
    return module.init(rng, jnp.zeros((1, c.image_size, c.image_size, c.num_channels), jnp.float32))


register(Kind(
    name="clip_vision",
    summary=("CLIP ViT image tower with projection (transformers CLIPVisionModelWithProjection or OpenAI clip "
             "visual.*). apply({'params': p}, pixel_values[B,H,W,3] CLIP-normalised) -> (last_hidden_state[B,N+1,D], "
             "image_embeds[B,P]); jaxtalk.backbones.clip_vision.preprocess makes pixels from uint8 frames. "
             "to_torch layouts: 'hf' (default), 'openai'."),
    build=_clip_vision_build,
    init=_clip_vision_init,
    to_canonical=_clip_vision_to_canonical,
    from_canonical=_clip_vision_from_canonical,
))
