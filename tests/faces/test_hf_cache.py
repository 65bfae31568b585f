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
