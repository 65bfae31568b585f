"""Fidelity metrics on known inputs: perfect scores on identical data, worse scores on corrupted data, agreement
with scikit-image / hand-computed values, d_cls on separated vs mixed clusters."""

import numpy as np
import pytest

from jaxtalk.data import facs, synthetic
from jaxtalk.eval import data, metrics


def _frames(seed=0, n=3, size=32):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (n, size, size, 3))
    from scipy import ndimage
    return np.stack([ndimage.gaussian_filter(b, (2, 2, 0)) for b in base])


def test_psnr_hand_computed_and_uint8():
    a = np.full((2, 16, 16, 3), 0.5)
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert metrics.psnr(b, a) == pytest.approx(20.0, abs=1e-9)
    assert metrics.psnr(a, a) == metrics.PSNR_MAX
    u = (a * 255).astype(np.uint8)
    assert metrics.psnr(u, u.astype(np.float64) / 255) == metrics.PSNR_MAX
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(a, a[:1])


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x = _frames(0)
    y = np.clip(x + np.random.default_rng(1).normal(0, 0.05, x.shape), 0, 1)
    ref = np.mean([skm.structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False) for a, b in zip(x, y)])
    assert metrics.ssim(x, y) == pytest.approx(ref, abs=1e-9)
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(x, y) < metrics.ssim(x, np.clip(x + 0.01 * (y - x), 0, 1)) < 1.0


def test_region_psnr_counts_only_the_box():
    a = np.full((2, 8, 8, 3), 0.5)
    b = a.copy()
    b[:, 2:4, 4:8] += 0.1  # inside the box below (rows 2-3, columns 4-7): MSE 0.01 there
    b[:, 6:, :] = 0.0      # outside it: ignored
    boxes = np.array([[4.0, 2.0, 8.0, 4.0]] * 2)
    assert metrics.region_psnr(b, a, boxes) == pytest.approx(20.0, abs=1e-9)
    boxes2 = np.array([[4.0, 2.0, 8.0, 4.0], [0.0, 0.0, 4.0, 2.0]])  # frame 2: an untouched box
    assert metrics.region_psnr(b, a, boxes2) == pytest.approx((20.0 + metrics.PSNR_MAX) / 2, abs=1e-9)
    with pytest.raises(ValueError, match="boxes"):
        metrics.region_psnr(b, a, boxes[:1])
    with pytest.raises(ValueError, match="no pixel"):
        metrics.region_psnr(b, a, np.array([[9.0, 9.0, 10.0, 10.0]] * 2))


def test_upper_face_box_spans_the_eyes_and_brows():
    lm = np.zeros((1, 16, 2))
    lm[0, 2], lm[0, 3] = (20.0, 30.0), (40.0, 30.0)  # pupils 20 px apart on row 30
    np.testing.assert_allclose(metrics.upper_face_box(lm), [[13.0, 18.0, 47.0, 35.0]])


def test_psnr_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x = _frames(2)
    y = np.clip(x + np.random.default_rng(3).normal(0, 0.05, x.shape), 0, 1)
    ref = np.mean([skm.peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y)])
    assert metrics.psnr(y, x) == pytest.approx(ref, abs=1e-9)


def _clip_landmarks(num_frames=40, res=64):
    ident = synthetic.make_identity(777, 0)
    clip = synthetic.generate_clip(ident, "happy", 2, 5, num_frames=num_frames, resolution=res, render_video=False)
    return clip, data.clip_landmarks(ident, clip, res)


def test_landmark_distances_and_lip_sync():
    clip, lm = _clip_landmarks()
    assert lm.shape == (40, 16, 2)
    assert metrics.f_lmd(lm, lm, 64) == 0.0 and metrics.m_lmd(lm, lm, 64) == 0.0
    shifted = lm + np.array([1.0, 0.0])  # one pixel right at 64 px = 4 px at 256 px
    assert metrics.f_lmd(shifted, lm, 64) == pytest.approx(4.0)
    mouth_only = lm.copy()
    mouth_only[:, metrics.MOUTH] += np.array([0.0, 2.0])
    assert metrics.m_lmd(mouth_only, lm, 64) == pytest.approx(8.0)
    assert metrics.f_lmd(mouth_only, lm, 64) == pytest.approx(4.0)

    opening = metrics.mouth_opening(lm, 64)
    assert opening.std() > 0 and (opening >= 0).all()
    # The opening follows the jaw control (the renderer's inner-lip gap is jaw * (1 - press) scaled).
    gap = clip.controls[:, facs.CONTROL_INDEX["jaw_open"]] * (1 - clip.controls[:, facs.CONTROL_INDEX["lip_press"]])
    assert metrics.pearson(opening, gap) > 0.9
    assert metrics.lip_sync(opening, opening) == pytest.approx(1.0)
    shuffled = np.random.default_rng(0).permutation(opening)
    assert metrics.lip_sync(shuffled, opening) < 0.5
    assert metrics.lip_sync(np.roll(opening, 4), opening) < metrics.lip_sync(opening, opening)
    assert metrics.pearson(np.ones(5), np.arange(5)) == 0.0


