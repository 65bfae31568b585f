"""wav2vec2 parity with transformers Wav2Vec2Model (post-LN and stable-layer-norm), weight-norm key layouts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Model

from jaxtalk import interop, parallel
from jaxtalk.backbones.wav2vec2 import WAV2VEC2_PRESETS, feature_lengths, normalize_waveform
from tests.parity import assert_close

CONFIGS = {
    # base-like: GroupNorm on the first conv only, no conv bias, post-LN, even positional kernel (SamePad drops one)
    "post_ln_group": dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8,
                          num_conv_pos_embedding_groups=2),
    # lv60-like: LayerNorm after every conv, conv bias, stable layer norm, odd kernel, no SpecAugment vector
    "stable_layer": dict(hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40,
                         conv_dim=(12, 8, 8), conv_kernel=(6, 3, 2), conv_stride=(3, 2, 2), conv_bias=True,
                         num_conv_pos_embeddings=7, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
                         feat_extract_norm="layer", mask_time_prob=0.0),
}


def _model(name, seed=0, cls=Wav2Vec2Model):
    cfg = Wav2Vec2Config(vocab_size=12, **CONFIGS[name])
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # re-randomise norms, biases and g too, so a missing term shows
        for pname, p in model.named_parameters():
            centre = 1.0 if ("norm" in pname and pname.endswith("weight")) or pname.endswith("original0") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
    return cfg, model


def _sd(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _assert_exact(back, sd):
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))[:5]
    for k in sd:
        assert back[k].shape == sd[k].shape and np.array_equal(back[k], sd[k]), k


def _old_names(sd):
    """The weight_g / weight_v names of files saved before torch parametrisations (the hub's base-960h)."""
    return {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_all_hidden_states(name):
    cfg, model = _model(name, seed=1)
    sd = _sd(model)
    assert any("parametrizations.weight.original1" in k for k in sd)
    module, params = interop.from_torch("wav2vec2", sd, cfg.to_dict())
    audio = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(audio), output_hidden_states=True)
    ref = np.stack([h.numpy() for h in out.hidden_states])
    both = jax.jit(lambda p, x: (module.apply({"params": p}, x), module.apply({"params": p}, x,
                                                                              output="last_hidden_state")))
    states, last = both(params, jnp.asarray(audio))
    assert states.shape == (cfg.num_hidden_layers + 1, 2, feature_lengths(1000, module.config), cfg.hidden_size)
    assert_close(states, ref, name=f"wav2vec2[{name}] hidden states")
    assert_close(last, out.last_hidden_state.numpy(), name=f"wav2vec2[{name}] last_hidden_state")
    _assert_exact(interop.to_torch("wav2vec2", params, layout="hf_parametrizations"), sd)
    # the same weights under the older weight_g / weight_v names
    old = _old_names(sd)
    _, params_old = interop.from_torch("wav2vec2", old, cfg.to_dict())
    _assert_exact(interop.to_torch("wav2vec2", params_old), old)


def test_prefixed_ctc_checkpoint_and_inferred_config():
    cfg, model = _model("post_ln_group", seed=2, cls=Wav2Vec2ForCTC)
    sd = _sd(model)
    assert "lm_head.weight" in sd and all(k.startswith(("wav2vec2.", "lm_head.")) for k in sd)
    module, params = interop.from_torch("wav2vec2", sd, cfg.to_dict())
    body = {k: v for k, v in sd.items() if k.startswith("wav2vec2.")}
    _assert_exact(interop.to_torch("wav2vec2", params, layout="hf_prefixed_parametrizations"), body)
    audio = np.random.default_rng(1).standard_normal((1, 700)).astype(np.float32)
    with torch.no_grad():
        ref = model.wav2vec2(torch.from_numpy(audio)).last_hidden_state.numpy()
    got = jax.jit(module.apply, static_argnames="output")({"params": params}, jnp.asarray(audio),
                                                           output="last_hidden_state")
    assert_close(got, ref, name="wav2vec2[ctc prefixed] last_hidden_state")


def test_config_from_shapes_base_layout():
    """A 7-conv, width-64 model: strides, heads and the variant follow the released base models."""
    cfg = Wav2Vec2Config(vocab_size=12, hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=32, conv_dim=(8,) * 7, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4)
    torch.manual_seed(3)
    model = Wav2Vec2Model(cfg).eval()
    module, params = interop.from_torch("wav2vec2", _old_names(_sd(model)))
    c = module.config
    assert (c.conv_stride, c.heads, c.num_conv_pos_embedding_groups, c.do_stable_layer_norm) == (
        (5, 2, 2, 2, 2, 2, 2), 1, 4, False)
    audio = np.random.default_rng(2).standard_normal((1, 1600)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(audio), output_hidden_states=True)
    got = jax.jit(module.apply)({"params": params}, jnp.asarray(audio))
    assert_close(got, np.stack([h.numpy() for h in out.hidden_states]), name="wav2vec2[inferred] hidden states")


def test_normalize_matches_feature_extractor():
    rng = np.random.default_rng(4)
    a, b = 0.3 * rng.standard_normal(1600) + 0.1, 2.0 * rng.standard_normal(1200) - 0.5
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    ref = fe([a, b], sampling_rate=16000, padding=True, return_tensors="np")
    padded = np.zeros((2, 1600), np.float32)
    padded[0], padded[1, :1200] = a, b
    got = normalize_waveform(padded, lengths=[1600, 1200])
    assert_close(got, ref["input_values"], name="wav2vec2 input normalisation")
    assert_close(normalize_waveform(a), fe(a, sampling_rate=16000, return_tensors="np")["input_values"][0],
                 name="wav2vec2 input normalisation (single)")


def test_strict_errors_name_keys():
    cfg, model = _model("post_ln_group")
    sd = _old_names(_sd(model))
    del sd["encoder.layers.1.final_layer_norm.bias"]
    sd["encoder.pos_conv_embed.conv.weight_g"] = np.ones((16, 1, 1), np.float32)  # dim=0 norm: wrong shape
    sd["quantizer.codevectors"] = np.zeros((1, 4, 2), np.float32)
    with pytest.raises(interop.ConversionError) as e:
        interop.from_torch("wav2vec2", sd, cfg.to_dict())
    msg = str(e.value)
    assert "missing: encoder.layers.1.final_layer_norm.bias" in msg
    assert "unexpected: quantizer.codevectors" in msg
    assert "mis-shaped: encoder.pos_conv_embed.conv.weight_g (16, 1, 1)" in msg
    with pytest.raises(ValueError, match="add_adapter"):
        interop.from_torch("wav2vec2", _sd(model), dict(cfg.to_dict(), add_adapter=True))


def test_sharded_forward_matches_torch():
    """Converted params placed by their logical names on a (data, fsdp, tensor) = (2, 2, 2) mesh."""
    cfg, model = _model("post_ln_group", seed=5)
    module, params = interop.from_torch("wav2vec2", _sd(model), cfg.to_dict())
    mesh = parallel.make_mesh(2, 2, 2)
    abstract = jax.eval_shape(module.init_params, jax.random.key(0))
    shardings = parallel.logical_to_shardings(abstract, mesh)
    assert shardings["params"]["encoder"]["layers_0"]["feed_forward"]["intermediate_dense"]["kernel"].spec == \
        jax.sharding.PartitionSpec("fsdp", "tensor")
    audio = np.random.default_rng(6).standard_normal((4, 800)).astype(np.float32)
    with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
        sharded = parallel.shard_params(params, shardings["params"])
        out = jax.jit(module.apply)({"params": sharded}, parallel.shard_batch(audio, mesh))
    with torch.no_grad():
        ref = model(torch.from_numpy(audio), output_hidden_states=True).hidden_states
    assert_close(out, np.stack([h.numpy() for h in ref]), name="wav2vec2 sharded hidden states")


@pytest.mark.slow
def test_wav2vec2_base_full_size():
    p = WAV2VEC2_PRESETS["base"]
    cfg = Wav2Vec2Config()  # transformers defaults = wav2vec2-base
    torch.manual_seed(0)
    model = Wav2Vec2Model(cfg).eval()
    module, params = interop.from_torch("wav2vec2", _old_names(_sd(model)))
    assert module.config == p
    audio = normalize_waveform(np.random.default_rng(0).standard_normal(16000).astype(np.float32))[None]
    with torch.no_grad():
        out = model(torch.from_numpy(audio), output_hidden_states=True)
    got = jax.jit(module.apply)({"params": params}, jnp.asarray(audio))
    assert got.shape == (13, 1, 49, 768)
    assert_close(got, np.stack([h.numpy() for h in out.hidden_states]), name="wav2vec2[base] hidden states")
