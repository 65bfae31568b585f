"""What a training run shows and records: the progress bar / lines (loss, samples/s, ETA) and the TensorBoard
scalars, checked on a tiny run of the shared loop and read back with TensorBoard's own event reader."""

import dataclasses
import io
import json
import re

import flax.linen as nn
import grain
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.training import loop, tensorboard
from jaxtalk.training.config import LoopConfig
from jaxtalk.training.progress import TrainProgress, format_eta
from jaxtalk.training.state import OptimizerConfig


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(x)


class _Batches:
    def __call__(self, i):
        x = np.random.default_rng(i).standard_normal((8, 4)).astype(np.float32)
        return {"x": x, "y": x[:, ::-1].copy()}


@dataclasses.dataclass(frozen=True)
class _TinyTask(loop.Task):
    name = "tiny"

    def init_variables(self, rng):
        return {"params": {"net": _Net().init(rng, jnp.zeros((1, 4)))["params"]}}

    def trainable_patterns(self):
        return None

    def loss(self, params, batch, rng):
        loss = jnp.mean((_Net().apply({"params": params["net"]}, batch["x"]) - batch["y"]) ** 2)
        return loss, {"mse": loss}

    def dataset(self):
        return grain.MapDataset.range(1 << 20).map(_Batches())


@dataclasses.dataclass(frozen=True)
class _Config:
    train: LoopConfig
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-2)
    mesh: config.MeshConfig = config.MeshConfig(1, 4, 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """6 steps, logged every 2 (one-line progress: stderr is not a terminal under pytest)."""
    workdir = tmp_path_factory.mktemp("progress") / "run"
    cfg = _Config(LoopConfig(steps=6, log_every=2, checkpoint_every=6, num_threads=0, workdir=str(workdir)))
    return loop.train(_TinyTask(), cfg)


def test_progress_lines_show_loss_throughput_and_eta(run):
    """The tiny run's logged rows as the lines a non-terminal shows."""
    rows = run.history
    out = io.StringIO()
    progress = TrainProgress("tiny", 6, 0, file=out, bar=False)
    for row in rows:
        progress.log(row)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    m = re.fullmatch(r"\[tiny\] step 2/6 loss (\S+) grad_norm \S+ mse \S+ \| (\S+) samples/s, (\S+) steps/s, "
                     r"ETA (\d+:\d\d:\d\d)", lines[0])
    assert m, lines[0]
    assert float(m.group(1)) == pytest.approx(rows[0]["loss"], rel=1e-3)
    # 8 rows per step: samples/s is the batch times steps/s
    assert rows[0]["samples_per_sec"] == pytest.approx(8 * rows[0]["steps_per_sec"])
    assert lines[-1].endswith("ETA 0:00:00")


def test_run_prints_one_line_per_logged_step(tmp_path, capsys):
    cfg = _Config(LoopConfig(steps=4, log_every=2, checkpoint_every=4, num_threads=0, workdir=str(tmp_path / "r")))
    loop.train(_TinyTask(), cfg)
    err = capsys.readouterr().err
    assert re.findall(r"\[tiny\] step (\d)/4 loss", err) == ["2", "4"], err


def test_tqdm_bar_on_a_terminal_shows_eta_rate_and_loss():
    class _Terminal(io.StringIO):
        def isatty(self):
            return True

    out = _Terminal()
    progress = TrainProgress("tiny", 100, 0, file=out)
    for step in range(1, 11):
        progress.advance(step)
    progress.log({"step": 10, "loss": 0.125, "steps_per_sec": 4.0, "samples_per_sec": 32.0})
    progress.close()
    last = out.getvalue().split("\r")[-1]
    assert re.search(r"tiny:\s+10%.*10/100 \[\d\d:\d\d<[\d:?]+, .*loss 0\.125, 32\.0 samples/s\]", last), last


def test_eta_formatting():
    assert format_eta(3725.2) == "1:02:05" and format_eta(float("inf")) == "?" and format_eta(float("nan")) == "?"


def test_metrics_and_tensorboard_scalars_agree(run):
    """The event file in the run folder holds every logged row; TensorBoard's own reader agrees with ours."""
    rows = [json.loads(s) for s in (run.workdir / loop.METRICS_NAME).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and rows == run.history
    files = tensorboard.event_files(run.workdir)
    assert len(files) == 1 and "tfevents" in files[0].name
    ours = tensorboard.read_scalars(run.workdir)
    assert set(ours) == {"loss", "grad_norm", "mse", "steps_per_sec", "samples_per_sec"}
    for tag, points in ours.items():
        assert [s for s, _ in points] == [2, 4, 6]
        np.testing.assert_allclose([v for _, v in points], [r[tag] for r in rows], rtol=1e-6)

    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run.workdir))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == set(ours)
    for tag, points in ours.items():
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == [(s, pytest.approx(v)) for s, v in points]


def test_event_file_framing_and_truncation(tmp_path):
    # CRC-32C check value of the standard test string (RFC 3720 / iSCSI): 0xE3069283
    assert tensorboard.crc32c(b"123456789") == 0xE3069283
    with tensorboard.ScalarWriter(tmp_path) as w:
        w.add_scalars(1, {"loss": 0.5, "label": "text", "flag": True})
        w.add_scalars(2, {"loss": 0.25})
    data = w.path.read_bytes()
    w.path.write_bytes(data[:-3])  # a run killed mid-write: the last record is cut
    assert tensorboard.read_scalars(tmp_path) == {"loss": [(1, 0.5)]}
    w.path.write_bytes(b"garbage" * 3)
    with pytest.raises(tensorboard.EventFileError, match="checksum mismatch"):
        tensorboard.read_scalars(tmp_path)
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        tensorboard.read_scalars(tmp_path / "empty")
