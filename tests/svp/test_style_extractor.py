"""SVP probabilistic style extractor (Eq. 2-4), InfoNCE (Eq. 6-7), modality dropout, sharding; StyleTalk interop."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxtalk import config, interop, parallel
from jaxtalk.interop.reading import read_state_dict
from jaxtalk.svp.style_extractor import (
    VAR_EPS,
    ProbabilisticStyleExtractor,
    StyleExtractorConfig,
    info_nce_loss,
    positives_from_labels,
    sample_modality_dropout,
)


def _key(seed: int) -> jax.Array:
    """An rbg key: XLA:CPU compiles threefry (partitionable) random bits very slowly, rbg in well under a second."""
    return jax.random.key(seed, impl="rbg")

CFG = StyleExtractorConfig(d_model=16, heads=2, layers=1, ff=32, pos_len=12, dropout=0.0, style_tokens=2,
                           drop_exp_prob=0.4, drop_audio_prob=0.4)
B, T = 4, 9
LENGTHS = np.array([9, 7, 5, 9])


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    exp = rng.standard_normal((B, T, 64)).astype(np.float32)
    audio = rng.standard_normal((B, T, 1920)).astype(np.float32)
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    return exp, audio, pad


@pytest.fixture(scope="module")
def model():
    m = ProbabilisticStyleExtractor(CFG)
    exp, audio, pad = _inputs()
    params = nn.meta.unbox(jax.jit(m.init)(_key(0), exp, audio, pad)["params"])
    fwd = jax.jit(lambda p, e, a, m_, k: m.apply({"params": p}, e, a, m_, noise_key=k, mutable=["intermediates"]))
    return m, params, fwd


def test_eq_2_to_4_against_numpy(model):
    _, params, fwd = model
    exp, audio, pad = _inputs()
    key = _key(7)
    prior, inter = fwd(params, exp, audio, pad, key)
    s_hat = np.asarray(inter["intermediates"]["s_hat"][0], np.float64)  # (B, T, d)
    ws = np.asarray(params["style_query"]["kernel"], np.float64)  # (d, K)
    assert prior.s.shape == prior.mu.shape == prior.var.shape == (B, 2, 16)
    for i in range(B):
        n = LENGTHS[i]
        logits = s_hat[i, :n] @ ws  # (n, K): padded frames take no part
        w = np.exp(logits - logits.max(0))
        w /= w.sum(0)
        mu = w.T @ s_hat[i, :n]
        var = np.einsum("tk,tkd->kd", w, (s_hat[i, :n, None, :] - mu[None]) ** 2)
        np.testing.assert_allclose(prior.mu[i], mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(prior.var[i], var, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(prior.weights[i, n:], 0.0, atol=1e-30)
    assert float(np.min(prior.var)) >= 0.0 and float(np.max(prior.var)) > 0.0
    eps = np.asarray(jax.random.normal(key, prior.mu.shape))
    np.testing.assert_allclose(prior.s, prior.mu + np.sqrt(np.asarray(prior.var) + VAR_EPS) * eps, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(prior.keep_exp)) and np.all(np.asarray(prior.keep_audio))


def test_padding_frames_do_not_change_the_prior(model):
    m, params, fwd = model
    exp, audio, pad = _inputs()
    base, _ = fwd(params, exp, audio, pad, None)
    rng = np.random.default_rng(9)
    exp2, audio2 = exp.copy(), audio.copy()
    exp2[pad] = 100 * rng.standard_normal(exp2[pad].shape)
    audio2[pad] = 100 * rng.standard_normal(audio2[pad].shape)
    other, _ = fwd(params, exp2, audio2, pad, None)
    np.testing.assert_allclose(other.mu, base.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other.var, base.var, rtol=1e-5, atol=1e-6)
    # the 5-frame sample alone, without padding, gives the same Gaussian
    short = jax.jit(m.apply)({"params": params}, exp[2:3, :5], audio[2:3, :5])
    np.testing.assert_allclose(short.mu[0], base.mu[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(short.var[0], base.var[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(short.s, short.mu)  # no key: s = mu


def test_modality_dropout_never_drops_both_and_zeroes_inputs(model):
    keep_e, keep_a = sample_modality_dropout(_key(3), 20000, 0.5, 0.5)
    keep_e, keep_a = np.asarray(keep_e), np.asarray(keep_a)
    assert not np.any(~keep_e & ~keep_a)
    assert abs((~keep_e).mean() - 0.5) < 0.02 and abs((~keep_a).mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="p_exp \\+ p_audio <= 1"):
        sample_modality_dropout(_key(0), 4, 0.7, 0.5)

    m, params, fwd = model
    exp, audio, pad = _inputs()
    seen_e = seen_a = False
    train = jax.jit(lambda p, k: m.apply({"params": p}, exp, audio, pad, train=True, rngs={"modality": k}))
    for seed in range(6):
        prior = train(params, _key(seed))
        ke, ka = np.asarray(prior.keep_exp), np.asarray(prior.keep_audio)
        assert not np.any(~ke & ~ka)
        seen_e |= bool(np.any(~ke))
        seen_a |= bool(np.any(~ka))
        ref, _ = fwd(params, exp * ke[:, None, None], audio * ka[:, None, None], pad, None)  # paper: inputs zeroed
        np.testing.assert_allclose(prior.mu, ref.mu, rtol=1e-5, atol=1e-6)
    assert seen_e and seen_a
    exp_only = jax.jit(lambda p, a: m.apply({"params": p}, exp, a, pad, modality="exp"))
    only_exp, only_exp2 = exp_only(params, audio), exp_only(params, 3 * audio + 1)
    np.testing.assert_array_equal(only_exp.mu, only_exp2.mu)
    assert not np.any(np.asarray(only_exp.keep_audio))


def test_null_token_variant_and_deterministic_ablation():
    cfg = dataclasses.replace(CFG, dropped_branch="null_token", deterministic=True, fusion="symmetric")
    m = ProbabilisticStyleExtractor(cfg)
    exp, audio, pad = _inputs(1)
    params = jax.jit(m.init)(_key(1), exp, audio, pad)["params"]
    assert {"null_exp", "null_audio", "fusion_exp", "fusion_audio"} <= set(params)
    audio_only = jax.jit(lambda p, e, k: m.apply({"params": p}, e, audio, pad, modality="audio", noise_key=k))
    a = audio_only(params, exp, _key(0))
    b = audio_only(params, 5 * exp - 2, _key(1))
    np.testing.assert_array_equal(a.mu, b.mu)  # the dropped branch is the learned null token
    np.testing.assert_array_equal(a.s, a.mu)  # deterministic: mu only, whatever the key


def _info_nce_numpy(s, labels, tau):
    s = np.asarray(s, np.float64).reshape(len(s), -1)
    losses = []
    for i in range(len(s)):
        for p in range(len(s)):
            if p == i or labels[p] != labels[i]:
                continue
            omega = lambda j, i=i: np.exp(1.0 / (np.sum((s[i] - s[j]) ** 2) + 1.0) / tau)
            negs = sum(omega(n) for n in range(len(s)) if labels[n] != labels[i])
            losses.append(-np.log(omega(p) / (omega(p) + negs)))
    return np.mean(losses)


def test_info_nce_matches_formula_and_rewards_close_positives():
    rng = np.random.default_rng(4)
    s = rng.standard_normal((6, 2, 3)).astype(np.float32)
    ident = np.array([0, 0, 1, 1, 2, 2])
    emo = np.array([3, 3, 3, 4, 5, 5])
    labels = [f"{a}-{b}" for a, b in zip(ident, emo)]
    pos = positives_from_labels(ident, emo)
    assert np.asarray(pos).sum() == 6 + 2 * 2  # diagonal + pairs (0,1) and (4,5)
    loss = jax.jit(info_nce_loss, static_argnums=2)(s, pos, 0.5)
    np.testing.assert_allclose(float(loss), _info_nce_numpy(s, labels, 0.5), rtol=1e-5)

    closer = s.copy()
    closer[1] = 0.5 * (s[0] + s[1])
    closer[5] = 0.5 * (s[4] + s[5])
    loss_and_grad = jax.jit(jax.value_and_grad(info_nce_loss), static_argnums=2)
    closer_loss, _ = loss_and_grad(closer, pos, 0.5)
    assert float(closer_loss) < float(loss)
    _, grad = loss_and_grad(s, pos, 0.5)
    assert np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).max() > 0
    none_loss, none_grad = loss_and_grad(s, positives_from_labels(np.arange(6)), 0.5)  # no positive pairs
    assert float(none_loss) == 0.0 and np.all(np.isfinite(np.asarray(none_grad)))


def test_config_validation():
    with pytest.raises(config.ConfigError, match="drop_exp_prob \\+ drop_audio_prob"):
        config.from_dict(StyleExtractorConfig, {"drop_exp_prob": 0.6, "drop_audio_prob": 0.6})
    with pytest.raises(config.ConfigError, match="not divisible by heads"):
        config.from_dict(StyleExtractorConfig, {"d_model": 30, "heads": 4})
    with pytest.raises(config.ConfigError, match="fusion"):
        config.from_dict(StyleExtractorConfig, {"fusion": "sum"})
    assert config.from_dict(StyleExtractorConfig, {"style_tokens": 4}).style_tokens == 4


def test_sharded_init_and_forward_match_unsharded(model):
    m, params, fwd = model
    exp, audio, pad = _inputs()
    mesh = parallel.make_mesh(1, 2, 4)
    init = lambda rng: m.init(rng, exp, audio, pad)
    variables, shardings = parallel.init_sharded(init, _key(0), mesh)
    ref_params = jax.device_get(variables["params"])
    for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)  # same rng -> same values as the plain init
    kernel = variables["params"]["audio_branch"]["encoder"]["layers_0"]["linear1"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
        batch = parallel.shard_batch({"e": exp, "a": audio, "m": pad}, mesh)
        sharded = jax.jit(lambda v, b: m.apply(v, b["e"], b["a"], b["m"], noise_key=_key(5)))(
            variables, batch)
    single, _ = fwd(params, exp, audio, pad, _key(5))
    np.testing.assert_allclose(sharded.s, single.s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sharded.var, single.var, rtol=1e-5, atol=1e-6)


def test_styletalk_round_trip_and_strict_errors(fixtures_dir):
    sd = read_state_dict(fixtures_dir / "svp" / "st_style_encoder.safetensors")
    module, params = interop.from_torch("styletalk_style_encoder", sd, config={"nhead": 4})
    assert module.num_encoder_layers == 2 and module.pos_embed_len == 24 and module.input_dim == 16
    assert params["encoder"]["layers_0"]["self_attn"]["to_q"]["kernel"].shape == (32, 32)
    back = interop.to_torch("styletalk_style_encoder", params)  # StyleTalk's own fused layout by default
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    split = interop.to_torch("styletalk_style_encoder", params, layout="jaxtalk")
    assert "encoder.layers.1.self_attn.to_v.bias" in split and "pos_embed.pos_table" in split
    bad = dict(sd)
    del bad["aggregate_method.W.2.bias"]
    with pytest.raises(interop.ConversionError, match="1 missing: aggregate_method.W.2.bias"):
        interop.from_torch("styletalk_style_encoder", bad, config={"nhead": 4})
    with pytest.raises(interop.ConversionError, match="unknown config keys \\['heads'\\]"):
        interop.from_torch("styletalk_style_encoder", sd, config={"heads": 4})