def test_av_sync_peaks_at_true_offset():
    ident = synthetic.make_identity(777, 1)
    clip = synthetic.generate_clip(ident, "neutral", 1, 9, num_frames=100, resolution=64, render_video=False)
    opening = metrics.mouth_opening(data.clip_landmarks(ident, clip, 64), 64)
    env = metrics.audio_envelope(clip.audio, 100, clip.fps)
    synced = metrics.av_sync(opening, env)
    assert abs(synced["offset"]) <= 1 and synced["correlation"] > 0.3 and synced["confidence"] > 0.1
    lagged = metrics.av_sync(np.roll(opening, 3), env)  # mouth three frames late
    assert lagged["offset"] in (2.0, 3.0, 4.0)
    other = synthetic.generate_clip(ident, "neutral", 1, 10, num_frames=100, resolution=64, render_video=False)
    mismatched = metrics.av_sync(opening, metrics.audio_envelope(other.audio, 100, other.fps))
    assert mismatched["correlation"] < synced["correlation"] - 0.2


def test_mouth_coefficient_correlation_and_emotion_accuracy():
    clip, _ = _clip_landmarks()
    e = clip.expression
    assert metrics.mouth_coefficient_correlation(e, e) == pytest.approx(1.0)
    perm = np.random.default_rng(0).permutation(len(e))
    assert metrics.mouth_coefficient_correlation(e[perm], e) < 0.5
    assert metrics.mouth_coefficient_correlation(np.zeros_like(e), e) == 0.0
    assert metrics.emotion_accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError):
        metrics.mouth_coefficient_correlation(e[:, :10], e[:, :10])


def test_stylesim_and_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert metrics.stylesim(a, a) == pytest.approx(1.0)
    assert metrics.stylesim(a, a[::-1]) == pytest.approx(0.0)
    assert metrics.stylesim(a[0], -a[0]) == pytest.approx(-1.0)
    assert metrics.stylesim(np.zeros(2), a[0]) == 0.0


def test_dcls_separated_vs_mixed():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.repeat(["angry", "happy", "sad"], 50)
    separated = centres[np.repeat(np.arange(3), 50)] + rng.normal(0, 1.0, (150, 2))
    mixed = rng.normal(0, 5.0, (150, 2))
    d_sep, d_mix = metrics.dcls(separated, labels), metrics.dcls(mixed, labels)
    assert set(d_sep) == {"angry", "happy", "sad"}
    assert min(d_sep.values()) > 5.0 > 1.0 > max(d_mix.values())
    # Hand-computed: two classes of two points each.
    x = np.array([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]])
    assert metrics.dcls(x, [0, 0, 1, 1]) == {"0": 4.0, "1": 4.0}
    with pytest.raises(ValueError, match="at least 2 classes"):
        metrics.dcls(x[:3], [0, 0, 1])


def test_identity_leakage():
    ref, style = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    faithful = np.tile([1.0, 0.1], (4, 1))
    leaked = np.tile([0.1, 1.0], (4, 1))
    a, b = metrics.identity_leakage(faithful, ref, style), metrics.identity_leakage(leaked, ref, style)
    assert a["fraction"] == 0.0 and b["fraction"] == 1.0 and a["margin"] < 0 < b["margin"]
    assert metrics.identity_similarity(faithful, ref) > metrics.identity_similarity(leaked, ref)
    with pytest.raises(ValueError):
        metrics.identity_leakage(faithful, np.zeros(3), style)


def test_mouth_landmarks_lie_on_the_drawn_mouth():
    ident = synthetic.make_identity(777, 2)
    clip = synthetic.generate_clip(ident, "surprised", 3, 4, num_frames=30, resolution=256)
    mouth = synthetic.mouth_landmarks(ident, clip.controls, clip.pose, 256)
    lip = np.asarray(ident.style.lip) * 255
    checked = 0
    for f in range(30):
        upper_lip = 0.5 * (mouth[f, 3] + mouth[f, 6])  # between outer and inner upper lip edges
        x, y = np.floor(upper_lip).astype(int)
        assert np.abs(clip.frames[f, y, x] - lip).max() < 60, f
        if np.linalg.norm(mouth[f, 7] - mouth[f, 6]) > 6:  # open: the inside of the mouth is dark or teeth
            x, y = np.floor(0.5 * (mouth[f, 6] + mouth[f, 7]) + [0, 1]).astype(int)
            assert np.abs(clip.frames[f, y, x].astype(float) - lip).max() > 60, f
            checked += 1
    assert checked > 0


def test_stylesim_encoded_takes_any_encoder():
    clip, _ = _clip_landmarks()
    e = clip.expression

    def encoder(x):
        return np.asarray(x).mean(-2)

    assert metrics.stylesim_encoded(e, e, encoder) == pytest.approx(1.0)
    assert metrics.stylesim_encoded(e, -e, encoder) == pytest.approx(-1.0)


def test_paired_verdict_needs_a_difference_beyond_the_noise():
    base = [{"m": v} for v in (1.0, 2.0, 3.0, 4.0)]
    better = [{"m": r["m"] - 0.5 + 0.01 * k} for k, r in enumerate(base)]  # lower by ~0.5 on every clip
    noisy = [{"m": r["m"] + s} for r, s in zip(base, (0.3, -0.3, 0.2, -0.25))]  # mean diff ~0, large spread
    assert metrics.paired_verdict(better, base, "m", lower_is_better=True)["verdict"] == "reached"
    assert metrics.paired_verdict(base, better, "m", lower_is_better=True)["verdict"] == "missed"
    assert metrics.paired_verdict(better, base, "m", lower_is_better=False)["verdict"] == "missed"
    v = metrics.paired_verdict(noisy, base, "m", lower_is_better=True)
    assert v["verdict"] == "within noise" and v["clips"] == 4
    assert v["mean_difference"] == pytest.approx(-np.mean([0.3, -0.3, 0.2, -0.25]))
    with pytest.raises(ValueError, match="same clips"):
        metrics.paired_verdict(base, base[:2], "m", True)
