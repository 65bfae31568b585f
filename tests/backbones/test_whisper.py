"""whisper_encoder parity with transformers WhisperEncoder / WhisperFeatureExtractor; openai-whisper layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from jaxtalk import interop
from jaxtalk.backbones.audio_features import (
    as_tokens,
    frame_windows,
    svp_audio_features,
    whisper_audio_states,
)
from jaxtalk.backbones.whisper import WHISPER_PRESETS, log_mel_spectrogram, mel_filters
from tests.parity import assert_close


def _speechlike(seconds, seed=0):
    """Harmonic tone with a wandering pitch, an envelope and noise: a broad, speech-like spectrum."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * envelope * voiced + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def test_mel_filters_match_transformers():
    fe = WhisperFeatureExtractor()
    assert_close(mel_filters(80), fe.mel_filters, name="whisper mel filters")
    fe128 = WhisperFeatureExtractor(feature_size=128)
    assert_close(mel_filters(128), fe128.mel_filters, name="whisper mel filters (128)")


@pytest.mark.parametrize("seconds", [7.3, 33.0])
def test_log_mel_matches_feature_extractor(seconds):
    audio = _speechlike(seconds)
    ref = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np").input_features
    got = log_mel_spectrogram(audio)
    assert got.shape == (1, 3000, 80)
    assert_close(got, ref.transpose(0, 2, 1), name=f"whisper log-mel {seconds}s")


def test_log_mel_batch_is_per_utterance():
    batch = [_speechlike(4.0, seed=1), 0.01 * _speechlike(4.0, seed=2)]
    ref = WhisperFeatureExtractor()(batch, sampling_rate=16000, return_tensors="np").input_features
    assert_close(log_mel_spectrogram(np.stack(batch)), ref.transpose(0, 2, 1), name="whisper log-mel batch")
    with pytest.raises(ValueError, match="16000 Hz"):
        log_mel_spectrogram(batch[0], sampling_rate=22050)


def _whisper(seed, **kw):
    base = dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=8,
                max_source_positions=10, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
                vocab_size=50, max_target_positions=8, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                decoder_start_token_id=1)
    base.update(kw)
    cfg = WhisperConfig(**base)
    torch.manual_seed(seed)
    model = WhisperModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # re-randomise LayerNorms and biases too; embed_positions stays the sinusoid table
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue
            centre = 1.0 if "layer_norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
    return cfg, model


def _reference_states(model, x):
    """transformers' hidden states, and the last layer's output before layer_norm (via a hook)."""
    raw = {}
    hook = model.encoder.layers[-1].register_forward_hook(lambda m, i, o: raw.update(out=o))
    with torch.no_grad():
        out = model.encoder(torch.from_numpy(x), output_hidden_states=True)
    hook.remove()
    raw_out = raw["out"][0] if isinstance(raw["out"], tuple) else raw["out"]
    return np.stack([h.numpy() for h in out.hidden_states]), raw_out.numpy(), out.last_hidden_state.numpy()


def _sd(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _assert_exact(back, sd):
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))[:5]
    for k in sd:
        assert np.array_equal(back[k], sd[k]), k


