"""Context windows: V-Express's `uniform` schedule, the clip-length cut rule, and mean-overlap averaging.

Expected windows below are worked out by hand from V-Express `pipelines/context.py` (HEAD 6814f7d):
`range(start, stop, W*d - o)` window starts, `e -> L - 2 - e % L` for indices past the end.
"""

import numpy as np
import pytest

from jaxtalk.svp import context


def test_ordered_halving_is_the_bit_reversed_fraction():
    assert [context.ordered_halving(s) for s in range(6)] == [0.0, 0.5, 0.25, 0.75, 0.125, 0.625]


def test_vexpress_windows_step0_open_loop():
    # V-Express sampling: step 0, stride 1, closed_loop=False; starts 0, W-o, 2(W-o), ... below L - o.
    got = context.uniform_schedule(0, 12, 4, context_stride=1, context_overlap=2, closed_loop=False)
    assert got == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 10, 11]]
    got = context.uniform_schedule(0, 84, 24, context_stride=1, context_overlap=4, closed_loop=False)
    assert [w[0] for w in got] == [0, 20, 40, 60] and got[-1][-1] == 83
    assert all(w == list(range(w[0], w[0] + 24)) for w in got)


def test_short_clip_is_one_window():
    assert context.uniform_schedule(0, 3, 4, 1, 2, False) == [[0, 1, 2]]
    assert context.uniform_schedule(0, 4, 4, 1, 2, False) == [[0, 1, 2, 3]]


def test_reflection_past_the_end():
    # L=11, W=4, o=1: starts 0, 3, 6, 9; the last window runs to 12 -> 11-2-(11%11)=9, 12 -> 11-2-1=8.
    got = context.uniform_schedule(0, 11, 4, 1, 1, False)
    assert got == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10, 9, 8]]


def test_shifted_step_and_closed_loop():
    # step 1: ordered_halving = 0.5, pad = round(12 * 0.5) = 6, start = int(0.5) + 6 = 6, stop = 12 + 6.
    got = context.uniform_schedule(1, 12, 4, context_stride=1, context_overlap=0, closed_loop=True)
    assert got == [[6, 7, 8, 9], [10, 11, 10, 9], [8, 7, 6, 5]]


def test_dilated_passes():
    # stride 3 is capped at ceil(log2(12/4)) + 1 = 3 passes: dilation 1, 2, 4 (starts step W*d - o).
    got = context.uniform_schedule(0, 12, 4, context_stride=3, context_overlap=0, closed_loop=True)
    assert got[:3] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert got[3:5] == [[0, 2, 4, 6], [8, 10, 10, 8]]  # 12 -> 10, 14 -> 8
    assert got[5:] == [[0, 4, 8, 10]]  # 12 -> 10


@pytest.mark.parametrize("frames0, w, o, expected", [
    (100, 24, 4, 84), (24, 24, 4, 24), (43, 24, 4, 24), (44, 24, 4, 44), (12, 4, 2, 12), (13, 4, 2, 12),
    (10, 4, 1, 10), (3, 4, 2, 3),
])
def test_cut_rule(frames0, w, o, expected):
    # L = (n_ctx - 1)(W - o) + W with n_ctx = (L0 - W) // (W - o) + 1; clips within one window stay as they are.
    assert context.cut_length(frames0, w, o) == expected


def test_cut_length_gives_windows_without_reflection():
    for frames0 in range(24, 130):
        length = context.cut_length(frames0, 24, 4)
        plan = context.window_plan(length, 24, 4)
        assert plan.indices.max() == length - 1 and plan.indices[-1, -1] == length - 1
        assert plan.num_windows == context.num_contexts(frames0, 24, 4)
        assert np.all(np.diff(plan.indices, axis=1) == 1)


def test_duration_rule():
    frames, fps = context.video_duration_frames(3.5, 30.0, 24, 4)
    assert frames == 104 and fps == pytest.approx(104 / 3.5)
    frames, fps = context.video_duration_frames(0.5, 25.0, 24, 4)
    assert frames == 12 and fps == 25.0


def test_plan_counts():
    plan = context.window_plan(12, 4, 2)
    np.testing.assert_array_equal(plan.counts, [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1])
    plan = context.window_plan(11, 4, 1)
    np.testing.assert_array_equal(plan.counts, [1, 1, 1, 2, 1, 1, 2, 1, 2, 3, 1])


@pytest.mark.parametrize("frames, w, o", [(12, 4, 2), (11, 4, 1), (4, 4, 2), (84, 24, 4)])
def test_mean_overlap_matches_numpy(frames, w, o):
    plan = context.window_plan(frames, w, o)
    rng = np.random.default_rng(0)
    preds = rng.standard_normal((plan.num_windows, 2, plan.window, 3, 2)).astype(np.float32)
    got = np.asarray(context.mean_overlap(preds, plan))
    expected = np.zeros((2, frames, 3, 2), np.float64)
    for f in range(frames):
        slots = [preds[k, :, p] for k in range(plan.num_windows) for p in range(plan.window)
                 if plan.indices[k, p] == f]
        expected[:, f] = np.mean(slots, axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="context_overlap"):
        context.uniform_schedule(0, 10, 4, 1, 4, False)
    with pytest.raises(ValueError, match="mean_overlap"):
        context.mean_overlap(np.zeros((2, 1, 4)), context.window_plan(12, 4, 2))
