"""V-Express retarget strategies on a hand-made keypoint track, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk.faces import retargeting as rt


def kps(left, right, nose):
    """An 8-point Head-Kps set whose V-Kps points (pupils 2 / 3, nose tip 7) are given; the others sit at the
    nose so they move with the set."""
    k = np.tile(np.asarray(nose, np.float64), (8, 1))
    k[2], k[3] = left, right
    return k


REF = kps((100, 100), (140, 100), (120, 130))  # eye distance 40, nose 30 below the eye line, ratio 1
TRACK = np.stack([kps((50, 50), (70, 50), (60, 70)),  # ratio 1 -> the frame the scales come from: sx 2, sy 1.5
                  kps((52, 50), (72, 50), (64, 65)),
                  kps((55, 52), (75, 52), (66, 68))])


def test_fix_face_and_no_retarget():
    out = rt.retarget(REF, None, "fix_face", num_frames=4)
    assert out.shape == (4, 8, 2) and np.all(out == REF.astype(np.float32))
    np.testing.assert_array_equal(rt.retarget(REF, TRACK, "no_retarget"), TRACK.astype(np.float32))


def test_naive_retarget_scales_then_moves_the_first_nose_onto_the_reference():
    out = rt.retarget(REF, TRACK, "naive_retarget")
    # scaled noses (120, 105), (128, 97.5), (132, 102); shift (0, +25) puts frame 0's nose on (120, 130)
    np.testing.assert_allclose(out[:, 7], [[120, 130], [128, 122.5], [132, 127]], atol=1e-4)
    np.testing.assert_allclose(out[1, 2], [104, 100], atol=1e-4)  # left eye (52, 50) * (2, 1.5) + (0, 25)


def test_offset_retarget_moves_the_reference_by_minus_half_the_nose_motion():
    out = rt.retarget(REF, TRACK, "offset_retarget")
    # nose motion of the scaled track from frame 0: (0, 0), (8, -7.5), (12, -3)
    np.testing.assert_allclose(out[:, 7], [[120, 130], [116, 133.75], [114, 131.5]], atol=1e-4)
    np.testing.assert_allclose(out[2] - REF, np.tile([-6, 1.5], (8, 1)), atol=1e-4)


def test_scale_comes_from_the_frame_with_the_closest_eye_nose_ratio():
    turned = kps((0, 0), (20, 0), (4, 15))  # ratio far from 1
    track = np.stack([turned, TRACK[0] * 2])  # frame 1: ratio 1, eye distance 40 and nose 40 -> sx 1, sy 0.75
    assert rt.eye_nose_ratio(TRACK[0]) == pytest.approx(1.0)
    out = rt.retarget(REF, track, "naive_retarget")
    np.testing.assert_allclose(out[1, 7] - out[0, 7], ([120, 140] - np.array([4, 15])) * [1, 0.75], atol=1e-4)


def test_bad_strategy_and_missing_track():
    with pytest.raises(ValueError, match="choose one of fix_face"):
        rt.retarget(REF, TRACK, "warp")
    with pytest.raises(ValueError, match="needs a driving video"):
        rt.retarget(REF, None, "offset_retarget")