CONFIGS = {
    "d16_l2": dict(),
    "d24_l3": dict(d_model=24, encoder_layers=3, encoder_attention_heads=3, encoder_ffn_dim=96, num_mel_bins=12,
                   max_source_positions=12),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encoder_parity_all_states(name):
    cfg, model = _whisper(3, **CONFIGS[name])
    x = np.random.default_rng(0).standard_normal((2, cfg.num_mel_bins, 2 * cfg.max_source_positions))
    x = x.astype(np.float32)
    ref, raw_last, last = _reference_states(model, x)
    sd = _sd(model)
    module, params = interop.from_torch("whisper_encoder", sd, cfg.to_dict())
    both = jax.jit(lambda p, f: (module.apply({"params": p}, f), module.apply({"params": p}, f,
                                                                              final_layer_norm=False)))
    states, no_ln = both(params, jnp.asarray(x.transpose(0, 2, 1)))
    assert states.shape == (cfg.encoder_layers + 1, 2, cfg.max_source_positions, cfg.d_model)
    assert_close(states, ref, name=f"whisper_encoder[{name}] hidden states")
    assert_close(states[-1], last, name=f"whisper_encoder[{name}] last_hidden_state")
    assert_close(no_ln[:-1], ref[:-1], name=f"whisper_encoder[{name}] states without ln_post")
    assert_close(no_ln[-1], raw_last, name=f"whisper_encoder[{name}] last layer before ln_post")
    encoder_keys = {k: v for k, v in sd.items() if k.startswith("encoder.")}
    _assert_exact(interop.to_torch("whisper_encoder", params, layout="hf_model"), encoder_keys)
    _assert_exact(interop.to_torch("whisper_encoder", params), _sd(model.encoder))


def _openai_encoder_names(hf):
    """openai-whisper AudioEncoder names for a transformers WhisperEncoder state dict."""
    out = {}
    for key, value in hf.items():
        parts = key.split(".")
        if key == "embed_positions.weight":
            out["positional_embedding"] = value
        elif parts[0] == "layer_norm":
            out["ln_post." + parts[1]] = value
        elif parts[0] == "layers":
            i, rest = parts[1], ".".join(parts[2:])
            rest = (rest.replace("self_attn.q_proj", "attn.query").replace("self_attn.k_proj", "attn.key")
                    .replace("self_attn.v_proj", "attn.value").replace("self_attn.out_proj", "attn.out")
                    .replace("self_attn_layer_norm", "attn_ln").replace("final_layer_norm", "mlp_ln")
                    .replace("fc1", "mlp.0").replace("fc2", "mlp.2"))
            out[f"blocks.{i}.{rest}"] = value
        else:
            out[key] = value
    return out


def test_openai_layouts_and_full_checkpoint(tmp_path):
    cfg, model = _whisper(5, **CONFIGS["d24_l3"])
    openai = _openai_encoder_names(_sd(model.encoder))
    assert "blocks.2.mlp.2.weight" in openai and "blocks.0.attn.key.weight" in openai
    module, params = interop.from_torch("whisper_encoder", openai, cfg.to_dict())
    _assert_exact(interop.to_torch("whisper_encoder", params, layout="openai"), openai)
    # A full openai-whisper file: {dims, model_state_dict: {encoder.*, decoder.*}}, config from dims.
    full = {f"encoder.{k}": torch.from_numpy(v) for k, v in openai.items()}
    full["decoder.token_embedding.weight"] = torch.zeros(50, 24)
    full["decoder.blocks.0.attn.query.weight"] = torch.zeros(24, 24)
    dims = dict(n_mels=12, n_audio_ctx=12, n_audio_state=24, n_audio_head=3, n_audio_layer=3, n_vocab=50,
                n_text_ctx=8, n_text_state=24, n_text_head=3, n_text_layer=1)
    torch.save({"dims": dims, "model_state_dict": full}, tmp_path / "tiny.pt")
    module2, params2 = interop.from_torch("whisper_encoder", tmp_path / "tiny.pt", dims)
    assert module2.config == module.config
    x = np.random.default_rng(1).standard_normal((1, 24, 12)).astype(np.float32)
    ref, _, _ = _reference_states(model, x.transpose(0, 2, 1).copy())
    assert_close(jax.jit(module2.apply)({"params": params2}, jnp.asarray(x)), ref, name="whisper_encoder[openai]")
    _assert_exact(interop.to_torch("whisper_encoder", params2, layout="openai_model"),
                  {f"encoder.{k}": v for k, v in openai.items()})
    # transformers WhisperForConditionalGeneration names (model.encoder.*, decoder and proj_out set aside)
    gen = {f"model.{k}": v for k, v in _sd(model).items()}
    gen["proj_out.weight"] = np.zeros((50, 24), np.float32)
    _, params3 = interop.from_torch("whisper_encoder", gen, cfg.to_dict())
    _assert_exact(interop.to_torch("whisper_encoder", params3, layout="hf_generation"),
                  {k: v for k, v in gen.items() if k.startswith("model.encoder.")})


def test_strict_errors_name_keys():
    cfg, model = _whisper(0)
    sd = _sd(model.encoder)
    del sd["layers.1.fc2.bias"]
    sd["layers.0.self_attn.k_proj.bias"] = np.zeros(16, np.float32)  # whisper's k_proj has no bias
    with pytest.raises(interop.ConversionError) as e:
        interop.from_torch("whisper_encoder", sd, cfg.to_dict())
    assert "missing: layers.1.fc2.bias" in str(e.value)
    assert "unexpected: layers.0.self_attn.k_proj.bias" in str(e.value)
    with pytest.raises(ValueError, match="cannot infer the head count"):
        interop.from_torch("whisper_encoder", _sd(model.encoder))


@pytest.mark.slow
def test_whisper_tiny_full_size():
    p = WHISPER_PRESETS["tiny"]
    cfg = WhisperConfig(d_model=p.width, encoder_layers=p.layers, encoder_attention_heads=p.heads,
                        encoder_ffn_dim=p.ffn_dim, decoder_layers=1, decoder_attention_heads=p.heads,
                        decoder_ffn_dim=p.ffn_dim)
    torch.manual_seed(0)
    model = WhisperModel(cfg).eval()
    mel = WhisperFeatureExtractor()(_speechlike(12.0), sampling_rate=16000, return_tensors="np").input_features
    ref, _, _ = _reference_states(model, mel)
    module, params = interop.from_torch("whisper_encoder", _sd(model.encoder))  # config from shapes
    assert module.config == p
    states = jax.jit(module.apply)({"params": params}, jnp.asarray(log_mel_spectrogram(_speechlike(12.0))))
    assert states.shape == (5, 1, 1500, 384)
    assert_close(states, ref, name="whisper_encoder[tiny] hidden states")


# ----------------------------------------------------------------------------------------------------------------
# per-video-frame features (audio_features.py)


def _musetalk_states(model, audio):
    """MuseTalk v1.5's features written out with transformers: 30 s segments through the feature extractor and
    the encoder, hidden states stacked on axis 2, concatenated, trimmed to whole seconds."""
    fe = WhisperFeatureExtractor()
    feats = []
    for start in range(0, len(audio), 480000):
        mel = fe(audio[start:start + 480000], sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            hs = model.encoder(mel, output_hidden_states=True).hidden_states
        feats.append(torch.stack(hs, dim=2))
    return torch.cat(feats, dim=1)[:, :(len(audio) // 16000) * 50]


def _musetalk_windows(feats, seconds, fps):
    """MuseTalk v1.5 get_whisper_chunk: zero padding floor(50/fps)*2 left and *6 right, a window of 10 from
    floor(i * 50/fps), reshaped (F, 10 * 5, D)."""
    mult = 50 / int(fps)
    pad = int(np.floor(mult))
    feats = torch.cat([torch.zeros_like(feats[:, :pad * 2]), feats, torch.zeros_like(feats[:, :pad * 3 * 2])], 1)
    clips = [feats[:, int(np.floor(i * mult)):int(np.floor(i * mult)) + 10] for i in range(seconds * int(fps))]
    clips = torch.cat(clips, dim=0)  # (F, 10, 5, D)
    return clips.reshape(clips.shape[0], -1, clips.shape[-1]).numpy()


def test_svp_features_follow_musetalk_over_segments():
    cfg, model = _whisper(7, d_model=8, encoder_layers=4, encoder_attention_heads=2, encoder_ffn_dim=16,
                          num_mel_bins=80, max_source_positions=1500)
    module, params = interop.from_torch("whisper_encoder", _sd(model.encoder), cfg.to_dict())
    audio = _speechlike(32.0, seed=3)  # two 30 s segments, the second partial
    states = whisper_audio_states(module, params, audio)
    assert states.shape == (32 * 50, 5, 8)
    ref_states = _musetalk_states(model, audio)
    assert_close(states, ref_states[0].numpy(), name="svp whisper states over 30 s segments")
    for fps in (25, 30):
        ref = _musetalk_windows(ref_states, 32, fps)
        got = as_tokens(frame_windows(states, fps, 32 * fps, rule="musetalk"), "states")
        assert got.shape == ref.shape == (32 * fps, 50, 8)
        assert_close(got, ref, name=f"svp whisper windows musetalk@{fps}fps")
    concat = svp_audio_features(module, params, audio, 25)
    assert concat.shape == (32 * 25, 10, 40)  # (F, 10, 5 x D): 1920 channels for whisper-tiny
    np.testing.assert_array_equal(concat, as_tokens(frame_windows(states, 25), "frames"))


def test_frame_windows_rules():
    t, s, d = 53, 5, 3
    states = np.random.default_rng(0).standard_normal((t, s, d)).astype(np.float32)
    for fps in (25, 30, 24):
        win = frame_windows(states, fps, 40, rule="echomimic")
        for i in range(40):  # EchoMimic get_sliced_feature: centre int(i*50/fps), [centre-4, centre+6), clamped
            centre = int(i * 50 / fps)
            idx = [min(max(j, 0), t - 1) for j in range(centre - 4, centre + 6)]
            np.testing.assert_array_equal(win[i], states[idx])
        mt = frame_windows(states, fps, 40, rule="musetalk")
        padded = np.concatenate([np.zeros((2 * (50 // fps), s, d)), states, np.zeros((100, s, d))])
        for i in range(40):  # frames past the audio's end read zeros
            start = int(np.floor(i * (50 / fps)))
            np.testing.assert_array_equal(mt[i], padded[start:start + 10])
    assert frame_windows(states, 25).shape == (26, 10, s, d)  # floor(53 frames * 25 / 50)
    assert as_tokens(win, "frames").shape == (40, 10, s * d) and as_tokens(win, "states").shape == (40, 10 * s, d)
    np.testing.assert_array_equal(as_tokens(win, "frames")[3, 2], win[3, 2].reshape(-1))
    with pytest.raises(ValueError, match="unknown alignment rule"):
        frame_windows(states, 25, rule="hallo")
