"""clip_text parity with transformers CLIPTextModel[WithProjection] and the OpenAI clip layout; exact round trips."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from jaxtalk import interop
from jaxtalk.backbones.clip_text import CLIP_TEXT_PRESETS, CLIPTextEncoder
from jaxtalk.interop.kinds.clip import resolve_config
from tests.parity import assert_close

VOCAB = 120
EOS = 110


def _config(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, projection_dim=24, bos_token_id=109, eos_token_id=EOS, pad_token_id=EOS)
    base.update(kw)
    return CLIPTextConfig(**base)


def _randomise(model, seed):
    """Re-randomise every tensor (LayerNorms included) so a missing scale or bias shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def _ids(batch, length, *, eos_at, high_ids=False, seed=0):
    """Random ids with the end token at `eos_at[b]` and the end token as padding after it."""
    rng = np.random.default_rng(seed)
    top = VOCAB if high_ids else EOS  # high_ids: ids above the end token, where argmax and eos pooling differ
    ids = rng.integers(1, top, (batch, length))
    ids[ids == EOS] = 1
    for b, pos in enumerate(eos_at):
        ids[b, pos:] = EOS
    return ids


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _assert_exact(back, sd):
    assert set(back) == set(sd), (sorted(set(back) ^ set(sd)))[:5]
    for k in sd:
        assert back[k].shape == sd[k].shape and np.array_equal(back[k], sd[k]), k


