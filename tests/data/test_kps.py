"""Head-Kps and V-Kps condition images."""

import numpy as np
import pytest

from jaxtalk.data.kps import (
    HEAD_KPS_COLOURS,
    box_masks,
    draw_head_kps,
    draw_v_kps,
    mouth_boxes,
    v_kps_from_head_kps,
)


def test_v_kps_points_and_limbs_follow_v_express_drawing():
    kps3 = np.array([[100.4, 120.7], [300.9, 118.2], [205.0, 260.0]])
    img = draw_v_kps(kps3, 512)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    # Points: filled radius-4 circles at the truncated coordinates, pure R, G, B.
    np.testing.assert_array_equal(img[120, 100], [255, 0, 0])
    np.testing.assert_array_equal(img[118, 300], [0, 255, 0])
    np.testing.assert_array_equal(img[260, 205], [0, 0, 255])
    np.testing.assert_array_equal(img[120, 104], [255, 0, 0])  # 4 px right, still inside
    # Limbs eye->nose at int(0.6 * colour) of the eye's colour, about 4 px either side of the segment.
    mid_l = ((kps3[0] + kps3[2]) / 2).astype(int)
    mid_r = ((kps3[1] + kps3[2]) / 2).astype(int)
    np.testing.assert_array_equal(img[mid_l[1], mid_l[0]], [153, 0, 0])
    np.testing.assert_array_equal(img[mid_r[1], mid_r[0]], [0, 153, 0])
    # Nothing else: no eye-to-eye limb, black background.
    np.testing.assert_array_equal(img[119, 200], [0, 0, 0])
    np.testing.assert_array_equal(img[0, 0], [0, 0, 0])
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 0), (0, 153, 0)}


def test_limb_width_is_about_the_stick_width():
    img = draw_v_kps(np.array([[100.0, 300.0], [400.0, 300.0], [250.0, 300.0]]), 512)
    column = img[:, 175, 0]  # crosses the horizontal left limb
    assert 7 <= int((column == 153).sum()) <= 10


def test_head_kps_distinct_colours_and_optional_limbs():
    kps = np.array([[20, 50], [108, 50], [45, 48], [83, 48], [64, 50], [64, 58], [64, 66], [64, 74]], float)
    img = draw_head_kps(kps, 128, radius=1)
    for p, colour in zip(kps.astype(int), HEAD_KPS_COLOURS):
        np.testing.assert_array_equal(img[p[1], p[0]], colour)
    assert len({tuple(c) for c in HEAD_KPS_COLOURS}) == 8
    bare = draw_head_kps(kps, 128, limbs=False, radius=1)
    assert (bare.sum(-1) > 0).sum() == 8 * 5  # eight plus-shaped radius-1 discs, no limbs
    assert (img.sum(-1) > 0).sum() > (bare.sum(-1) > 0).sum()


def test_points_outside_the_image_are_clipped_and_sizes_scale():
    kps = np.array([[-30, 10], [500, 10], [5, 5], [60, 5], [30, 30], [30, 40], [30, 50], [30, 200]], float)
    img = draw_head_kps(kps, (64, 96))
    assert img.shape == (64, 96, 3)
    assert draw_head_kps(kps, 64, limbs=False).astype(bool).any(-1).sum() < 60  # radius 1 at 64 px


def test_v_kps_from_head_kps_picks_pupils_and_nose_tip():
    kps = np.arange(16, dtype=np.float32).reshape(8, 2)
    np.testing.assert_array_equal(v_kps_from_head_kps(kps), kps[[2, 3, 7]])


def test_bad_keypoints_raise():
    with pytest.raises(ValueError, match=r"draw_head_kps: expected keypoints of shape \(8, 2\)"):
        draw_head_kps(np.zeros((68, 2)), 64)
    with pytest.raises(ValueError, match="NaN"):
        draw_v_kps(np.full((3, 2), np.nan), 64)


def test_mouth_box_from_kps_holds_the_lips_of_held_out_faces():
    """The box estimated from the Head-Kps alone holds the rendered lips of faces it was not measured on (the
    evaluation population, every emotion), and stays small: it weights the loss where the mouth is."""
    from jaxtalk.data import facs, synthetic

    inside, area = [], []
    for i, emotion in enumerate(facs.EMOTIONS):
        ident = synthetic.make_identity(1000, 900 + i)
        clip = synthetic.generate_clip(ident, emotion, 1 if emotion == "neutral" else 3, 40 + i, num_frames=12,
                                       resolution=64, render_video=False)
        lips = synthetic.mouth_landmarks(ident, clip.controls, clip.pose, 64)
        box = mouth_boxes(clip.head_kps)
        np.testing.assert_array_equal(box, mouth_boxes(v_kps_from_head_kps(clip.head_kps)))
        inside.append(((lips[..., 0] >= box[:, None, 0]) & (lips[..., 0] <= box[:, None, 2])
                       & (lips[..., 1] >= box[:, None, 1]) & (lips[..., 1] <= box[:, None, 3])).mean())
        area.append(np.mean((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])) / 64**2)
    assert np.mean(inside) > 0.97, inside
    assert max(area) < 0.08, area
    grown = mouth_boxes(clip.head_kps, scale=2.0)
    np.testing.assert_allclose(grown[:, 2] - grown[:, 0], 2 * (box[:, 2] - box[:, 0]), rtol=1e-5)
    for bad in (np.zeros((5, 2)), np.zeros(6)):
        with pytest.raises(ValueError, match="Head-Kps"):
            mouth_boxes(bad)


def test_box_masks_cover_fractions_of_pixels():
    m = box_masks(np.array([[1.5, 2.0, 4.0, 3.0], [-3.0, -3.0, 100.0, 1.0]]), 6)
    assert m.shape == (2, 6, 6) and m.dtype == np.float32
    np.testing.assert_allclose(m[0].sum(), 2.5 * 1.0)
    np.testing.assert_allclose(m[0, 2, :4], [0.0, 0.5, 1.0, 1.0])
    assert not m[0, :2].any() and not m[0, 3:].any()
    np.testing.assert_allclose(m[1].sum(), 6.0)  # clipped to the frame: the first row only
