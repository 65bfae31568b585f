"""Per-system preparation on the astronaut photo: crop / keypoint consistency, driving tracks, FFHQ alignment,
parsing map, paste-back, and the prepared folder."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxtalk import faces
from jaxtalk.data import media
from jaxtalk.faces import geometry as geo


@pytest.fixture(scope="module")
def svp_still(astronaut, material):
    return faces.prepare_svp(astronaut, material / "speech.wav", size=256)


def test_svp_crop_and_keypoints_agree(astronaut, astronaut_analysis, svp_still):
    p = svp_still
    assert p.reference.shape == (256, 256, 3) and p.kps.shape == (8, 2)
    M = p.matrix
    # the crop is the square around the face box, twice its long side, resized to 256
    box = astronaut_analysis.box
    side = 2 * max(box[2] - box[0], box[3] - box[1])
    assert M[0, 0] == pytest.approx(256 / side) and M[0, 1] == 0 and M[1, 0] == 0
    np.testing.assert_allclose(geo.apply_affine(M, (box[:2] + box[2:]) / 2), [128, 128], atol=1e-3)
    # crop pixels are the original's pixels under M
    x, y = (int(v) for v in astronaut_analysis.head_kps[7])
    qx, qy = geo.apply_affine(M, np.array([x + 0.5, y + 0.5])) - 0.5
    np.testing.assert_allclose(p.reference[int(round(qy)), int(round(qx))], astronaut[y, x], atol=40)
    np.testing.assert_allclose(p.kps, geo.apply_affine(M, astronaut_analysis.head_kps), atol=1e-4)
    # analysing the crop finds the same keypoints (a few pixels of landmark noise)
    again = faces.analyze(p.reference)
    np.testing.assert_allclose(again.head_kps, p.kps, atol=4)
    assert p.meta["face_box"] == [round(float(v), 2) for v in box]


def test_crop_past_the_border_is_edge_padded(astronaut):
    corner = np.ascontiguousarray(astronaut[40:300, 120:380])  # face near the top edge: the square leaves the image
    p = faces.prepare_svp(corner, size=128)
    x0, y0 = p.meta["crop_square"][:2]
    assert y0 < 0  # the square starts above the image
    rows_outside = int(np.ceil(-y0 * 128 / (p.meta["crop_square"][2] - x0)))
    top = p.reference[: max(rows_outside - 1, 1)]
    assert np.all(np.abs(top.astype(int) - top[-1:].astype(int)) <= 2)  # replicated rows, not black


def test_driving_video_track_and_strategies(astronaut, material):
    out = {s: faces.prepare_svp(astronaut, driving_video=material / "drive.mp4", retarget_strategy=s, size=256)
           for s in ("no_retarget", "offset_retarget")}
    ref = faces.prepare_svp(astronaut, size=256).kps
    for s in ("fix_face", "naive_retarget"):  # same track, other rules (tested in detail in test_retarget)
        out[s] = dataclasses.replace(out["no_retarget"], kps=faces.retarget(ref, out["no_retarget"].kps, s))
    still = out["fix_face"].kps
    assert still.shape == (10, 8, 2) and np.all(still == still[0])
    raw = out["no_retarget"].kps
    # the driving photo turns by 8 sin(i / 3) degrees: the eye line's angle follows it (in-plane, anticlockwise)
    eyes = raw[:, 3] - raw[:, 2]
    angle = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    want = -8 * np.sin(np.arange(10) / 3)
    assert np.corrcoef(angle, want)[0, 1] > 0.9 and np.abs((angle - angle[0]) - (want - want[0])).max() < 3
    naive = out["naive_retarget"].kps
    np.testing.assert_allclose(naive[0, 7], still[0, 7], atol=1e-3)  # first nose on the reference nose
    offset = out["offset_retarget"].kps
    np.testing.assert_allclose(offset[0], still[0], atol=1e-3)
    assert np.abs(offset - still).max() > 0.5  # the head moves
    p = out["offset_retarget"]
    assert p.audio is not None and p.meta["fps"] == pytest.approx(25.0) and p.pose.shape == (10, 6)


def test_driving_video_without_sound_needs_audio(astronaut, material):
    with pytest.raises(media.MediaError, match="no audio stream; pass --audio"):
        faces.prepare_svp(astronaut, driving_video=material / "drive_silent.mp4")


def test_style2talker_alignment_pose_parsing(astronaut, astronaut_analysis, material):
    p = faces.prepare_style2talker(astronaut, material / "speech.wav")
    assert p.reference.shape == (256, 256, 3) and p.pose.shape == (6,)
    # FFHQ alignment: eyes level and symmetric about the centre, at about 0.4 of the height
    eyes = p.kps[2:4]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 4 and abs(eyes.mean(0)[0] - 128) < 4
    assert 0.3 * 256 < eyes[0, 1] < 0.5 * 256 and 0.18 * 256 < eyes[1, 0] - eyes[0, 0] <= 0.251 * 256
    parsing = p.extras["parsing"]
    labels = geo.PARSING_LABELS
    ex, ey = (int(v) for v in eyes[0])
    assert parsing[ey, ex] == labels["eye_l"] and parsing[0, 0] == labels["background"]
    nx, ny = (int(v) for v in p.kps[6])
    assert parsing[ny, nx] == labels["nose"]
    assert set(np.unique(parsing)) >= {0, 1, 2, 3, 4, 5, 10, 12, 13}
    np.testing.assert_array_equal(p.extras["identity_exp"], np.zeros(64, np.float32))
    # Deep3DFaceRecon angles: (-pitch, yaw, -roll) of the photo's pose, no translation for a still photo
    a = astronaut_analysis.pose
    np.testing.assert_allclose(p.pose, [-a[0], a[1], -a[2], 0, 0, 0], atol=1e-6)


def test_paste_back_restores_the_photo_outside_and_inside(astronaut, svp_still):
    p = svp_still
    back = faces.paste_back(astronaut, p.reference, p.matrix, feather=8)
    assert back.shape == astronaut.shape
    far = np.zeros(astronaut.shape[:2], bool)
    far[:, :20] = True
    np.testing.assert_array_equal(back[far], astronaut[far])  # untouched outside the crop
    x0, y0, x1, y1 = p.analysis.box.astype(int)
    err = np.abs(back[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1].astype(int)).mean()
    assert err < 6  # the crop pasted back lands where it came from
    grey = np.full_like(p.reference, 128)
    mixed = faces.paste_back(astronaut, grey, p.matrix, feather=8)
    cx, cy = (int(v) for v in (p.analysis.box[:2] + p.analysis.box[2:]) / 2)
    assert np.all(mixed[cy, cx] == 128)


def test_bundle_round_trip(svp_still, tmp_path):
    paths = faces.write_bundle(svp_still, tmp_path / "prep", debug_dir=tmp_path / "debug")
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == [
        "audio.wav", "kps.npy", "meta.json", "pose.npy", "reference.png"]
    meta = json.loads(paths["meta"].read_text())
    assert meta["face_box"] == svp_still.meta["face_box"] and len(meta["face_box"]) == 4
    b = faces.read_bundle(tmp_path / "prep")
    np.testing.assert_array_equal(b["reference"], svp_still.reference)
    np.testing.assert_array_equal(b["kps"], svp_still.kps)
    assert abs(len(b["audio"]) - len(svp_still.audio)) <= 1
    assert (tmp_path / "debug" / "overlay.png").is_file()
    with pytest.raises(ValueError, match="not an empty folder"):
        faces.write_bundle(svp_still, tmp_path / "prep")
