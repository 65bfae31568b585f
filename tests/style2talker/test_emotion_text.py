"""Emotion-text annotation on synthetic clips: AU-grounded candidates and CLIP ranking (random tiny towers)."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk.backbones.clip_text import CLIPTextConfig, CLIPTextEncoder
from jaxtalk.backbones.clip_tokenizer import CLIPTokenizer
from jaxtalk.backbones.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection, preprocess
from jaxtalk.data import facs, records, synthetic
from jaxtalk.style2talker import emotion_text as et

SPEECH = ("AU25", "AU26")


@pytest.fixture(scope="module")
def scorer():
    text = CLIPTextEncoder(CLIPTextConfig(width=32, heads=2, layers=1, mlp_dim=64, projection_dim=16))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32,
                                                            intermediate_size=64, num_hidden_layers=1,
                                                            num_attention_heads=2, projection_dim=16))
    tp = _random_params(jax.eval_shape(text.init_params, jax.random.key(0))["params"], seed=0)
    vp = _random_params(jax.eval_shape(vision.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"],
                        seed=1)
    return et.CLIPScorer(text, tp, vision, vp, CLIPTokenizer())


def _random_params(abstract, seed):
    """Random weights drawn on the host (cheaper than compiling the 49408-row embedding init)."""
    rng = np.random.default_rng(seed)
    leaves = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(abstract))
    out = {}
    for path, leaf in leaves:
        name = str(path[-1].key)
        value = rng.standard_normal(leaf.shape).astype(np.float32) * (0.1 if name == "scale" else 0.05)
        out[tuple(str(p.key) for p in path)] = value + (1.0 if name == "scale" else 0.0)
    return traverse_util.unflatten_dict(out)


@pytest.fixture(scope="module")
def clips():
    person = synthetic.make_identities(1, seed=5)[0]
    conditions = [("happy", 3), ("angry", 3), ("sad", 2), ("neutral", 1)]
    return {c: synthetic.generate_clip(person, *c, seed=2, num_frames=12, resolution=64) for c in conditions}


def _mentions(text: str, au: str) -> bool:
    return any(p in text for p in et.AU_PHRASINGS[au])


def _ground_truth(clip) -> list[tuple[str, float]]:
    """Activated (median over frames >= 1) non-speech AUs of the synthetic clip, strongest first."""
    med = np.median(clip.action_units, axis=0)
    pairs = [(n, float(v)) for n, v in zip(facs.AU_NAMES, med) if n not in SPEECH and v >= 1.0]
    return sorted(pairs, key=lambda p: -p[1])


def test_level_thresholds():
    assert et.au_level(0.99) is None
    assert et.au_level(1.0) == "slight" and et.au_level(1.99) == "slight"
    assert et.au_level(2.0) == "clear" and et.au_level(3.49) == "clear"
    assert et.au_level(3.5) == "strong" and et.au_level(5.0) == "strong"


def test_sentences_mention_the_dominant_action_units(clips, scorer):
    for (emotion, intensity), clip in clips.items():
        ann = et.annotate(clip.action_units, clip.frames, emotion, intensity, scorer)
        truth = _ground_truth(clip)
        assert len(ann.sentences) == 5 and len(set(ann.sentences)) == 5
        if emotion == "neutral":
            assert not truth
            assert all("relaxed" in s for s in ann.sentences)
            assert not any(_mentions(s, au) for s in ann.sentences for au in et.AU_PHRASINGS)
            continue
        dominant = truth[0][0]
        assert all(_mentions(s, dominant) for s in ann.sentences), (dominant, ann.sentences)
        assert all(any(w in s for w in et.EMOTION_WORDS[emotion][intensity - 1]) for s in ann.sentences)
        for name, value in truth[:3]:  # the candidates cover the three strongest AUs at their level
            level = "slightly" if value < 2.0 else "noticeably" if value < 3.5 else "strongly"
            assert any(any(f"{level} {p}" in c.text for p in et.AU_PHRASINGS[name]) for c in ann.candidates), name
        assert not any(_mentions(c.text, au) for c in ann.candidates for au in SPEECH)
    # The generator's emotion prototypes (EMFACS-style) make these the two strongest AUs at full intensity.
    for (emotion, intensity), pair in {("happy", 3): {"AU12", "AU6"}, ("angry", 3): {"AU4", "AU7"}}.items():
        assert {n for n, _ in _ground_truth(clips[emotion, intensity])[:2]} == pair


def test_ranking_is_clip_similarity(clips, scorer):
    clip = clips["happy", 3]
    ann = et.annotate(clip.action_units, clip.frames, "happy", 3, scorer, num_frames=4)
    texts = [c.text for c in ann.candidates]
    # independent scoring: towers applied directly, normalised and averaged in numpy
    ids = CLIPTokenizer()(texts, context_length=77)
    t = np.asarray(jax.jit(scorer.text_module.apply)({"params": scorer.text_params}, ids)[1], np.float64)
    idx = np.unique(np.linspace(0, clip.frames.shape[0] - 1, 4).round().astype(int))
    px = preprocess(clip.frames[idx], 32)
    v = np.asarray(jax.jit(scorer.vision_module.apply)({"params": scorer.vision_params}, px)[1], np.float64)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sim = (t @ v.T).mean(axis=1)
    order = np.argsort(-sim, kind="stable")
    np.testing.assert_allclose(ann.similarity, sim, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ann.ranking, order)
    assert ann.sentences == [texts[i] for i in order[:5]]
    assert np.all(np.diff(ann.scores) <= 0)
    assert len(np.unique(np.round(sim, 6))) > len(sim) // 2  # the towers really separate the candidates
    again = et.annotate(clip.action_units, clip.frames, "happy", 3, scorer, num_frames=4)
    assert again.sentences == ann.sentences


def test_clip_records(clips, scorer):
    clip = clips["angry", 3]
    record = records.ClipRecord.from_synthetic(clip, clip_id="angry3")
    ann = et.annotate_record(record, scorer)
    updated = et.with_emotion_texts(record, ann)
    assert updated.emotion_texts == ann.sentences and record.emotion_texts == list(clip.emotion_texts)
    bare = records.ClipRecord.from_synthetic(clip, clip_id="no_aus")
    bare.action_units = None
    with pytest.raises(ValueError, match="no_aus has no action_units"):
        et.annotate_record(bare, scorer)


def test_bad_inputs(scorer):
    with pytest.raises(ValueError, match=r"action_units must be \(frames, 17\)"):
        et.au_activations(np.zeros((4, 16)))
    with pytest.raises(ValueError, match="unknown emotion"):
        et.candidate_sentences("bored", 1, [])
    with pytest.raises(ValueError, match="projection"):
        et.CLIPScorer(scorer.text_module, scorer.text_params,
                      CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=8)), scorer.vision_params)
