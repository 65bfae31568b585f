"""Training beyond one process: global batches from process-local reads, 2 local JAX processes (gloo, 2 simulated
CPU devices each) training like 1 process, checkpoints saved by 2 processes on an fsdp mesh restored by 1 process
on a tensor mesh, resumption onto another process count, the NaN / Inf policy, and (slow) a SIGKILLed worker
stopping the others and the restarted run resuming with the uninterrupted losses."""

import dataclasses
import json
import shutil

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config, distributed, parallel
from jaxtalk.data import pipeline
from jaxtalk.training import data as data_lib
from jaxtalk.training import loop, tensorboard
from jaxtalk.training.checkpoint import Checkpointer
from jaxtalk.training.config import LoopConfig
from jaxtalk.training.state import OptimizerConfig
from jaxtalk.training.style_e import StyleETask, save_text_features, text_feature_table
from tests import multihost
from tests.training.train_utils import flat, load_cfg

PRESET = "train_style_e_tiny"
COMMON = ("train.progress=false", "train.checkpoint_every=2", "data.batch_size=8", "mesh.data=1", "mesh.fsdp=-1",
          "mesh.tensor=1")
TIMEOUT = 900  # seconds for one multi-process run on a loaded 2-core machine


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("multihost")


def _script_args(root, workdir, steps, *extra):
    return ["train/style_e.py", "--config", PRESET, "--steps", str(steps), "--workdir", str(workdir),
            f"data.record_dir={root / 'data'}", *COMMON, f"text.features_file={root / 'text_features.npz'}",
            *extra]


def _losses(workdir):
    """{step: loss} from metrics.jsonl (a resumed run's later line for a step wins)."""
    return {r["step"]: r["loss"] for r in loop.read_metrics(workdir)}


@pytest.fixture(scope="module")
def text_features(root):
    """The emotion-text feature table, computed once here so the worker processes need no CLIP tower."""
    cfg = load_cfg(PRESET, root)
    data_lib.ensure_records(cfg.data)
    table = text_feature_table(cfg.text, data_lib.emotion_texts(cfg.data.record_dir))
    return save_text_features(root / "text_features.npz", table)


@pytest.fixture(scope="module")
def common(text_features):
    return (*COMMON, f"text.features_file={text_features}")


@pytest.fixture(scope="module")
def single(root, common):
    """3 steps by this process over its 8 devices (fsdp=8): the reference run."""
    cfg = load_cfg(PRESET, root, "train.steps=3", *common)
    return cfg, loop.train(StyleETask.from_config(cfg), cfg)


@pytest.fixture(scope="module")
def two(root, single):
    """The same 3 steps by 2 processes x 2 devices (fsdp=4), through the entry script."""
    workdir = root / "two"
    multihost.run(_script_args(root, workdir, 3, "train.progress=true"), 2, 2, root / "logs_two", timeout=TIMEOUT)
    return workdir


def test_global_batch_from_process_rows_equals_the_single_process_batch(root, single):
    cfg = single[0]
    task = StyleETask.from_config(cfg)  # same_speaker sparse condition: random partners per row
    b = cfg.data.batch_size
    whole = [next(it) for it in [iter(task.dataset())] for _ in range(3)]
    for count in (2, 4):
        parts = []
        for i in range(count):
            with data_lib.process_rows(pipeline.default_batch_rows(b, i, count)):
                it = iter(task.dataset())
                parts.append([next(it) for _ in range(3)])
        for n in range(3):
            for k in whole[n]:
                np.testing.assert_array_equal(np.concatenate([p[n][k] for p in parts]), whole[n][k], err_msg=k)
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        pipeline.default_batch_rows(b, 0, 3)


def test_process_rows_follow_the_mesh():
    mesh = parallel.make_mesh(2, 2, 2)
    np.testing.assert_array_equal(parallel.process_batch_rows(mesh, 8), np.arange(8))
    with pytest.raises(ValueError, match="not divisible by the 4 data x fsdp devices"):
        parallel.process_batch_rows(mesh, 6)


