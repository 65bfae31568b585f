"""Face detection, landmarks and head pose on a real photo; the JAX evaluation of the MediaPipe networks against
the LiteRT interpreter on the same .tflite files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from jaxtalk import faces
from jaxtalk.faces import mediapipe as mp
from jaxtalk.faces import tflite

# sha256 of the files in the mediapipe==0.10.21 wheels (mediapipe/modules/face_detection|face_landmark/)
WHEEL_SHA256 = {
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    "face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
}


@pytest.mark.parametrize("name", sorted(WHEEL_SHA256))
def test_jax_graph_matches_litert_interpreter(name):
    path = mp.MODEL_DIR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == WHEEL_SHA256[name]
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    graph = tflite.read_graph(path)
    x = np.random.default_rng(0).uniform(-1, 1, graph.input_shape()).astype(np.float32)
    # run at the batch the detection code uses, so the compiled function is shared with the other tests
    ours = [o[:1] for o in mp._network(name)[0](mp._network(name)[1], mp._padded(x))]
    interp = litert.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    ref = {d["index"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    for out_index, got in zip(graph.outputs, ours):
        want = ref[out_index]
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-3 * max(1.0, float(np.abs(want).max())))


def test_anchor_layout():
    a = mp.ssd_anchors()
    assert a.shape == (896, 2)
    np.testing.assert_allclose(a[:2], [[1 / 32, 1 / 32]] * 2)  # first 16x16 cell, two anchors
    np.testing.assert_allclose(a[512], [1 / 16, 1 / 16])  # first 8x8 cell
    np.testing.assert_allclose(a[-1], [15 / 16, 15 / 16])
    full = mp.ssd_anchors("full")
    assert full.shape == (2304, 2)  # 48x48 cells of stride 4, one anchor each
    np.testing.assert_allclose(full[[0, 1, 48, -1]], [[1 / 96, 1 / 96], [3 / 96, 1 / 96], [1 / 96, 3 / 96],
                                                      [95 / 96, 95 / 96]])


def test_full_range_detector_finds_a_small_face(astronaut):
    """The astronaut in the corner of a 1024x1024 picture (her face ~10% of its width): the short-range model
    misses it, the full-range one finds it, and `analyze` (auto) falls back to it."""
    canvas = np.full((1024, 1024, 3), 90, np.uint8)
    canvas[:512, :512] = astronaut
    assert mp.detect_faces(canvas, detector="short") == []
    (box, _, score), = mp.detect_faces(canvas, detector="full")
    assert 160 < box[0] < 200 and 50 < box[1] < 110 and 250 < box[2] < 290 and score > 0.6, box
    a = faces.analyze(canvas)
    assert 190 < a.head_kps[2, 0] < 215 and 90 < a.head_kps[2, 1] < 115 and a.presence > 0.9


def test_astronaut_box_eyes_and_keypoints(astronaut_analysis):
    a = astronaut_analysis
    # the face in skimage's astronaut photo (512x512): hairline ~y 60, chin ~y 180, cheeks ~x 175..275
    x0, y0, x1, y1 = a.box
    assert 160 < x0 < 200 and 60 < y0 < 110 and 250 < x1 < 290 and 150 < y1 < 200, a.box
    assert a.score > 0.8 and a.presence > 0.9 and a.num_faces == 1
    left_eye, right_eye = a.head_kps[2], a.head_kps[3]  # image left / right
    assert 190 < left_eye[0] < 215 and 90 < left_eye[1] < 115, left_eye
    assert 235 < right_eye[0] < 260 and 90 < right_eye[1] < 115, right_eye
    # face edges outside the eyes, nose bridge running down between them to the nose tip
    assert a.head_kps[0, 0] < left_eye[0] < right_eye[0] < a.head_kps[1, 0]
    bridge = a.head_kps[4:]
    assert np.all(np.diff(bridge[:, 1]) > 0) and np.all((bridge[:, 0] > left_eye[0]) & (bridge[:, 0] < right_eye[0]))
    assert bridge[-1, 1] < y1 and a.landmarks.shape == (468, 3)
    # the detector's eye keypoints agree with the mesh's eye centres
    np.testing.assert_allclose(a.detector_kps[:2], a.head_kps[2:4], atol=8)


def test_head_pose_signs_follow_flips_and_rotations(astronaut, astronaut_analysis):
    roll0 = np.degrees(astronaut_analysis.pose[2])
    flipped = faces.analyze(np.ascontiguousarray(astronaut[:, ::-1]))
    assert np.sign(np.degrees(flipped.pose[2])) == -np.sign(roll0) and abs(np.degrees(flipped.pose[2]) + roll0) < 3
    assert abs(np.degrees(flipped.pose[1]) + np.degrees(astronaut_analysis.pose[1])) < 4  # yaw mirrors too
    for angle in (15, -15):  # PIL turns counter-clockwise: the head tilts anticlockwise, roll decreases
        turned = np.asarray(Image.fromarray(astronaut).rotate(angle, center=(225, 125),
                                                              resample=Image.Resampling.BILINEAR))
        got = np.degrees(faces.analyze(turned).pose[2])
        assert abs((got - roll0) + angle) < 4, (angle, got, roll0)
    # the face box follows a horizontal flip
    np.testing.assert_allclose(flipped.box[[2, 0]], 512 - astronaut_analysis.box[[0, 2]], atol=6)


def test_no_face_and_several_faces_are_clear_errors(astronaut, no_face):
    with pytest.raises(faces.FaceError, match="no face found"):
        faces.analyze(no_face)
    pair = np.concatenate([astronaut[:, 100:356], astronaut[:, 100:356]], axis=1)
    with pytest.raises(faces.FaceError, match=r"2 faces found .*--face-index"):
        faces.analyze(pair)
    right = faces.analyze(pair, face_index=1)
    assert right.num_faces == 2 and right.box[0] > 256
    with pytest.raises(faces.FaceError, match="--face-index 2 is out of range"):
        faces.analyze(pair, face_index=2)
    with pytest.raises(faces.FaceError, match="too small"):
        faces.analyze(np.zeros((16, 16, 3), np.uint8))


def test_confidence_threshold(astronaut, astronaut_analysis):
    with pytest.raises(faces.FaceError, match="no face found"):
        faces.analyze(astronaut, min_score=min(0.999999, astronaut_analysis.score + 1e-3))


def test_overlay_draws_on_a_copy(astronaut, astronaut_analysis):
    drawn = faces.overlay(astronaut, astronaut_analysis)
    assert drawn.shape == astronaut.shape and drawn.dtype == np.uint8
    changed = np.any(drawn != astronaut, axis=-1)
    x0, y0, x1, y1 = astronaut_analysis.box.astype(int)
    assert changed[y0:y1, x0:x1].mean() > 0.02 and changed[:, :100].mean() < 0.001  # drawn on the face only
    assert np.array_equal(astronaut, __import__("skimage.data").data.astronaut())


# ------------------------------------------------------------------------------------------------ head pose (PnP)

CANONICAL_SHA256 = "bdbcda96dfcb7da883da124aaa2c55dee49770d934f0fcc71747f8c21bdc75b4"  # @mediapipe/face_mesh 0.4.1657299874


def _rotation(pitch, yaw, roll):
    """Written out here (not taken from the code under test): yaw' = -yaw about y, pitch' = -pitch about x."""
    p, y, r = -pitch, -yaw, roll
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _render_landmarks(R, t, K, noise=0.0, seed=0):
    """The canonical face posed by (R, t) and seen through K, as face-mesh landmarks: 2D pixels + relative depth."""
    from jaxtalk.faces import headpose as hp

    v = hp.canonical_face().vertices * [1, -1, -1]
    cam = v @ R.T + t
    uv = cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2]
    uv += np.random.default_rng(seed).normal(0, noise, uv.shape)
    depth = (cam[:, 2] - cam[:, 2].mean()) * K[0, 0] / t[2]
    return np.concatenate([uv, depth[:, None]], 1)


def test_canonical_face_is_mediapipes_metric_mesh():
    from jaxtalk.faces import headpose as hp

    assert hashlib.sha256(hp.GEOMETRY_FILE.read_bytes()).hexdigest() == CANONICAL_SHA256
    f = hp.canonical_face()
    assert f.vertices.shape == (468, 3) and f.triangles.shape == (898, 3) and len(f.basis) == 33
    assert f.triangles.min() == 0 and f.triangles.max() == 467
    v = f.vertices
    # metric (cm), symmetric about x = 0, y up, z towards the viewer: nose tip in front, edges behind
    assert 14 < v[454, 0] - v[234, 0] < 17 and 16 < v[10, 1] - v[152, 1] < 19
    np.testing.assert_allclose(v[[234, 33, 61], 0], -v[[454, 263, 291], 0], atol=1e-5)
    assert v[1, 2] > v[168, 2] > v[234, 2] and v[10, 1] > v[1, 1] > v[152, 1]
    assert np.all(np.isin(f.basis, np.arange(468))) and np.all(f.weights > 0)


@pytest.mark.parametrize("angles", [(0.2, -0.4, 0.1), (-0.3, 0.6, -0.25), (0.0, 0.0, 0.0), (0.5, 0.1, 0.4)])
def test_pnp_recovers_known_pose(angles):
    from jaxtalk.faces import headpose as hp

    size = (480, 640)
    K = hp.camera_matrix(size)
    R = _rotation(*angles)
    for t in (np.array([0.0, 0.0, 60.0]), np.array([8.0, -5.0, 70.0])):
        fit = hp.fit_head_pose(_render_landmarks(R, t, K), size)
        np.testing.assert_allclose(fit.rotation, R, atol=1e-6)
        np.testing.assert_allclose(fit.translation, t, atol=1e-4)
        assert fit.rms_px < 1e-6
        if t[0] == 0:  # on the optical axis the line of sight is the camera axis
            np.testing.assert_allclose(fit.angles, angles, atol=1e-6)
        # with 0.7 px landmark noise the angles stay within about a degree
        noisy = hp.fit_head_pose(_render_landmarks(R, t, K, noise=0.7, seed=1), size)
        err = np.degrees(np.abs(np.asarray(noisy.angles) - fit.angles))
        assert err.max() < 1.5, err
    # the signs the renderer uses: yaw > 0 turns the nose to the image right, pitch > 0 lifts the chin
    lms = _render_landmarks(_rotation(0, 0.4, 0), np.array([0, 0, 60.0]), K)
    assert lms[1, 0] > lms[[234, 454], 0].mean() + 20
    lms = _render_landmarks(_rotation(0.4, 0, 0), np.array([0, 0, 60.0]), K)
    assert lms[1, 1] < lms[[234, 454], 1].mean() - 10


def test_line_of_sight_pose_of_a_face_off_the_axis():
    """A face looking at the camera from the top left corner has zero line-of-sight angles, whatever its
    camera-frame rotation."""
    from jaxtalk.faces import headpose as hp

    size = (512, 512)
    K = hp.camera_matrix(size)
    t = np.array([-15.0, -12.0, 50.0])
    C = hp.line_of_sight(t)
    np.testing.assert_allclose(C @ [0, 0, 1], t / np.linalg.norm(t), atol=1e-12)
    fit = hp.fit_head_pose(_render_landmarks(C, t, K), size)
    np.testing.assert_allclose(fit.angles, 0, atol=1e-6)
    assert np.degrees(np.abs(hp.euler_from_rotation(fit.rotation))).max() > 10


def test_astronaut_pose_is_plausible(astronaut_analysis):
    """The astronaut faces the camera, head a little lowered and tilted (looking at the photo): pitch between -20
    and 0 degrees, |yaw| < 8, roll between 0 and 8 (clockwise); she sits about arm's length to a few metres
    away for the focal length assumed; the fit leaves a few pixels of error (expression, shape)."""
    a = astronaut_analysis
    pitch, yaw, roll = np.degrees(a.pose[:3])
    assert -20 < pitch < 0 and abs(yaw) < 8 and 0 < roll < 8, (pitch, yaw, roll)
    assert 30 < a.head_translation[2] < 300 and a.head_translation[1] < 0  # above the image centre
    assert a.pose_rms_px < 6
