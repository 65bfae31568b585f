"""The expression probe fitted alone (`train_expression_probe`): it learns a fixed batch, its batches carry the
frames' own coefficients, the entry script runs, and its run is an init source of SVP stage 3's probe."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk import config
from jaxtalk.training import sources
from jaxtalk.training.probes import ExpressionProbeTask
from tests.training.train_utils import load_cfg, overfit, run_script


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("probe_train")


def test_probe_batches_carry_the_frames_coefficients(root):
    cfg = load_cfg("train_expression_probe_tiny", root)
    task = ExpressionProbeTask.from_config(cfg)
    batch = next(iter(task.dataset()))
    b, f, s = cfg.data.batch_size, cfg.data.frames, cfg.data.image_size
    assert batch["frames"].shape == (b, f, s, s, 3) and batch["expression"].shape == (b, f, 64)
    records = [np.load(p)["expression"] for p in sorted((root / "data").glob("clip_*.npz"))]
    assert records
    for i in range(b):  # f consecutive rows of one clip's coefficients
        assert any(np.array_equal(e[o:o + f], batch["expression"][i]) for e in records
                   for o in range(len(e) - f + 1)), i


def test_probe_fits_a_fixed_batch(root):
    cfg = load_cfg("train_expression_probe_tiny", root)
    task = ExpressionProbeTask.from_config(cfg)
    _, before, after, losses = overfit(task, cfg, 25)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    assert set(before) == set(after) and all(k.startswith("expression_probe/") for k in after)


def test_probe_script_runs_and_its_run_loads_as_an_init_source(root):
    run_script("expression_probe", "train_expression_probe_tiny", root)
    loaded = sources.run_params(root / "script_expression_probe")
    task = ExpressionProbeTask.from_config(load_cfg("train_expression_probe_tiny", root))
    want = traverse_util.flatten_dict(jax.device_get(task.init_variables(jax.random.key(0))["params"]), sep="/")
    got = traverse_util.flatten_dict(loaded, sep="/")
    assert {k: np.shape(v) for k, v in got.items()} == {k: np.shape(v) for k, v in want.items()}


def test_probe_config_refuses_mirrored_frames():
    with pytest.raises(config.ConfigError, match="flip_rate"):
        config.load("train_expression_probe_tiny", ["data.flip_rate=0.5"])


def test_random_shift_moves_each_frame_by_its_own_edge_padded_offset():
    """Every output frame is its input moved by a whole-pixel offset within the bound, borders repeated; offsets
    differ between frames; a bound of 0 returns the frames unchanged."""
    from jaxtalk.training.probes import random_shift

    frames = np.random.default_rng(0).random((16, 12, 12, 3)).astype(np.float32)
    assert random_shift(jax.random.key(0), frames, 0) is frames
    out = np.asarray(random_shift(jax.random.key(1), frames, 3))
    padded = np.pad(frames, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="edge")
    found = []
    for i in range(len(frames)):
        hits = [(dy, dx) for dy in range(7) for dx in range(7)
                if np.array_equal(out[i], padded[i, dy:dy + 12, dx:dx + 12])]
        assert hits, i
        found.append(hits[0])
    assert len(set(found)) > 1