def test_distributed_flags_and_config_keys():
    cfg = config.load(PRESET, ["train.distributed.coordinator=10.0.0.1:1234", "train.distributed.num_processes=4",
                               "train.distributed.process_id=3"])
    assert cfg.train.distributed.coordinator == "10.0.0.1:1234"
    import argparse

    parser = argparse.ArgumentParser()
    distributed.add_arguments(parser)
    args = parser.parse_args(["--coordinator", "node1:80", "--num-processes", "2", "--process-id", "1"])
    overrides = distributed.overrides_from_args(args, "train.distributed")
    assert config.load(PRESET, overrides).train.distributed == distributed.DistributedConfig("node1:80", 2, 1)
    with pytest.raises(distributed.DistributedError, match="num_processes, process_id missing"):
        distributed.initialize(distributed.DistributedConfig(coordinator="h:1"))
    with pytest.raises(distributed.DistributedError, match="expected HOST:PORT"):
        distributed.initialize(distributed.DistributedConfig("nohost", 2, 0))
    assert distributed.initialize(distributed.DistributedConfig(auto_detect=False)) == (0, 1)
    assert distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert not distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert not distributed.cluster_detected({})


def test_two_processes_train_like_one(single, two):
    """Same losses (<= 1e-5 relative) and params as the 1-process run; process 0 alone wrote the run files."""
    cfg, result = single
    ref = {r["step"]: r["loss"] for r in result.history}
    got = _losses(two)
    assert sorted(got) == [1, 2, 3]
    np.testing.assert_allclose([got[s] for s in (1, 2, 3)], [ref[s] for s in (1, 2, 3)], rtol=1e-5)
    assert len(loop.read_metrics(two)) == 3 and (two / "config.yaml").is_file()
    assert sorted(p.name for p in (two / "checkpoints").iterdir() if p.is_dir()) == ["2", "3"]
    # one TensorBoard event file with the same losses, and the progress lines, from process 0 only
    assert len(tensorboard.event_files(two)) == 1
    assert [s for s, _ in tensorboard.read_scalars(two)["loss"]] == [1, 2, 3]
    logs = [(two.parent / "logs_two" / f"process_{i}.log").read_text() for i in (0, 1)]
    assert "step 3/3 loss" in logs[0] and "step 3/3" not in logs[1]


