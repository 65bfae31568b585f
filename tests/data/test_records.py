"""Clip record schema, .npz round trip, index.json and the synthetic dataset writer."""

import dataclasses
import json
import os

import numpy as np
import pytest

from jaxtalk.data import records, synthetic
from jaxtalk.data.records import ClipRecord, RecordError


@pytest.fixture(scope="module")
def clip():
    return synthetic.generate_clip(synthetic.make_identity(0, 0), "surprised", 2, seed=3, num_frames=8,
                                   resolution=64)


@pytest.fixture()
def record(clip):
    return ClipRecord.from_synthetic(clip, clip_id="c0")


def test_round_trip_is_exact(tmp_path, record):
    path = records.write_record(tmp_path / "c0.npz", record)
    back = records.read_record(path)
    for f in dataclasses.fields(ClipRecord):
        a, b = getattr(record, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            np.testing.assert_array_equal(a, b, err_msg=f.name)
        else:
            assert a == b, f.name
    assert sorted(os.listdir(tmp_path)) == ["c0.npz"]  # no temporary files left


def test_optional_fields_may_be_absent(tmp_path, record):
    bare = dataclasses.replace(record, controls=None, action_units=None, phonemes=None)
    back = records.read_record(records.write_record(tmp_path / "bare.npz", bare))
    assert back.controls is None and back.action_units is None and back.phonemes is None


@pytest.mark.parametrize("field,value,message", [
    ("frames", lambda r: r.frames.astype(np.float32), r"frames: expected uint8 array of shape \(F, H, W, 3\)"),
    ("frames", lambda r: r.frames[..., :1], r"frames: expected uint8 array of shape \(F, H, W, 3\)"),
    ("expression", lambda r: r.expression[:, :50], r"expression: expected float32 array of shape \(F, 64\)"),
    ("pose", lambda r: r.pose[:-1], r"pose: expected 8 rows \(one per frame\)"),
    ("head_kps", lambda r: r.head_kps[:, :5], r"head_kps: expected float32 array of shape \(F, 8, 2\)"),
    ("audio", lambda r: r.audio[:1000], r"audio: expected about 5120 samples \(8 frames at 25 fps, 16 kHz\)"),
    ("audio", lambda r: np.stack([r.audio, r.audio], 1), r"audio: expected float32 array of shape \(S,\)"),
    ("controls", lambda r: r.controls[:, :3], r"controls: expected None or float32 array of shape \(F, 17\)"),
    ("emotion", lambda r: "joyful", "emotion: expected one of neutral, angry"),
    ("intensity", lambda r: 4, "intensity: expected 1 for neutral, 1, 2 or 3 otherwise, got 4"),
    ("fps", lambda r: 0, "fps: expected a positive number"),
    ("emotion_texts", lambda r: "happy", "emotion_texts: expected a list of non-empty strings"),
])
def test_malformed_record_names_the_field(record, field, value, message):
    kwargs = {f.name: getattr(record, f.name) for f in dataclasses.fields(ClipRecord)}
    kwargs[field] = value(record)
    with pytest.raises(RecordError, match=message) as info:
        ClipRecord(**kwargs)
    text = str(info.value)
    assert "\n" not in text and text.count("expected") == 1  # one error, for the one bad field


def test_nan_values_are_rejected(record):
    pose = record.pose.copy()
    pose[0, 0] = np.nan
    with pytest.raises(RecordError, match="pose: expected finite values"):
        dataclasses.replace(record, pose=pose)


def test_float64_arrays_are_stored_as_float32(record):
    r = dataclasses.replace(record, expression=record.expression.astype(np.float64))
    assert r.expression.dtype == np.float32


def test_corrupt_file_gives_one_error_naming_it(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RecordError, match="broken.npz: not a readable clip record"):
        records.read_record(bad)
    with pytest.raises(RecordError, match="clip file not found"):
        records.read_record(tmp_path / "missing.npz")
    with pytest.raises(RecordError, match="no dataset index"):
        records.read_index(tmp_path)


def test_failed_write_leaves_nothing(tmp_path, record, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        records.write_record(tmp_path / "c.npz", record)
    assert os.listdir(tmp_path) == []


def test_write_synthetic_dataset(tmp_path):
    index_path = records.write_synthetic_dataset(tmp_path, num_identities=2, clips_per_identity=3, seed=7,
                                                 resolution=64, num_frames=6)
    index = json.loads(index_path.read_text())
    assert index["format"] == "jaxtalk-clips" and len(index["clips"]) == 6
    assert index["identities"] == ["id0000", "id0001"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["clip_00000.npz", "clip_00001.npz", "clip_00002.npz", "clip_00003.npz", "clip_00004.npz",
                     "clip_00005.npz", "index.json"]
    conditions = set()
    for entry in index["clips"]:
        r = records.read_record(tmp_path / entry["file"])
        assert (r.identity, r.emotion, r.intensity, r.num_frames, r.height) == (
            entry["identity"], entry["emotion"], entry["intensity"], 6, 64)
        conditions.add((r.identity, r.emotion, r.intensity))
    assert len(conditions) == 6  # each identity gets distinct emotion conditions
    again = tmp_path / "again"
    records.write_synthetic_dataset(again, 2, 3, seed=7, resolution=64, num_frames=6)
    a = records.read_record(tmp_path / "clip_00004.npz")
    b = records.read_record(again / "clip_00004.npz")
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
