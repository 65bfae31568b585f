"""Speech in common containers (flac, ogg, m4a/aac, mp3 where the encoder exists, aac in mov, opus in webm, the
sound of an mp4) comes in
as 16 kHz mono; too short / clipped / silent speech is refused with one line."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile

from jaxtalk.data import media
from jaxtalk.faces import load_speech


def _encode(path, audio, rate, codec):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame_size = stream.codec_context.frame_size or 1024  # e.g. 1152 mp3, 960 opus, 1024 aac
        for k, start in enumerate(range(0, len(audio), frame_size)):
            block = audio[start:start + frame_size]
            block = np.pad(block, (0, frame_size - len(block)))[None].astype(np.float32)
            fmt = {"libmp3lame": "s16p", "libopus": "flt"}.get(codec, "fltp")
            data = (block * 32767).astype(np.int16) if fmt == "s16p" else block
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, k * frame_size
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".m4a", ".mp3", ".mov", ".webm", ".mp4"])
def test_containers_decode_to_16k_mono(material, tmp_path, suffix):
    speech, sr = soundfile.read(material / "speech.wav", dtype="float32")
    path = tmp_path / f"speech{suffix}"
    if suffix in (".flac", ".ogg"):
        soundfile.write(path, speech, sr)
    elif suffix in (".m4a", ".mov"):  # AAC, alone or as a QuickTime movie's sound track
        _encode(path, speech, sr, "aac")
    elif suffix == ".webm":  # Opus (48 kHz) in WebM, what browsers record
        _encode(path, media.resample(speech, sr, 48000), 48000, "libopus")
    elif suffix == ".mp3":
        if "libmp3lame" not in av.codecs_available:
            pytest.skip("this FFmpeg build has no mp3 encoder")
        _encode(path, speech, sr, "libmp3lame")
    else:
        path = material / "drive.mp4"  # the sound track of a video
    got = load_speech(path)
    want = media.load_audio(material / "speech.wav")
    if suffix == ".mp4":
        assert abs(len(got) - 10 * 640) < 1200
        return
    assert abs(len(got) - len(want)) < 0.05 * 16000  # encoder padding only
    n = min(len(got), len(want)) - 4000
    # same speech: the best lag within 30 ms lines the envelopes up closely
    best = max(np.corrcoef(np.abs(got[lag:lag + n]), np.abs(want[:n]))[0, 1] for lag in range(0, 480, 16))
    assert best > 0.8


def test_bad_speech_is_one_clear_error(tmp_path):
    rate = 16000
    t = np.arange(rate) / rate
    soundfile.write(tmp_path / "short.wav", 0.3 * np.sin(2 * np.pi * 200 * t[:800]), rate)
    soundfile.write(tmp_path / "clipped.wav", np.clip(3 * np.sin(2 * np.pi * 200 * t), -1, 1), rate)
    soundfile.write(tmp_path / "silent.wav", np.zeros(rate), rate)
    for name, message in (("short", "pass at least"), ("clipped", "audio is clipped"), ("silent", "silent")):
        with pytest.raises(media.MediaError, match=message) as err:
            load_speech(tmp_path / f"{name}.wav")
        assert "\n" not in str(err.value)
