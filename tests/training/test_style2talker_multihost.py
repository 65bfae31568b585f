"""Style2Talker's whole-stack trainer beyond one process: each stage's host batches are made per process (the
shares of 2 or 4 processes put together are the 1-process global batch), and 2 local JAX processes (gloo, 2
simulated CPU devices each) started through `train/style2talker.py --coordinator ...` train the audio2exp stage
with the losses and params of 1 process, process 0 alone writing the run's files (slow: `make test-all`)."""

import dataclasses

import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.data import pipeline
from jaxtalk.interop import bundle
from jaxtalk.training import data as data_lib
from jaxtalk.training import loop
from jaxtalk.training.style2talker import Audio2ExpBatches, StyleEBatches, TextBatches, train_all
from tests import multihost
from tests.training.train_utils import flat

PRESET = "train_style2talker_tiny"
# audio2exp trained (3 steps, global batch 8); the other stages keep their random init (still exported)
STAGES = ("text.steps=0", "audio2exp.steps=3", "style_e.steps=0", "style_a.steps=0", "audio2exp.batch_size=8")
TIMEOUT = 900


def _arrays(clips=6, frames=40):
    rng = np.random.default_rng(0)
    return {"expression": rng.standard_normal((clips, frames, 64)).astype(np.float32),
            "condition": np.array([0, 3, 3, 5, 0, 5]), "identity": np.repeat(np.arange(clips // 2), 2),
            "mel": rng.standard_normal((clips, frames, 80, 16)).astype(np.float16),
            "eye": rng.random((clips, frames)).astype(np.float32)}


def _makers(b):
    a = _arrays()
    conds = np.array([0, 0, 3, 5, 5, 3, 0])  # a condition per text / feature row
    ids = np.arange(7 * 5, dtype=np.int64).reshape(7, 5)
    feats = np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32)
    sparse = np.random.default_rng(2).standard_normal(a["expression"].shape).astype(np.float32)
    return {"text": lambda: TextBatches(a, ids, conds, b, window=32, seed=3),
            "audio2exp": lambda: Audio2ExpBatches(a, b, seed=3),
            "style_e": lambda: StyleEBatches(a, sparse, feats, conds, b, window=32, seed=3)}


@pytest.mark.parametrize("stage", ["text", "audio2exp", "style_e"])
def test_stage_batches_read_only_this_process_rows(stage):
    """As the loop builds a dataset inside `process_rows`: each process makes only its rows, and the shares of 2
    or 4 processes put together are the 1-process global batch, batch after batch."""
    b = 8
    make = _makers(b)[stage]
    whole = [make()(i) for i in range(3)]
    assert all(v.shape[0] == b for v in whole[0].values())
    assert any(not np.array_equal(whole[0][k], whole[1][k]) for k in whole[0])
    for count in (2, 4):
        shares = []
        for i in range(count):
            with data_lib.process_rows(pipeline.default_batch_rows(b, i, count)):
                shares.append(make())
        for n in range(3):
            parts = [s(n) for s in shares]
            assert all(v.shape[0] == b // count for v in parts[0].values())
            for k in whole[n]:
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[n][k],
                                              err_msg=f"{stage} {k}")


def test_stage_global_batch_sets_the_process_rows():
    """Each non-Style-A stage's run config names its global batch, so the loop gives its dataset process rows."""
    from jaxtalk import parallel
    from jaxtalk.training.state import OptimizerConfig
    from jaxtalk.training.style2talker import StageRunConfig, _loop_config

    cfg = config.load(PRESET, ["audio2exp.batch_size=6"])
    run = StageRunConfig("audio2exp", 6, OptimizerConfig(), _loop_config(cfg, "audio2exp"), cfg.mesh)
    mesh = parallel.make_mesh(2, 2, 2)
    with pytest.raises(ValueError, match="global batch 6 is not divisible by the 4 data x fsdp devices"):
        loop.data_rows(run, mesh)
    np.testing.assert_array_equal(loop.data_rows(dataclasses.replace(run, batch_size=8), mesh), np.arange(8))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("s2t_multihost")


def _compare_stage(one, two, logs):
    ref = {r["step"]: r["loss"] for r in loop.read_metrics(one / "audio2exp")}
    got = {r["step"]: r["loss"] for r in loop.read_metrics(two / "audio2exp")}
    assert sorted(got) == [1, 2, 3]
    np.testing.assert_allclose([got[s] for s in (1, 2, 3)], [ref[s] for s in (1, 2, 3)], rtol=1e-5)
    np.testing.assert_allclose(np.load(two / "audio2exp" / "sparse.npy"), np.load(one / "audio2exp" / "sparse.npy"),
                               rtol=1e-4, atol=1e-5)  # the trained audio2exp's predictions: same params
    texts = [(logs / f"process_{i}.log").read_text() for i in (0, 1)]
    assert "[style2talker] stage audio2exp done" in texts[0], texts[0][-2000:]
    assert "[style2talker]" not in texts[1] and "step 3/3" not in texts[1], texts[1][-2000:]
    return texts


@pytest.mark.slow  # ~60 s of CPU (3 compiles of the stage, 2 JAX start-ups); the row tests above stay fast
def test_two_processes_train_a_style2talker_stage_like_one(root):
    """`train/style2talker.py --only audio2exp` by 2 processes x 2 devices (fsdp 4) and in this process over 8
    devices (fsdp 8): the same losses (1e-5 relative) and predictions of the trained stage; process 0 alone
    printed the stage lines and wrote the run files."""
    one, two = root / "one", root / "two"
    train_all(config.load(PRESET, [f"workdir={one}", "progress=false", *STAGES]), only=("audio2exp",))
    multihost.run(["train/style2talker.py", "--config", PRESET, "--workdir", str(two), *STAGES, "--only",
                   "audio2exp"], 2, 2, root / "logs", timeout=TIMEOUT)
    _compare_stage(one, two, root / "logs")
    assert (two / "config.yaml").is_file() and not (two / "export").exists()
    assert len(list((two / "data").glob("*.npz"))) == 1


@pytest.mark.slow
def test_two_processes_run_the_whole_stack_and_export(root):
    """The whole command (every stage, the untrained ones initialised) by 2 processes: the export's params are
    written by both together and equal the 1-process export; the run files come from process 0."""
    one, two = root / "one_all", root / "two_all"
    train_all(config.load(PRESET, [f"workdir={one}", "progress=false", *STAGES]))
    multihost.run(["train/style2talker.py", "--config", PRESET, "--workdir", str(two), *STAGES], 2, 2,
                  root / "logs_all", timeout=TIMEOUT)
    _compare_stage(one, two, root / "logs_all")
    want, have = bundle.restore(one / "export"), bundle.restore(two / "export")
    w, h = flat(want), flat(have)
    assert w.keys() == h.keys()
    for k in w:
        np.testing.assert_allclose(h[k], w[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert bundle.read_manifest(two / "export")["steps"]["audio2exp"] == 3
    for name in ("config.yaml", "wall_times.json", "text/features.npz", "curves/audio2exp.png",
                 "export/exstyle_code.npz"):
        assert (two / name).exists(), name
