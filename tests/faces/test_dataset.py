"""`jaxtalk prepare-dataset`: folder layouts, kept and skipped videos, coefficient files, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jaxtalk import cli
from jaxtalk.data import media, records
from jaxtalk.faces import dataset

from .conftest import driving_frames


def test_layouts(tmp_path):
    for rel in ("M003/video/front/angry/level_2/001.mp4", "M003/video/left_30/angry/level_2/001.mp4",
                "M003/video/front/neutral/level_1/002.mp4", "hdtf/WDA_BarackObama_000.mp4", "talk.mp4",
                "anna/take1.mov", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = {i.relative: (i.identity, i.emotion, i.intensity) for i in dataset.find_videos(tmp_path)}
    assert got == {"M003/video/front/angry/level_2/001.mp4": ("M003", "angry", 2),
                   "M003/video/front/neutral/level_1/002.mp4": ("M003", "neutral", 1),
                   "hdtf/WDA_BarackObama_000.mp4": ("WDA_BarackObama", "neutral", 1),
                   "talk.mp4": ("talk", "neutral", 1), "anna/take1.mov": ("anna", "neutral", 1)}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory, astronaut, no_face, material):
    d = tmp_path_factory.mktemp("videos")
    speech = media.load_audio(material / "speech.wav")
    frames = driving_frames(astronaut, n=8)
    sound = speech[: 8 * 640]
    (d / "anna").mkdir()
    media.write_video(d / "anna" / "talk.mp4", frames, 25.0, sound)
    media.write_video(d / "silent.mp4", frames, 25.0)
    coffee = np.asarray(Image.fromarray(no_face).resize((256, 256)))
    media.write_video(d / "coffee.mp4", np.stack([coffee] * 8), 25.0, sound)
    shifted = np.roll(frames, 110, axis=2)
    media.write_video(d / "cut.mp4", np.concatenate([frames[:4], shifted[4:]]), 25.0, sound)
    half = frames[:, :, 48:176]
    media.write_video(d / "two.mp4", np.concatenate([half, half], axis=2), 25.0, sound)
    return d


def test_prepare_dataset_keeps_talking_heads_and_reports_the_rest(video_dir, tmp_path, capsys):
    out = tmp_path / "data"
    rc = cli.main(["prepare-dataset", str(video_dir), "--out", str(out), "--size", "64", "--quiet"])
    printed = capsys.readouterr()
    assert rc == 2 and "--zero-expression" in printed.err and not out.exists()
    rc = cli.main(["prepare-dataset", str(video_dir), "--out", str(out), "--size", "64", "--quiet",
                   "--zero-expression"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    report = json.loads((out / dataset.REPORT_NAME).read_text())
    assert report["kept"] == ["anna/talk.mp4"]
    reasons = {s["video"]: s["reason"] for s in report["skipped"]}
    assert "no face" in reasons["coffee.mp4"] and "no audio stream" in reasons["silent.mp4"]
    assert "cut" in reasons["cut.mp4"] and "second face" in reasons["two.mp4"]
    index = records.read_index(out)
    assert [c["clip_id"] for c in index["clips"]] == ["anna_talk"]
    rec = records.read_record(out / index["clips"][0]["file"])
    assert rec.frames.shape == (8, 64, 64, 3) and rec.head_kps.shape == (8, 8, 2) and rec.identity == "anna"
    assert np.all((rec.head_kps > 0) & (rec.head_kps < 64)) and not rec.expression.any()
    assert len(rec.audio) == 8 * 640
    # resuming keeps the written clip
    rc = cli.main(["prepare-dataset", str(video_dir), "--out", str(out), "--size", "64", "--quiet",
                   "--zero-expression"])
    assert rc == 0 and json.loads((out / dataset.REPORT_NAME).read_text())["resumed"] == 1
    # a different crop size makes the clip again instead of keeping the old one
    rc = cli.main(["prepare-dataset", str(video_dir), "--out", str(out), "--size", "48", "--quiet",
                   "--zero-expression"])
    assert rc == 0 and json.loads((out / dataset.REPORT_NAME).read_text())["resumed"] == 0
    assert records.read_record(out / "anna_talk.npz").frames.shape == (8, 48, 48, 3)


@pytest.mark.slow
def test_parallel_workers_give_the_same_clips(video_dir, tmp_path):
    one = dataset.prepare_dataset(video_dir, tmp_path / "one", size=64, zero_expression=True, progress=False)
    two = dataset.prepare_dataset(video_dir, tmp_path / "two", size=64, zero_expression=True, workers=2,
                                  progress=False)
    assert one == two
    a, b = (records.read_record(tmp_path / d / "anna_talk.npz") for d in ("one", "two"))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_allclose(a.head_kps, b.head_kps, atol=1e-4)


def test_coefficient_files_give_the_expression(video_dir, tmp_path):
    coeffs = tmp_path / "coeffs"
    (coeffs / "anna").mkdir(parents=True)
    coeff = np.random.default_rng(0).normal(size=(8, 257)).astype(np.float32)
    from scipy.io import savemat

    savemat(coeffs / "anna" / "talk.mat", {"coeff": coeff})
    item = next(i for i in dataset.find_videos(video_dir) if i.relative == "anna/talk.mp4")
    got = dataset.process_video(item, str(tmp_path), 64, str(coeffs), 0.5, 5)
    assert got["status"] == "kept"
    np.testing.assert_array_equal(records.read_record(tmp_path / "anna_talk.npz").expression, coeff[:, 80:144])
    other = next(i for i in dataset.find_videos(video_dir) if i.relative == "cut.mp4")
    missing = dataset.process_video(other, str(tmp_path), 64, str(coeffs), 0.5, 5)
    assert missing["status"] == "skipped" and "cut.mat" in missing["reason"]