CASES = {
    # legacy eos_token_id == 2 -> argmax pooling (OpenAI / SD1.5 / clip-vit-large configs), projection, quick_gelu
    "proj_quick_gelu_argmax": (CLIPTextModelWithProjection, dict(eos_token_id=2), False),
    # fixed eos id -> first-eos pooling; ids above the eos id so the rules would disagree; gelu; no projection
    "plain_gelu_eos": (CLIPTextModel, dict(hidden_act="gelu", hidden_size=48, num_attention_heads=3,
                                           intermediate_size=80, num_hidden_layers=3), True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_transformers(case):
    cls, overrides, high_ids = CASES[case]
    cfg = _config(**overrides)
    model = _randomise(cls(cfg), seed=1)
    sd = _state(model)
    module, params = interop.from_torch("clip_text", sd, cfg.to_dict())
    ids = _ids(3, 16, eos_at=[5, 15, 9], high_ids=high_ids)
    hidden, pooled = jax.jit(module.apply)({"params": params}, jnp.asarray(ids))
    with torch.no_grad():
        out = model(torch.tensor(ids))
    ref_pooled = out.text_embeds if cls is CLIPTextModelWithProjection else out.pooler_output
    assert_close(hidden, out.last_hidden_state.numpy(), name=f"clip_text[{case}] last_hidden_state")
    assert_close(pooled, ref_pooled.numpy(), name=f"clip_text[{case}] pooled")
    layout = "hf" if cls is CLIPTextModelWithProjection else "hf_text_model"
    if cls is CLIPTextModelWithProjection:  # bf16 compute runs and stays near the float32 result
        half = jax.jit(CLIPTextEncoder(module.config, dtype=jnp.bfloat16).apply)({"params": params}, ids)[1]
        assert half.dtype == jnp.bfloat16
        err = float(jnp.max(jnp.abs(half.astype(jnp.float32) - pooled)))
        assert err < 0.05 * float(jnp.max(jnp.abs(pooled))), err
    _assert_exact(interop.to_torch("clip_text", params, layout=layout), sd)


def test_attention_mask_matches_transformers():
    cfg = _config(eos_token_id=2)
    model = _randomise(CLIPTextModelWithProjection(cfg), seed=2)
    module, params = interop.from_torch("clip_text", _state(model), cfg.to_dict())
    ids = _ids(2, 12, eos_at=[4, 8])
    mask = np.zeros_like(ids)
    mask[0, :5], mask[1, :9] = 1, 1
    hidden, pooled = jax.jit(module.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    with torch.no_grad():
        out = model(torch.tensor(ids), attention_mask=torch.tensor(mask))
    assert_close(hidden, out.last_hidden_state.numpy(), name="clip_text masked last_hidden_state")
    assert_close(pooled, out.text_embeds.numpy(), name="clip_text masked pooled")


def _openai_state(sd, width):
    """The OpenAI clip names for a transformers CLIPTextModelWithProjection state dict, plus image-tower keys."""
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T.copy(),
    }
    n_layers = 1 + max(int(k.split(".")[3]) for k in sd if ".layers." in k)
    for i in range(n_layers):
        hf, oa = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{oa}attn.in_proj_{leaf}"] = np.concatenate(
                [sd[f"{hf}self_attn.{n}_proj.{leaf}"] for n in "qkv"], axis=0)
            out[f"{oa}attn.out_proj.{leaf}"] = sd[f"{hf}self_attn.out_proj.{leaf}"]
            out[f"{oa}ln_1.{leaf}"] = sd[f"{hf}layer_norm1.{leaf}"]
            out[f"{oa}ln_2.{leaf}"] = sd[f"{hf}layer_norm2.{leaf}"]
            out[f"{oa}mlp.c_fc.{leaf}"] = sd[f"{hf}mlp.fc1.{leaf}"]
            out[f"{oa}mlp.c_proj.{leaf}"] = sd[f"{hf}mlp.fc2.{leaf}"]
    return out


def test_openai_layout_imports_and_roundtrips():
    cfg = _config(eos_token_id=2, hidden_size=128, num_attention_heads=2, intermediate_size=96)
    model = _randomise(CLIPTextModelWithProjection(cfg), seed=3)
    text = _openai_state(_state(model), 128)
    full = dict(text, **{"visual.conv1.weight": np.zeros((4, 3, 2, 2), np.float32),
                         "visual.proj": np.zeros((4, 24), np.float32), "logit_scale": np.float32(4.6)})
    module, params = interop.from_torch("clip_text", full)  # config inferred from shapes: heads = 128 / 64
    assert module.config.heads == 2 and module.config.pooling == "argmax" and module.config.projection_dim == 24
    ids = _ids(2, 16, eos_at=[6, 11])
    hidden, pooled = jax.jit(module.apply)({"params": params}, jnp.asarray(ids))
    with torch.no_grad():
        out = model(torch.tensor(ids))
    assert_close(hidden, out.last_hidden_state.numpy(), name="clip_text[openai] last_hidden_state")
    assert_close(pooled, out.text_embeds.numpy(), name="clip_text[openai] pooled")
    _assert_exact(interop.to_torch("clip_text", params, layout="openai"), text)
    _assert_exact(interop.to_torch("clip_text", params), _state(model))


def test_strict_errors_name_keys():
    cfg = _config()
    sd = _state(CLIPTextModelWithProjection(cfg))
    del sd["text_model.encoder.layers.1.mlp.fc2.bias"]
    sd["text_model.encoder.layers.0.extra.weight"] = np.zeros(3, np.float32)
    sd["text_model.final_layer_norm.weight"] = np.zeros(7, np.float32)
    with pytest.raises(interop.ConversionError) as e:
        interop.from_torch("clip_text", sd, cfg.to_dict())
    msg = str(e.value)
    assert "missing: text_model.encoder.layers.1.mlp.fc2.bias" in msg
    assert "unexpected: text_model.encoder.layers.0.extra.weight" in msg
    assert "mis-shaped: text_model.final_layer_norm.weight (7,)" in msg
    with pytest.raises(ValueError, match="unknown layout"):
        interop.to_torch("clip_text", interop.from_torch("clip_text", _state(CLIPTextModelWithProjection(cfg)),
                                                         cfg.to_dict())[1], layout="open_clip")


def test_presets():
    assert CLIP_TEXT_PRESETS["ViT-B/32"].width == 512 and CLIP_TEXT_PRESETS["ViT-B/32"].heads == 8
    assert CLIP_TEXT_PRESETS["ViT-L/14"].width == 768 and CLIP_TEXT_PRESETS["ViT-L/14"].heads == 12
    assert CLIP_TEXT_PRESETS["ViT-B/32"].projection_dim == 512 and CLIP_TEXT_PRESETS["ViT-L/14"].projection_dim == 768


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ViT-B/32", "ViT-L/14"])
def test_full_size_parity(preset):
    p = CLIP_TEXT_PRESETS[preset]
    cfg = CLIPTextConfig(hidden_size=p.width, num_attention_heads=p.heads, num_hidden_layers=p.layers,
                         intermediate_size=p.mlp_dim, projection_dim=p.projection_dim, eos_token_id=2)
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(cfg).eval()
    sd = _state(model)
    module, params = interop.from_torch("clip_text", sd, preset)
    assert dataclasses.replace(resolve_config(None, sd)) == p
    ids = np.full((2, 77), 49407)
    ids[:, 0] = 49406
    ids[0, 1:9] = np.arange(320, 328)
    ids[1, 1:30] = np.arange(1000, 1029)
    hidden, pooled = jax.jit(module.apply)({"params": params}, jnp.asarray(ids))
    with torch.no_grad():
        out = model(torch.tensor(ids))
    assert_close(hidden, out.last_hidden_state.numpy(), name=f"clip_text[{preset}] last_hidden_state")
    assert_close(pooled, out.text_embeds.numpy(), name=f"clip_text[{preset}] pooled")
    _assert_exact(interop.to_torch("clip_text", params), sd)
