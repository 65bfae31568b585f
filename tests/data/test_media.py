"""Audio loading / resampling, image conversion, mp4 writing with sound, and one-line MediaErrors."""

import os

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from jaxtalk.data import media
from jaxtalk.data.media import MediaError


def _tone(rate: int, seconds: float, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.4 * np.sin(2 * np.pi * hz * t)
    return np.stack([mono * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_44k_stereo_wav_becomes_16k_mono(tmp_path):
    path = tmp_path / "stereo.wav"
    stereo = _tone(44100, 1.0, 440.0, channels=2)
    soundfile.write(path, stereo, 44100, subtype="PCM_16")
    audio = media.load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    assert abs(_dominant_hz(audio, 16000) - 440.0) < 2.0
    # Channels are averaged: amplitude 0.4 * mean(0.5, 1.0) = 0.3 (away from the filter's edge transients).
    assert abs(np.abs(audio[2000:-2000]).max() - 0.3) < 0.01


@pytest.mark.parametrize("suffix,fmt", [(".flac", "FLAC"), (".ogg", "OGG")])
def test_other_soundfile_formats(tmp_path, suffix, fmt):
    path = tmp_path / f"a{suffix}"
    soundfile.write(path, _tone(22050, 0.5, 300.0), 22050, format=fmt)
    audio = media.load_audio(path)
    assert abs(len(audio) - 8000) <= 1 and abs(_dominant_hz(audio, 16000) - 300.0) < 4.0


def test_mp3(tmp_path):
    path = tmp_path / "a.mp3"
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile cannot write mp3")
    soundfile.write(path, _tone(44100, 0.5, 300.0), 44100, format="MP3")
    audio = media.load_audio(path)
    assert abs(len(audio) / 16000 - 0.5) < 0.08 and abs(_dominant_hz(audio, 16000) - 300.0) < 4.0


def test_audio_track_of_an_mp4(tmp_path):
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    path = media.write_video(tmp_path / "v.mp4", frames, 25.0, _tone(16000, 0.4, 500.0)[:, 0])
    audio = media.load_audio(path)
    assert abs(len(audio) / 16000 - 0.4) < 0.1 and abs(_dominant_hz(audio, 16000) - 500.0) < 5.0


def _one_line_media_error(path, match):
    with pytest.raises(MediaError, match=match) as info:
        media.load_audio(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_corrupt_empty_silent_and_missing_audio_raise_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    _one_line_media_error(corrupt, "cannot be decoded as audio")
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    _one_line_media_error(empty, r"is empty \(0 bytes\)")
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(bytes(range(256)) * 4)
    _one_line_media_error(garbage, "cannot be decoded as audio")
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000, np.float32), 16000)
    assert "silent" in _one_line_media_error(silent, "audio is silent")
    _one_line_media_error(tmp_path / "nope.wav", "not found")
    video_only = media.write_video(tmp_path / "mute.mp4", np.zeros((3, 32, 32, 3), np.uint8), 25.0)
    _one_line_media_error(video_only, "has no audio stream")


def test_images_to_rgb_uint8(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    np.testing.assert_array_equal(media.to_rgb_uint8(grey), np.repeat(grey[..., None], 3, -1))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # transparent pixel shows the background
    out = media.to_rgb_uint8(rgba, background=(0, 0, 255))
    np.testing.assert_array_equal(out[1, 1], [200, 0, 0])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(media.to_rgb_uint8(np.ones((2, 2, 3)) * 0.5), np.full((2, 2, 3), 128))
    for mode, arr in (("L", grey), ("RGBA", rgba), ("RGB", np.dstack([grey] * 3))):
        Image.fromarray(arr, mode=mode).save(tmp_path / f"{mode}.png")
        img = media.load_image(tmp_path / f"{mode}.png")
        assert img.shape[-1] == 3 and img.dtype == np.uint8
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    assert media.load_image(tmp_path / "p.png").shape == (8, 8, 3)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(MediaError, match="junk.png: cannot be read as an image"):
        media.load_image(tmp_path / "junk.png")
    with pytest.raises(MediaError, match="expected"):
        media.to_rgb_uint8(np.zeros((4, 4, 2)))


def test_mp4_has_video_and_audio_streams(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 255, (25, 8, 8, 3), dtype=np.uint8), 8, 1), 8, 2)
    audio = _tone(16000, 1.0, 440.0)[:, 0]
    path = media.write_video(tmp_path / "out" / "clip.mp4", frames, 25.0, audio)
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.audio[0].rate == 16000
    back, fps = media.read_video_frames(path)
    assert back.shape == frames.shape and fps == 25.0
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 12  # lossy but close
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.mp4"]
    info = media.probe_video(path)
    assert info["has_audio"] and info["num_frames"] == 25 and (info["width"], info["height"]) == (64, 64)


def test_odd_sizes_are_padded(tmp_path):
    path = media.write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 45, 3), np.uint8), 10.0)
    assert media.read_video_frames(path)[0].shape == (2, 32, 46, 3)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "fail.mp4"
    target_before = tmp_path / "keep.mp4"
    media.write_video(target_before, np.zeros((2, 16, 16, 3), np.uint8), 10.0)
    real = av.VideoFrame.from_ndarray
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("encoder crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", flaky)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        media.write_video(target, np.zeros((10, 16, 16, 3), np.uint8), 10.0, np.full(1600, 0.1, np.float32))
    with pytest.raises(RuntimeError, match="encoder crashed"):  # an existing file is kept intact
        media.write_video(target_before, np.zeros((10, 16, 16, 3), np.uint8), 10.0)
    assert sorted(os.listdir(tmp_path)) == ["keep.mp4"]
    monkeypatch.undo()
    assert media.read_video_frames(target_before)[0].shape[0] == 2


def test_bad_frames_raise(tmp_path):
    with pytest.raises(MediaError, match=r"frames must be uint8 \(F, H, W, 3\)"):
        media.write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), np.float32), 25.0)
    assert os.listdir(tmp_path) == []
