"""--vae / --audio-encoder given as a model id: resolved offline from a Hugging Face cache that transformers'
save_pretrained filled, down to the weights file and config the importer reads."""

from __future__ import annotations

import pytest

from jaxtalk.interop.hf_cache import resolve_pretrained
from jaxtalk.svp.loading import _weights_in


def test_model_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                      num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, vocab_size=8)
    repo = tmp_path / "hub" / "models--acme--tiny-wav2vec2"
    snap = repo / "snapshots" / "0123abc"
    transformers.Wav2Vec2Model(cfg).save_pretrained(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    folder = resolve_pretrained("acme/tiny-wav2vec2", "--audio-encoder")
    assert folder == snap
    weights, config = _weights_in(folder)
    assert weights.name == "model.safetensors" and config["hidden_size"] == 16
    assert resolve_pretrained(str(snap)) == snap  # a local folder is taken as it is
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        resolve_pretrained("acme/other", "--vae")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_pretrained("./nowhere/x/y.bin", "--vae")


def test_text_encoder_from_the_cache_replaces_style2talkers_clip(tmp_path, monkeypatch):
    """--text-encoder: a CLIPTextModelWithProjection saved by transformers into a temporary HF cache is found by
    id, replaces the checkpoint's CLIP text tower, and gives transformers' text_embeds; a tower of the wrong
    width is one clear error."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    import numpy as np

    from jaxtalk import config
    from jaxtalk.style2talker.config import Style2TalkerConfig
    from jaxtalk.style2talker.loading import with_text_encoder
    from jaxtalk.style2talker.models import ModelLoadError, Style2TalkerModels

    def cache(name, projection):
        cfg = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=24, intermediate_size=48,
                                          num_hidden_layers=1, num_attention_heads=2, projection_dim=projection,
                                          max_position_embeddings=77, eos_token_id=49407)
        torch.manual_seed(0)
        model = transformers.CLIPTextModelWithProjection(cfg).eval()
        snap = tmp_path / "hub" / f"models--acme--{name}" / "snapshots" / "abc"
        model.save_pretrained(snap)
        (snap.parents[1] / "refs").mkdir()
        (snap.parents[1] / "refs" / "main").write_text("abc")
        return model

    model = cache("tiny-clip", 16)
    cache("wide-clip", 20)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    bare = Style2TalkerModels(config.load("style2talker_tiny", cls=Style2TalkerConfig), {}, {})
    models = with_text_encoder(bare, "acme/tiny-clip")
    assert models.config.clip.width == 24 and "text encoder acme/tiny-clip" in models.source
    ids = np.full((1, 77), 49407, np.int64)
    ids[0, :4] = [49406, 320, 1125, 49407]
    _, pooled = models.modules["clip_text"].apply({"params": models.params["clip_text"]}, ids.astype(np.int32))
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids)).text_embeds.numpy()
    np.testing.assert_allclose(np.asarray(pooled), want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    with pytest.raises(ModelLoadError, match="text_dim"):
        with_text_encoder(bare, "acme/wide-clip")


def test_vae_from_the_cache_loads_as_vexpress_does(tmp_path, monkeypatch):
    """--vae acme/tiny-vae: a diffusers AutoencoderKL saved with save_pretrained into a temporary HF cache is
    resolved offline and read strictly (`sd_vae`) with its config.json, the way `from_vexpress` reads it."""
    diffusers = pytest.importorskip("diffusers")
    from jaxtalk import interop

    vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                                  layers_per_block=1, sample_size=32)
    snap = tmp_path / "hub" / "models--acme--tiny-vae" / "snapshots" / "f00d"
    vae.save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("f00d")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    weights, config = _weights_in(resolve_pretrained("acme/tiny-vae", "--vae"))
    assert weights.name == "diffusion_pytorch_model.safetensors" and config["latent_channels"] == 4
    _, params = interop.from_torch("sd_vae", weights, config=config)
    n_ours = sum(int(p.size) for p in __import__("jax").tree.leaves(params))
    assert n_ours == sum(int(p.numel()) for p in vae.parameters())
