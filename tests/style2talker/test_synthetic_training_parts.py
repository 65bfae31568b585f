"""The synthetic-domain parts of Style2Talker training: the art-style filter family, the emotion phrase family
(training vs held-out phrasings), the identity split and its data, the text-encoder objective."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.data import facs, synthetic
from jaxtalk.style2talker import art_styles, emotion_phrases
from jaxtalk.training import style2talker_data as sd
from jaxtalk.training.style2talker import multi_positive_nce, training_texts


@pytest.fixture(scope="module")
def frames():
    ident = synthetic.make_identity(5, 0)
    return synthetic.generate_clip(ident, "happy", 2, seed=3, num_frames=3, resolution=64).frames


def test_art_styles_are_deterministic_distinct_and_blend_by_degree(frames):
    x = frames.astype(np.float32) / 255.0
    np.testing.assert_allclose(art_styles.stylise(frames, "photo", 1.0), x, atol=1e-7)
    outs = {}
    for k, style in enumerate(art_styles.STYLES[1:], start=1):
        full = art_styles.stylise(frames, style.name, 1.0)
        assert full.shape == x.shape and full.min() >= 0 and full.max() <= 1
        np.testing.assert_array_equal(full, art_styles.stylise(frames, k, 1.0))
        np.testing.assert_allclose(art_styles.stylise(frames, k, 0.0), x, atol=1e-7)
        half = art_styles.stylise(frames, k, np.full(len(frames), 0.5))
        np.testing.assert_allclose(half, 0.5 * x + 0.5 * full, atol=1e-6)
        outs[style.name] = full
        assert np.abs(full - x).mean() > 0.02, style.name  # each filter visibly changes the frame
    names = list(outs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert np.abs(outs[names[i]] - outs[names[j]]).mean() > 0.02, (names[i], names[j])
    stats = art_styles.style_statistics(x)
    assert stats.shape == (len(frames), 8) and np.all(np.isfinite(stats))
    with pytest.raises(ValueError, match="unknown art style"):
        art_styles.stylise(frames, "sepia")


def test_phrasings_split_and_cover_the_generator_texts():
    assert set(emotion_phrases.TRAIN_FRAMES).isdisjoint(emotion_phrases.HELDOUT_FRAMES)
    train = dict(emotion_phrases.all_descriptions("train"))
    held = dict(emotion_phrases.all_descriptions("heldout"))
    assert set(train).isdisjoint(held)
    assert len(emotion_phrases.CONDITIONS) == 22
    for c, (emotion, intensity) in enumerate(emotion_phrases.CONDITIONS):
        for gender in ("female", "male"):
            if emotion != "neutral":  # the generator's own three sentences are the first training frames
                assert facs.emotion_texts(emotion, intensity, gender) == \
                    emotion_phrases.descriptions(emotion, intensity, gender)[:3]
            adjective = facs._ADJECTIVES[emotion][intensity - 1]
            for t in emotion_phrases.descriptions(emotion, intensity, gender, "heldout"):
                assert adjective in t.lower() and held[t] == c
    texts, conds = training_texts()
    assert set(texts).isdisjoint(held) and len(texts) == len(conds) == len(set(texts))
    assert emotion_phrases.condition_index("neutral", 3) == 0


def test_splits_are_disjoint_seeds_and_data_is_consistent(tmp_path):
    train, ev = sd.SplitConfig.train(), sd.SplitConfig.eval()
    assert {train.identity_seed, train.utterance_seed}.isdisjoint({ev.identity_seed, ev.utterance_seed})
    small = sd.SplitConfig(num_identities=2, conditions_per_identity=3, rendered_identities=1, rendered_conditions=2,
                           seconds=0.4)
    a = sd.load_or_build(small, tmp_path)
    b = sd.load_or_build(small, tmp_path)  # from the cache
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    n = small.num_frames
    assert a["expression"].shape[1:] == (n, 64) and a["mel"].shape[1:] == (n, 80, 16)
    assert a["frames"].shape == (2, n, 64, 64, 3) and a["frames_in"].shape == (2, n, 32, 32, 3)
    c = int(a["clip"][0])  # rendered clip c is the generator's clip of that identity and condition
    emotion, intensity = emotion_phrases.CONDITIONS[int(a["condition"][c])]
    ident = synthetic.make_identity(small.identity_seed, int(a["identity"][c]))
    clip = synthetic.generate_clip(ident, emotion, intensity, small.utterance_seed, num_frames=n, resolution=64)
    np.testing.assert_array_equal(a["frames"][0], clip.frames)
    np.testing.assert_allclose(a["expression"][c], clip.expression)
    win = sd.coefficient_windows(clip.expression, clip.pose, np.array([0, n - 1]), radius=2)
    np.testing.assert_allclose(win[0, 0, :64], clip.expression[0])  # clamped at the start
    np.testing.assert_allclose(win[1, -1, 64:70], clip.pose[n - 1])



def test_mouth_boxes_bound_the_renderers_mouth_landmarks_of_each_frame():
    from jaxtalk.data import render

    small = sd.SplitConfig(num_identities=2, conditions_per_identity=2, rendered_identities=2, rendered_conditions=1,
                           seconds=0.4)
    a = sd.build_split(small)
    boxes = sd.mouth_boxes(small, a)
    n = small.num_frames
    assert boxes.shape == (2, n, 4)
    for r in range(2):
        c = int(a["clip"][r])
        emotion, intensity = emotion_phrases.CONDITIONS[int(a["condition"][c])]
        ident = synthetic.make_identity(small.identity_seed, int(a["identity"][c]))
        clip = synthetic.generate_clip(ident, emotion, intensity, small.utterance_seed, num_frames=n, resolution=64)
        for f in (0, n // 2, n - 1):  # landmarks from the generator's own controls and pose
            pts = render.mouth_landmarks(ident.style, clip.controls[f], render.Geometry(ident.style, clip.pose[f], 64, 64))
            np.testing.assert_allclose(boxes[r, f], np.concatenate([pts.min(0), pts.max(0)]) / 64, atol=1e-5)

def test_multi_positive_nce_counts_every_same_label_pair():
    a = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = jnp.asarray([0, 1, 0])
    loss, acc = multi_positive_nce(a, a, labels, 0.5)
    # by hand: row i, -log(sum_{j: same label} softmax_j), both directions equal here (symmetric logits)
    an = np.asarray(a) / np.linalg.norm(np.asarray(a), axis=1, keepdims=True)
    lg = an @ an.T / 0.5
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    same = np.asarray(labels)[:, None] == np.asarray(labels)[None]
    expected = -np.mean(np.log((p * same).sum(1)))
    assert expected > 0.1  # a non-degenerate case
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(acc) == 1.0


def test_driving_statistics_standardise_the_training_coefficients_and_join_the_config(tmp_path):
    from jaxtalk import config as config_lib
    from jaxtalk.style2talker.config import Style2TalkerConfig

    small = sd.SplitConfig(num_identities=2, conditions_per_identity=2, rendered_identities=2, rendered_conditions=1,
                           seconds=0.4)
    a = sd.build_split(small)
    mean, std = sd.driving_statistics(a)
    assert len(mean) == len(std) == 73
    rows = np.concatenate([sd.coefficient_windows(a["expression"][c], a["pose"][c], np.arange(small.num_frames), 0)[:, 0]
                           for c in a["clip"]])
    z = (rows - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(z[:, :70].mean(0), 0.0, atol=1e-4)
    moving = rows[:, :70].std(0) > 1e-6
    np.testing.assert_allclose(z[:, :70].std(0)[moving], 1.0, rtol=1e-3)
    np.testing.assert_allclose(z[:, 70:], 0.0, atol=1e-6)  # the constant crop: centred, std 1
    assert std[70:] == (1.0, 1.0, 1.0)

    model = sd.with_driving_statistics(Style2TalkerConfig(), a)
    assert model.style_a.driving_mean == mean and model.style_a.driving_std == std
    assert sd.with_driving_statistics(model, {}) is model  # set once, kept
    model.validate()
    config_lib.save(model, tmp_path / "model.yaml")
    loaded = config_lib.load(tmp_path / "model.yaml", cls=Style2TalkerConfig)
    assert loaded.style_a.driving_mean == mean and isinstance(loaded.style_a.driving_std, tuple)
    bad = dataclasses.replace(model, style_a=dataclasses.replace(model.style_a, driving_std=None))
    with pytest.raises(ValueError, match="driving_mean and style_a.driving_std"):
        bad.validate()
