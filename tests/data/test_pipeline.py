"""grain window pipeline: batch shapes, audio alignment, shuffling, process sharding, iterator checkpoints."""

import numpy as np
import pytest

from jaxtalk.data import facs, pipeline, records

WINDOW, FRAMES, RES = 4, 12, 64


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    records.write_synthetic_dataset(d, num_identities=2, clips_per_identity=2, seed=1, resolution=RES,
                                    num_frames=FRAMES)
    return d


def _keys(ds) -> list[tuple[int, int]]:
    return [(int(c), int(s)) for b in ds for c, s in zip(b["clip_index"], b["start_frame"])]


def test_batch_shapes_and_labels(data_dir):
    ds = pipeline.make_dataset(data_dir, WINDOW, batch_size=3, seed=0, num_epochs=1, process_index=0,
                               process_count=1)
    assert len(ds) == 4  # 4 clips x 3 windows = 12 windows
    batch = ds[0]
    assert batch["frames"].shape == (3, WINDOW, RES, RES, 3) and batch["frames"].dtype == np.uint8
    assert batch["audio"].shape == (3, WINDOW * 640) and batch["audio"].dtype == np.float32
    assert batch["expression"].shape == (3, WINDOW, 64)
    assert batch["pose"].shape == (3, WINDOW, 6)
    assert batch["head_kps"].shape == (3, WINDOW, 8, 2)
    for key in ("identity", "emotion", "intensity", "clip_index", "start_frame"):
        assert batch[key].shape == (3,) and batch[key].dtype == np.int32, key
    assert batch["emotion_text"].shape == (3,) and isinstance(batch["emotion_text"][0], str)


def test_windows_match_the_records(data_dir):
    index = records.read_index(data_dir)
    ds = pipeline.make_dataset(data_dir, WINDOW, batch_size=2, seed=3, num_epochs=1, process_index=0,
                               process_count=1)
    for batch in ds:
        for b in range(2):
            c, s = int(batch["clip_index"][b]), int(batch["start_frame"][b])
            rec = records.read_record(data_dir / index["clips"][c]["file"])
            np.testing.assert_array_equal(batch["frames"][b], rec.frames[s:s + WINDOW])
            np.testing.assert_array_equal(batch["audio"][b], rec.audio[s * 640:(s + WINDOW) * 640])
            np.testing.assert_array_equal(batch["head_kps"][b], rec.head_kps[s:s + WINDOW])
            np.testing.assert_array_equal(batch["expression"][b], rec.expression[s:s + WINDOW])
            assert index["identities"][batch["identity"][b]] == rec.identity
            assert facs.EMOTIONS[batch["emotion"][b]] == rec.emotion
            assert batch["intensity"][b] == rec.intensity
            assert batch["emotion_text"][b] in rec.emotion_texts


def test_shuffle_is_deterministic_by_seed_and_covers_each_window_once(data_dir):
    kw = dict(window=WINDOW, batch_size=1, num_epochs=1, process_index=0, process_count=1)
    a = _keys(pipeline.make_dataset(data_dir, seed=5, **kw))
    b = _keys(pipeline.make_dataset(data_dir, seed=5, **kw))
    c = _keys(pipeline.make_dataset(data_dir, seed=6, **kw))
    ordered = _keys(pipeline.make_dataset(data_dir, seed=5, shuffle=False, **kw))
    assert a == b and a != c and a != ordered
    assert sorted(a) == sorted(ordered) == [(i, s) for i in range(4) for s in (0, 4, 8)]


def test_each_epoch_is_reshuffled(data_dir):
    keys = _keys(pipeline.make_dataset(data_dir, WINDOW, 1, seed=2, num_epochs=2, process_index=0,
                                       process_count=1))
    first, second = keys[:12], keys[12:]
    assert sorted(first) == sorted(second) and first != second


def test_processes_get_disjoint_equal_shards(data_dir):
    kw = dict(window=WINDOW, batch_size=1, seed=4, num_epochs=1, process_count=2)
    shard0 = _keys(pipeline.make_dataset(data_dir, process_index=0, **kw))
    shard1 = _keys(pipeline.make_dataset(data_dir, process_index=1, **kw))
    assert len(shard0) == len(shard1) == 6
    assert not set(shard0) & set(shard1)
    assert len(set(shard0) | set(shard1)) == 12
    # A count that does not divide the windows drops the tail so all processes take the same number of steps.
    shards = [_keys(pipeline.make_dataset(data_dir, WINDOW, 1, seed=4, num_epochs=1, process_index=i,
                                          process_count=5)) for i in range(5)]
    assert {len(s) for s in shards} == {2}
    with pytest.raises(ValueError, match=r"process_index must be in \[0, 2\)"):
        pipeline.make_dataset(data_dir, WINDOW, 1, process_index=2, process_count=2)


def test_default_sharding_uses_the_jax_process(data_dir):
    ds = pipeline.make_dataset(data_dir, WINDOW, 2, seed=0, num_epochs=1)
    assert len(ds) == 6  # single-process JAX: every window, 12 / 2 batches


def test_iterator_state_restores_the_exact_next_batch(data_dir):
    it = pipeline.make_iterator(data_dir, WINDOW, 2, seed=9, process_index=0, process_count=1)
    for _ in range(7):  # crosses the first epoch boundary (6 batches per epoch)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    fresh = pipeline.make_iterator(data_dir, WINDOW, 2, seed=9, process_index=0, process_count=1)
    fresh.set_state(state)
    for want in expected:
        got = next(fresh)
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_bad_settings_raise(data_dir, tmp_path):
    with pytest.raises(records.RecordError, match="no clip has 50 frames"):
        pipeline.make_dataset(data_dir, 50, 1, process_index=0, process_count=1)
    with pytest.raises(records.RecordError, match="fewer than batch_size=64"):
        pipeline.make_dataset(data_dir, WINDOW, 64, num_epochs=1, process_index=0, process_count=1)
    with pytest.raises(records.RecordError, match="no dataset index"):
        pipeline.make_dataset(tmp_path, WINDOW, 1, process_index=0, process_count=1)