def test_two_process_fsdp_checkpoint_restores_on_one_process_tensor_mesh(single, two):
    cfg, result = single
    task = StyleETask.from_config(cfg)
    mesh = parallel.make_mesh(1, 1, 8)
    target = loop.make_state(task, cfg.optimizer, mesh, seed=123, fresh=False)
    ckpt = Checkpointer(two / "checkpoints")
    restored, extra = ckpt.restore(target, 3)
    ckpt.close()
    assert int(restored.step) == 3 and extra["process_count"] == 2
    kernel = restored.params["style_e"]
    assert {x.sharding.mesh.shape["tensor"] for x in jax.tree.leaves(kernel)} == {8}
    want, have = flat(result.state.params), flat(restored.params)
    assert want.keys() == have.keys()
    for k in want:
        np.testing.assert_allclose(have[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_resume_on_another_process_count_sees_the_same_batches(root, common, single, two):
    """The 2-process run cut back to its step-2 checkpoint, resumed by 1 process: the step-3 loss of both runs."""
    cut = root / "two_cut"
    shutil.copytree(two, cut)
    shutil.rmtree(cut / "checkpoints" / "3")
    cfg = load_cfg(PRESET, root, "train.steps=3", *common, f"train.workdir={cut}")
    resumed = loop.train(StyleETask.from_config(cfg), cfg)
    assert [r["step"] for r in resumed.history] == [3]
    np.testing.assert_allclose(resumed.history[0]["loss"], _losses(two)[3], rtol=1e-5)


# ------------------------------------------------------------------------------------------------ NaN / Inf policy

class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(x)


class _Batches:
    """Regression batches; batch `bad` has a NaN input (so its loss and gradients are NaN)."""

    def __init__(self, bad):
        self.bad = bad

    def __call__(self, i):
        rng = np.random.default_rng(i)
        x = rng.standard_normal((8, 4)).astype(np.float32)
        if i == self.bad:
            x[0, 0] = np.nan
        return {"x": x, "y": x[:, ::-1].copy()}


@dataclasses.dataclass(frozen=True)
class _ToyTask(loop.Task):
    bad: int = 2
    name = "toy"

    def init_variables(self, rng):
        return {"params": {"net": _Net().init(rng, jnp.zeros((1, 4)))["params"]}}

    def trainable_patterns(self):
        return None

    def loss(self, params, batch, rng):
        loss = jnp.mean((_Net().apply({"params": params["net"]}, batch["x"]) - batch["y"]) ** 2)
        return loss, {}

    def dataset(self):
        return grain.MapDataset.range(1 << 20).map(_Batches(self.bad))


@dataclasses.dataclass(frozen=True)
class _ToyConfig:
    train: LoopConfig
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-2)
    mesh: config.MeshConfig = config.MeshConfig(1, 4, 2)


def _toy(tmp_path, policy, steps=4, name=None):
    return _ToyConfig(LoopConfig(steps=steps, log_every=1, checkpoint_every=1, progress=False, num_threads=0,
                                 workdir=str(tmp_path / (name or policy)), nonfinite=policy))


def test_nonfinite_stop_keeps_the_last_good_checkpoint(tmp_path):
    cfg = _toy(tmp_path, "stop")
    with pytest.raises(loop.NonFiniteError, match=r"steps \[3\].*Last checkpoint: step 2"):
        loop.train(_ToyTask(), cfg)
    assert sorted(int(p.name) for p in (tmp_path / "stop" / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]


def test_nonfinite_skip_leaves_the_state_and_goes_on(tmp_path):
    skipped = loop.train(_ToyTask(bad=2), _toy(tmp_path, "skip"))
    # Batch 2 (step 3) is skipped: the params after step 3 are those after step 2, so the run equals a run whose
    # step 3 is missing; compare with one that never sees a bad batch up to step 2.
    clean = loop.train(_ToyTask(bad=-1), _toy(tmp_path, "skip", steps=2, name="clean"))
    rows = {r["step"]: r for r in skipped.history}
    assert np.isnan(rows[3]["loss"]) and rows[3]["skipped_steps"] == 1 and np.isfinite(rows[4]["loss"])
    ckpt = Checkpointer(tmp_path / "skip" / "checkpoints")
    at3, _ = ckpt.restore(skipped.state, 3)
    ckpt.close()
    for k, v in flat(clean.state.params).items():
        np.testing.assert_array_equal(flat(at3.params)[k], v, err_msg=k)


def test_nonfinite_report_applies_but_never_saves_a_nonfinite_state(tmp_path):
    result = loop.train(_ToyTask(), _toy(tmp_path, "report"))
    assert not np.all(np.isfinite(flat(result.state.params)["net/Dense_0/kernel"]))
    saved = sorted(int(p.name) for p in (tmp_path / "report" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [1, 2]


# ------------------------------------------------------------------------------------------------ faults (slow)

def _checkpoints(workdir):
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


@pytest.fixture(scope="module")
def six(root, common, single):
    """The uninterrupted 6-step run (1 process) the interrupted ones must reproduce."""
    cfg = load_cfg(PRESET, root, "train.steps=6", *common, f"train.workdir={root / 'six'}")
    return {r["step"]: r["loss"] for r in loop.train(StyleETask.from_config(cfg), cfg).history}


@pytest.mark.slow
def test_killed_worker_stops_the_others_and_the_restart_resumes(root, six):
    workdir = root / "killed"
    args = _script_args(root, workdir, 6, "train.distributed.heartbeat_timeout=10")
    with multihost.Group(args, 2, 2, root / "logs_killed") as group:
        group.wait(TIMEOUT, until=lambda: 2 in _checkpoints(workdir))
        assert 2 in _checkpoints(workdir), group.text(0)[-3000:]
        group.kill(1)
        codes = group.wait(120)
        assert codes[0] not in (None, 0), "process 0 did not stop within 120 s of its peer's death"
        assert "stopped sending heartbeats" in group.text(0) or "unhealthy" in group.text(0), group.text(0)[-3000:]
    multihost.run(args, 2, 2, root / "logs_restarted", timeout=TIMEOUT)
    got = _losses(workdir)
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [six[s] for s in range(1, 7)], rtol=1e-5)


@pytest.mark.slow
def test_sigkill_during_a_save_resumes_from_the_last_complete_checkpoint(root, six):
    workdir = root / "killed_saving"
    args = _script_args(root, workdir, 6, "train.checkpoint_every=1")

    def saving():
        d = workdir / "checkpoints"
        return d.is_dir() and any("tmp" in p.name for p in d.iterdir()) and bool(_checkpoints(workdir))

    with multihost.Group(args, 2, 2, root / "logs_saving") as group:
        group.wait(TIMEOUT, until=saving)
        group.kill()
    torn = [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
    complete = _checkpoints(workdir)
    multihost.run(args, 2, 2, root / "logs_saving_restarted", timeout=TIMEOUT)
    got = _losses(workdir)
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [six[s] for s in range(1, 7)], rtol=1e-5)
    assert complete and max(_checkpoints(workdir)) == 6, (torn, complete)
    text = json.dumps(loop.read_metrics(workdir))
    assert "NaN" not in text


# ------------------------------------------------------------------------------------------------ Style-A rows

def _style_a_arrays(clips=6, frames=5, size=8):
    rng = np.random.default_rng(0)
    return {"clip": np.arange(clips), "identity": np.repeat(np.arange(clips // 2), 2),
            "frames": rng.integers(0, 256, (clips, frames, size, size, 3), dtype=np.uint8),
            "frames_in": rng.integers(0, 256, (clips, frames, size, size, 3), dtype=np.uint8),
            "expression": rng.standard_normal((clips, frames, 64)).astype(np.float32),
            "pose": rng.standard_normal((clips, frames, 6)).astype(np.float32)}


def test_style_a_batches_read_only_this_process_rows():
    """Style-A's host batches: each process makes only its rows of every global batch (the loop's
    `process_rows`), and the shares of 2 or 4 processes put together are the 1-process global batch."""
    from jaxtalk.training.style2talker_config import StyleALossConfig
    from jaxtalk.training.style_a import StyleABatches

    arrays, b = _style_a_arrays(), 8
    mouth = np.random.default_rng(1).uniform(0, 1, (len(arrays["clip"]), arrays["frames"].shape[1], 4))
    make = lambda rows=None: StyleABatches(arrays, b, seed=3, loss=StyleALossConfig(), radius=2,  # noqa: E731
                                           mouth=mouth.astype(np.float32), rows=rows)
    whole = [make()(i) for i in range(3)]
    assert whole[0]["reference"].shape == (b, 8, 8, 3) and whole[0]["driven"].shape == (b, 5, 73)
    assert not np.array_equal(whole[0]["frame"], whole[1]["frame"])
    for count in (2, 4):
        shares = []
        for i in range(count):
            with data_lib.process_rows(pipeline.default_batch_rows(b, i, count)):
                shares.append(make())  # rows taken from the context, as the loop builds the dataset
        for n in range(3):
            parts = [s(n) for s in shares]
            assert parts[0]["frame"].shape[0] == b // count
            for k in whole[n]:
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[n][k], err_msg=k)
    with pytest.raises(ValueError, match="not rows of a global batch of 8"):
        make(rows=[8])


def test_root_batch_size_sets_the_process_rows():
    """Configs with a root `batch_size` (Style-A) get process rows from the loop like `data.batch_size` ones."""
    mesh = parallel.make_mesh(2, 2, 2)
    cfg = config.load("train_style_a_tiny", ["batch_size=8"])
    np.testing.assert_array_equal(loop.data_rows(cfg, mesh), np.arange(8))
    with pytest.raises(ValueError, match="not divisible by the 4 data x fsdp devices"):
        loop.data_rows(config.load("train_style_a_tiny", ["batch_size=6"]), mesh)
