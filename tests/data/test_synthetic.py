"""Synthetic talking-face generator: determinism, identities, emotions, visemes, coefficients, keypoints."""

import numpy as np
import pytest

from jaxtalk.data import facs, render, speech, synthetic
from jaxtalk.data.facs import CONTROL_INDEX as CI


def _au(aus: np.ndarray, name: str) -> float:
    return float(aus[..., facs.AU_NAMES.index(name)].mean())


@pytest.fixture(scope="module")
def identity():
    return synthetic.make_identity(0, 1)


def test_same_seed_same_clip_and_different_seed_differs(identity):
    a = synthetic.generate_clip(identity, "happy", 2, seed=5, num_frames=12, resolution=64)
    b = synthetic.generate_clip(synthetic.make_identity(0, 1), "happy", 2, seed=5, num_frames=12, resolution=64)
    c = synthetic.generate_clip(identity, "happy", 2, seed=6, num_frames=12, resolution=64)
    for field in ("frames", "audio", "expression", "pose", "head_kps", "controls", "action_units", "phonemes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.emotion_texts == b.emotion_texts
    assert not np.array_equal(a.audio, c.audio)
    assert not np.array_equal(a.pose, c.pose)


def test_shapes_and_dtypes(identity):
    n, res = 10, 96
    clip = synthetic.generate_clip(identity, "sad", 3, seed=1, num_frames=n, fps=25.0, resolution=res)
    assert clip.frames.shape == (n, res, res, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (n * 16000 // 25,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0 and np.abs(clip.audio).max() > 0.05
    assert clip.expression.shape == (n, 64) and clip.pose.shape == (n, 6)
    assert clip.head_kps.shape == (n, 8, 2) and clip.head_kps.dtype == np.float32
    assert clip.controls.shape == (n, facs.NUM_CONTROLS) and clip.action_units.shape == (n, len(facs.AU_NAMES))
    assert clip.controls.min() >= 0 and clip.controls.max() <= 1
    assert clip.action_units.min() >= 0 and clip.action_units.max() <= 5


def test_identities_differ_in_appearance_and_habits():
    people = synthetic.make_identities(6, seed=3)
    assert len({p.name for p in people}) == 6
    for field in ("face_aspect", "eye_spacing", "skin", "hair", "background"):
        assert len({getattr(p.style, field) for p in people}) == 6, field
    for field in ("mouth_amplitude", "brow_speech", "blink_rate", "nod_amplitude", "f0"):
        assert len({getattr(p, field) for p in people}) == 6, field
    # The same person is reproduced independently of the population size.
    assert synthetic.make_identity(3, 4) == people[4]
    # Rendered neutral faces differ clearly between identities.
    frames = [synthetic.generate_clip(p, "neutral", 1, seed=0, num_frames=1, resolution=64).frames[0]
              for p in people[:3]]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(frames[i].astype(int) - frames[j].astype(int)).mean() > 10


def test_speaking_habits_scale_mouth_motion():
    calm = synthetic.make_identity(0, 0)
    wide = type(calm)(**{**calm.__dict__, "mouth_amplitude": 2.0 * calm.mouth_amplitude})
    c_calm, *_ = synthetic.motion(calm, "neutral", 1, 3, 100, 25.0)
    c_wide, *_ = synthetic.motion(wide, "neutral", 1, 3, 100, 25.0)
    assert c_wide[:, CI["jaw_open"]].mean() > 1.3 * c_calm[:, CI["jaw_open"]].mean()


@pytest.mark.parametrize("emotion,au", [("happy", "AU12"), ("happy", "AU6"), ("sad", "AU15"), ("sad", "AU1"),
                                        ("angry", "AU4"), ("surprised", "AU2"), ("surprised", "AU5"),
                                        ("disgusted", "AU9"), ("contempt", "AU14"), ("fear", "AU20")])
def test_emotion_raises_its_action_units(identity, emotion, au):
    neutral, *_ = synthetic.motion(identity, "neutral", 1, 2, 40, 25.0)
    emo, *_ = synthetic.motion(identity, emotion, 3, 2, 40, 25.0)
    assert _au(facs.action_units(emo), au) > _au(facs.action_units(neutral), au) + 1.5


def test_intensity_is_monotonic(identity):
    levels = [synthetic.motion(identity, "happy", i, 2, 40, 25.0)[0][:, CI["lip_corner_up"]].mean()
              for i in (1, 2, 3)]
    assert levels[0] < levels[1] < levels[2]


def _median_pitch(audio: np.ndarray, sr: int = 16000) -> float:
    """Median autocorrelation pitch over the loudest 40 ms frames (an estimator independent of the generator)."""
    n = 640
    frames = audio[: len(audio) // n * n].reshape(-1, n).astype(np.float64)
    rms = np.sqrt((frames**2).mean(1))
    lo, hi = sr // 500, sr // 60
    pitches = []
    for fr in frames[rms > 0.5 * rms.max()]:
        fr = fr - fr.mean()
        spec = np.fft.rfft(fr, 2 * n)
        acf = np.fft.irfft(spec * np.conj(spec))[:n]
        pitches.append(sr / (lo + int(np.argmax(acf[lo:hi]))))
    return float(np.median(pitches))


def test_emotion_shapes_pitch_and_energy(identity):
    """Pitch measured from the waveform by autocorrelation, not read from the generator's own track."""
    happy = synthetic.generate_clip(identity, "happy", 3, seed=4, num_frames=75, render_video=False)
    sad = synthetic.generate_clip(identity, "sad", 3, seed=4, num_frames=75, render_video=False)
    neutral = synthetic.generate_clip(identity, "neutral", 1, seed=4, num_frames=75, render_video=False)
    p_happy, p_sad, p_neutral = (_median_pitch(c.audio) for c in (happy, sad, neutral))
    assert p_sad < p_neutral < p_happy
    assert p_happy / p_sad > 1.15
    assert 0.8 < p_neutral / identity.f0 < 1.25
    rms = [float(np.sqrt(np.mean(c.audio**2))) for c in (sad, happy)]
    assert rms[0] < rms[1]


def test_bilabials_close_lips_and_open_vowels_open_jaw():
    press, jaw_bil, jaw_open_v, jaw_close_v = [], [], [], []
    for k in range(3):
        controls, _, _, spc = synthetic.motion(synthetic.make_identity(1, k), "neutral", 1, 9, 150, 25.0)
        bil = np.isin(spc.phonemes, speech.BILABIALS)
        press.append(controls[bil, CI["lip_press"]])
        jaw_bil.append(controls[bil, CI["jaw_open"]])
        jaw_open_v.append(controls[np.isin(spc.phonemes, speech.OPEN_VOWELS), CI["jaw_open"]])
        close_v = [speech.PHONEME_INDEX["i"], speech.PHONEME_INDEX["u"]]
        jaw_close_v.append(controls[np.isin(spc.phonemes, close_v), CI["jaw_open"]])
    press, jaw_bil = np.concatenate(press), np.concatenate(jaw_bil)
    jaw_open_v, jaw_close_v = np.concatenate(jaw_open_v), np.concatenate(jaw_close_v)
    assert press.size >= 5 and jaw_open_v.size >= 5 and jaw_close_v.size >= 5
    assert press.mean() > 0.75 and np.median(jaw_bil) < 0.1
    assert jaw_open_v.mean() > 0.5 and jaw_open_v.mean() > jaw_close_v.mean() + 0.2


def test_rounded_vowels_pucker():
    controls, _, _, spc = synthetic.motion(synthetic.make_identity(1, 0), "neutral", 1, 9, 150, 25.0)
    rounded = np.isin(spc.phonemes, speech.ROUNDED_VOWELS)
    spread = np.isin(spc.phonemes, [speech.PHONEME_INDEX["i"], speech.PHONEME_INDEX["e"]])
    assert controls[rounded, CI["lip_pucker"]].mean() > controls[spread, CI["lip_pucker"]].mean() + 0.3


def _mouth_dark_pixels(identity, controls) -> int:
    geo = render.Geometry(identity.style, np.zeros(6), 128, 128)
    img = np.ones((128, 128, 3), np.float32)
    render.render_face(img, identity.style, controls, geo, np.zeros(2))
    return int(np.sum(np.abs(img - render._MOUTH).max(-1) < 0.05))


def test_rendered_mouth_follows_controls(identity):
    closed = np.zeros(facs.NUM_CONTROLS, np.float32)
    closed[CI["lip_press"]] = 1.0
    opened = np.zeros(facs.NUM_CONTROLS, np.float32)
    opened[CI["jaw_open"]] = 1.0
    assert _mouth_dark_pixels(identity, closed) == 0
    assert _mouth_dark_pixels(identity, opened) > 20


def test_expression_is_fixed_basis_times_controls(identity):
    clip = synthetic.generate_clip(identity, "fear", 2, seed=3, num_frames=20, render_video=False)
    basis = facs.expression_basis()
    assert basis.shape == (64, facs.NUM_CONTROLS)
    np.testing.assert_allclose(clip.expression, clip.controls @ basis.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(facs.controls_from_expression(clip.expression), clip.controls, atol=1e-5)
    gram = basis.T.astype(np.float64) @ basis
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)  # orthogonal columns
    assert not np.allclose(basis, np.eye(64, facs.NUM_CONTROLS) * basis[0, 0])  # dense, not an embedding


def test_keypoints_in_frame_ordered_and_on_the_face():
    for k in range(4):
        person = synthetic.make_identity(2, k)
        clip = synthetic.generate_clip(person, facs.EMOTIONS[k + 1], 3, seed=k, num_frames=40, resolution=64)
        kps = clip.head_kps
        assert np.all(kps >= 0) and np.all(kps < 64)
        assert np.all(kps[:, 0, 0] < kps[:, 2, 0]) and np.all(kps[:, 2, 0] < kps[:, 3, 0])
        assert np.all(kps[:, 3, 0] < kps[:, 1, 0])
        assert np.all(np.diff(kps[:, 4:, 1], axis=1) > 0)  # nose bridge runs down to the tip
        # Open pupils are dark in the frame.
        open_eye = clip.controls[:, CI["eye_close"]] < 0.2
        xy = kps[open_eye][:, 2:4].astype(int).reshape(-1, 2)
        pix = clip.frames[open_eye][np.repeat(np.arange(open_eye.sum()), 2), xy[:, 1], xy[:, 0]]
        assert pix.mean() < 90


def test_keypoints_scale_with_resolution(identity):
    small = synthetic.generate_clip(identity, "angry", 1, seed=8, num_frames=5, resolution=64, render_video=False)
    big = synthetic.generate_clip(identity, "angry", 1, seed=8, num_frames=5, resolution=256, render_video=False)
    np.testing.assert_allclose(big.head_kps, 4 * small.head_kps, atol=1e-2)


def test_emotion_texts_describe_action_units():
    assert facs.emotion_texts("happy", 3, "female")[0] == "She is joyful, pulling up the lip corners."
    angry = facs.emotion_texts("angry", 1, "male")
    assert angry[0].startswith("He is annoyed, furrowing the brows")
    assert len(facs.emotion_texts("neutral", 1)) == 3
    assert len(facs.emotion_conditions()) == 22


def test_bad_arguments_raise_clear_errors(identity):
    with pytest.raises(ValueError, match="unknown emotion 'joy'"):
        synthetic.generate_clip(identity, "joy", 1, seed=0, num_frames=2)
    with pytest.raises(ValueError, match="intensity levels"):
        synthetic.generate_clip(identity, "neutral", 2, seed=0, num_frames=2)
    with pytest.raises(ValueError, match=r"resolution must be an int in \[64, 512\]"):
        synthetic.generate_clip(identity, "happy", 1, seed=0, num_frames=2, resolution=32)
