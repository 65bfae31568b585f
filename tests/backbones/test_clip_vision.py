"""CLIP ViT image tower against transformers (tiny random config), OpenAI layout, full-CLIP checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxtalk import interop
from jaxtalk.backbones import clip_vision
from tests.parity import assert_close

TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            patch_size=8, projection_dim=16)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**TINY)).eval()
    with torch.no_grad():  # LayerNorms start at (1, 0): randomise them so a swapped norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return model


def _pixels(n=2, size=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_matches_transformers(hf_model):
    module, params = interop.from_torch("clip_vision", _state(hf_model), config=hf_model.config.to_dict())
    pixels = _pixels()
    hidden, embeds = jax.jit(module.apply)({"params": params}, pixels)
    with torch.no_grad():
        ref = hf_model(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert_close(hidden, ref.last_hidden_state.numpy(), name="clip_vision last_hidden_state")
    assert_close(embeds, ref.image_embeds.numpy(), name="clip_vision image_embeds")
    back = interop.to_torch("clip_vision", params)
    sd = _state(hf_model)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


def _to_openai(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers -> OpenAI `visual.*` names, written for the test from OpenAI's module layout."""
    v = "vision_model."
    out = {
        "visual.conv1.weight": sd[v + "embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd[v + "embeddings.class_embedding"],
        "visual.positional_embedding": sd[v + "embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": sd[v + "pre_layrnorm.weight"], "visual.ln_pre.bias": sd[v + "pre_layrnorm.bias"],
        "visual.ln_post.weight": sd[v + "post_layernorm.weight"], "visual.ln_post.bias": sd[v + "post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].T.copy(),
    }
    for i in range(TINY["num_hidden_layers"]):
        h, o = f"{v}encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{o}attn.in_proj_{leaf}"] = np.concatenate(
                [sd[f"{h}self_attn.{p}_proj.{leaf}"] for p in "qkv"], axis=0)
            for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                                 ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[f"{o}{ours}.{leaf}"] = sd[f"{h}{theirs}.{leaf}"]
    return out


def test_openai_layout_round_trip_and_full_checkpoint(hf_model):
    sd = _state(hf_model)
    openai = _to_openai(sd)
    cfg = hf_model.config.to_dict()
    module, params = interop.from_torch("clip_vision", openai, config=cfg)
    ref_params = interop.from_torch("clip_vision", sd, config=cfg)[1]
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, ref_params))
    back = interop.to_torch("clip_vision", params, layout="openai")
    assert set(back) == set(openai)
    for k in openai:
        np.testing.assert_array_equal(back[k], openai[k])
    # A full OpenAI CLIP state dict: the text half is set aside (the clip_text kind's).
    full = {**openai, "token_embedding.weight": np.zeros((10, 4), np.float32), "logit_scale": np.zeros(()),
            "transformer.resblocks.0.ln_1.weight": np.zeros(4, np.float32), "text_projection": np.zeros((4, 4))}
    params_full = interop.from_torch("clip_vision", full, config=cfg)[1]
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params_full, ref_params))


def test_full_transformers_clipmodel_checkpoint():
    torch.manual_seed(1)
    text = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=50, max_position_embeddings=12, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=TINY,
                                                           projection_dim=16)).eval()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    module, params = interop.from_torch("clip_vision", sd, config=model.config.to_dict())
    pixels = _pixels(seed=2)
    _, embeds = module.apply({"params": params}, pixels)
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
    ref = getattr(ref, "pooler_output", ref)
    assert_close(embeds, ref.numpy(), name="clip_vision from full CLIPModel")


def test_config_inferred_from_shapes():
    cfg = clip_vision.CLIPVisionConfig(hidden_size=128, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=16, projection_dim=8)
    module = clip_vision.CLIPVisionModelWithProjection(cfg)
    params = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    sd = interop.to_torch("clip_vision", params)
    inferred, _ = interop.from_torch("clip_vision", sd)
    assert inferred.config == cfg  # heads = width / 64


def test_preprocess_normalises_and_crops():
    frames = np.full((2, 40, 60, 3), 128, np.uint8)
    frames[..., 1] = 255
    px = clip_vision.preprocess(frames, image_size=32)
    assert px.shape == (2, 32, 32, 3)
    expected = (np.array([128 / 255, 1.0, 128 / 255]) - np.array(clip_vision.CLIP_MEAN)) / np.array(clip_vision.CLIP_STD)
    np.testing.assert_allclose(np.asarray(px), np.broadcast_to(expected, px.shape), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="expected RGB frames"):
        clip_vision.preprocess(np.zeros((4, 4, 3), np.uint8))


def test_bad_pixel_shape(hf_model):
    module, params = interop.from_torch("clip_vision", _state(hf_model), config=hf_model.config.to_dict())
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, 32, 32, 3\) NHWC"):
        module.apply({"params": params}, np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.slow
def test_vit_b32_full_size_matches_transformers():
    torch.manual_seed(3)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(projection_dim=512)).eval()
    module, params = interop.from_torch("clip_vision", _state(model))  # sizes inferred: ViT-B/32
    assert module.config == clip_vision.CLIPVisionConfig()
    pixels = _pixels(n=1, size=224, seed=4)
    _, embeds = jax.jit(module.apply)({"params": params}, pixels)
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2)).image_embeds
    assert_close(embeds, ref.numpy(), name="clip_vision ViT-B/32 image_embeds")
