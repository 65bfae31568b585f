"""`jaxtalk prepare` and `jaxtalk generate` from a raw photo and a real recording, and bad inputs: one line on
stderr, exit code 2, no output left behind."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
from PIL import Image

from jaxtalk import cli
from jaxtalk.data import media

TINY = ["--devices", "1", "--quiet", "--seed", "0", "sampler.steps=2", "context.overlap=2"]


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("short")
    subprocess.run([shutil.which("espeak-ng"), "-w", str(d / "hello.wav"), "Hello."], check=True,
                   capture_output=True)
    return d / "hello.wav"


def test_prepare_writes_what_generate_consumes(material, short_speech, tmp_path, capsys):
    out = tmp_path / "prepared"
    rc = cli.main(["prepare", "--image", str(material / "astronaut.png"), "--audio", str(short_speech),
                   "--out", str(out), "--debug-dir", str(tmp_path / "debug"), "--size", "256"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["system"] == "svp" and meta["retarget"] == "fix_face" and len(meta["face_box"]) == 4
    assert np.load(out / "kps.npy").shape == (8, 2)
    assert media.load_image(out / "reference.png").shape == (256, 256, 3)
    assert (tmp_path / "debug" / "overlay.png").is_file() and "next: jaxtalk generate" in printed.out
    video = tmp_path / "talk.mp4"
    rc = cli.main(["generate", "--image", str(out), "--out", str(video), *TINY])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    info = media.probe_video(video)
    assert info["has_audio"] and info["num_frames"] >= 3


def test_generate_from_raw_photo_and_wav_without_keypoints(material, short_speech, tmp_path, capsys):
    video = tmp_path / "talk.mp4"
    rc = cli.main(["generate", "--image", str(material / "astronaut.png"), "--audio", str(short_speech),
                   "--out", str(video), "--paste-back", "--debug-dir", str(tmp_path / "dbg"), *TINY])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "face: box [" in printed.out and "fix_face" in printed.out
    info = media.probe_video(video)
    assert (info["width"], info["height"]) == (512, 512)  # pasted back into the full photo
    frame = media.read_video_frames(video)[0][0]
    corner = np.asarray(Image.open(material / "astronaut.png"))[:64, :64].astype(int)
    assert np.abs(frame[:64, :64].astype(int) - corner).mean() < 12  # the photo outside the face is kept
    assert (tmp_path / "dbg" / "crop_overlay.png").is_file()


def test_generate_with_a_driving_video(material, short_speech, tmp_path, capsys):
    video = tmp_path / "talk.mp4"
    rc = cli.main(["generate", "--image", str(material / "astronaut.png"), "--driving", str(material / "drive.mp4"),
                   "--audio", str(short_speech), "--retarget", "naive_retarget", "--out", str(video), *TINY])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "naive_retarget" in printed.out and media.probe_video(video)["has_audio"]


@pytest.fixture(scope="module")
def bad(material, tmp_path_factory):
    """Made-up bad inputs, written once."""
    d = tmp_path_factory.mktemp("bad")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "tiny.png")
    (d / "text.png").write_text("this is not an image\n")
    jpg = d / "full.jpg"
    Image.open(material / "astronaut.png").save(jpg, quality=90)
    (d / "truncated.jpg").write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 3])
    pair = np.asarray(Image.open(material / "astronaut.png"))[:, 100:356]
    Image.fromarray(np.concatenate([pair, pair], axis=1)).save(d / "two.png")
    Image.new("RGB", (8000, 8000), (90, 120, 150)).save(d / "huge.jpg", quality=50)
    rate = 16000
    soundfile.write(d / "silent.wav", np.zeros(rate, np.float32), rate)
    speech, sr = soundfile.read(material / "speech.wav", dtype="float32")
    soundfile.write(d / "clipped.wav", np.clip(speech * 40, -1, 1), sr)
    soundfile.write(d / "short.wav", speech[: sr // 20], sr)
    return d


@pytest.mark.parametrize("case, image, audio, extra, message", [
    ("no face", "{m}/coffee.png", "{m}/speech.wav", [], "no face found"),
    ("two faces", "{d}/two.png", "{m}/speech.wav", [], "2 faces found"),
    ("face index out of range", "{d}/two.png", "{m}/speech.wav", ["--face-index", "5"], "out of range"),
    ("16x16 image", "{d}/tiny.png", "{m}/speech.wav", [], "too small to find a face"),
    ("8000x8000 image without a face", "{d}/huge.jpg", "{m}/speech.wav", [], "no face found"),
    ("text named png", "{d}/text.png", "{m}/speech.wav", [], "cannot be read as an image"),
    ("truncated jpeg", "{d}/truncated.jpg", "{m}/speech.wav", [], "cannot be read as an image"),
    ("missing image", "{d}/nowhere.png", "{m}/speech.wav", [], "image file not found"),
    ("silent audio", "{m}/astronaut.png", "{d}/silent.wav", [], "audio is silent"),
    ("clipped audio", "{m}/astronaut.png", "{d}/clipped.wav", [], "audio is clipped"),
    ("too short audio", "{m}/astronaut.png", "{d}/short.wav", [], "pass at least"),
    ("unreadable audio", "{m}/astronaut.png", "{d}/text.png", [], "has no audio stream"),
    ("driving without sound", "{m}/astronaut.png", None, ["--driving", "{m}/drive_silent.mp4"], "no audio stream"),
    ("retarget without driving", "{m}/astronaut.png", "{m}/speech.wav", ["--retarget", "naive_retarget"],
     "needs a driving video"),
])
def test_prepare_bad_input_is_one_line(material, bad, tmp_path, capsys, case, image, audio, extra, message):
    fill = lambda s: s.format(m=material, d=bad)
    out = tmp_path / "out"
    argv = ["prepare", "--image", fill(image), "--out", str(out), *[fill(a) for a in extra]]
    if audio:
        argv += ["--audio", fill(audio)]
    rc = cli.main(argv)
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.strip()]
    assert rc == 2, f"{case}: {printed.out} {printed.err}"
    assert len(lines) == 1 and lines[0].startswith("jaxtalk prepare: error: "), lines
    assert message in lines[0], lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


@pytest.mark.parametrize("case, image, audio, message", [
    ("no face, --face on", "{m}/coffee.png", "{m}/speech.wav", "no face found"),
    ("clipped audio", "{m}/astronaut.png", "{d}/clipped.wav", "audio is clipped"),
    ("truncated jpeg", "{d}/truncated.jpg", "{m}/speech.wav", "cannot be read as an image"),
])
def test_generate_bad_input_is_one_line(material, bad, tmp_path, capsys, case, image, audio, message):
    fill = lambda s: s.format(m=material, d=bad)
    out = tmp_path / "talk.mp4"
    rc = cli.main(["generate", "--image", fill(image), "--audio", fill(audio), "--face", "on", "--out", str(out),
                   *TINY])
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("jaxtalk generate: error: "), (case, lines)
    assert message in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_input_through_the_installed_command(material, bad, tmp_path):
    """The same rule through a real process: exit status 2, one stderr line, no traceback, no output."""
    import sys

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", "import sys; from jaxtalk.cli import main; sys.exit(main())",
                          "prepare", "--image", str(bad / "text.png"), "--audio", str(material / "speech.wav"),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith(f"jaxtalk prepare: error: {bad / 'text.png'}: cannot be read "
                                                   "as an image"), lines
    assert "Traceback" not in run.stderr
    assert not out.exists()


def test_awkward_images_and_audio_work_through_prepare(astronaut_analysis, material, tmp_path, capsys):
    """Grey, RGBA, CMYK and EXIF-rotated photos are not errors: prepare finds the same face in each; 8 kHz mono
    and 48 kHz stereo speech become 16 kHz mono audio.wav."""
    im = Image.open(material / "astronaut.png")
    im.convert("L").save(tmp_path / "grey.png")
    rgba = im.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(tmp_path / "rgba.png")
    im.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned anticlockwise; viewers turn it 90 degrees clockwise
    im.rotate(90, expand=True).save(tmp_path / "exif.jpg", quality=95, exif=exif)
    speech, sr = soundfile.read(material / "speech.wav", dtype="float32")
    for rate, channels in ((8000, 1), (48000, 2)):
        x = media.resample(speech, sr, rate)
        soundfile.write(tmp_path / f"s{rate}.wav", np.stack([x] * channels, 1), rate)
    for k, name in enumerate(("grey.png", "rgba.png", "cmyk.jpg", "exif.jpg")):
        out = tmp_path / f"prep_{k}"
        rate = (8000, 48000)[k % 2]
        rc = cli.main(["prepare", "--image", str(tmp_path / name), "--audio", str(tmp_path / f"s{rate}.wav"),
                       "--out", str(out), "--size", "128"])
        printed = capsys.readouterr()
        assert rc == 0, (name, printed.err)
        meta = json.loads((out / "meta.json").read_text())
        np.testing.assert_allclose(meta["face_box"], astronaut_analysis.box, atol=8, err_msg=name)
        info = soundfile.info(out / "audio.wav")
        assert (info.samplerate, info.channels) == (16000, 1)
        assert abs(info.frames - len(speech) * 16000 / sr) < 64
