"""Entry-point error contract and process-0-only outputs of `jaxtalk.distributed`, and a dead process stopping its
peer: bad config / data dir / global batch end the trainers with one line and exit status 2, errors name the rank,
only process 0 writes output files, and a SIGKILLed process makes the other exit within a bounded time."""

import subprocess
import sys
import time

import numpy as np
import pytest

from jaxtalk import distributed
from jaxtalk.data import media
from jaxtalk.training import loop
from jaxtalk.training.style_e import StyleETask
from tests import multihost


def _train(tmp_path, *overrides):
    argv = ["--config", "train_style_e_tiny", "--steps", "1", "--workdir", str(tmp_path / "run"), *overrides]
    return loop.main(argv, "train_style_e", StyleETask.from_config, "test")


def _one_error_line(err: str, prog: str | None = None) -> str:
    """The one line on stderr (`PROG: error: ...`; in-process PROG is pytest's argv[0])."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("WARNING", "INFO"))]
    assert len(lines) == 1 and ": error: " in lines[0], err
    assert prog is None or lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_trainer_bad_config_key_is_one_line_and_exit_2():
    """Through the script, as a user runs it: no traceback, exit status 2, the key named."""
    proc = subprocess.run([sys.executable, "train/style_e.py", "--config", "train_style_e_tiny",
                           "data.batch_sise=3"], cwd=multihost.REPO_ROOT, env=multihost.worker_env(1),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == distributed.EXIT_BAD_INPUT, proc.stderr
    line = _one_error_line(proc.stderr, "style_e.py")
    assert "data.batch_sise: unknown config key" in line


def test_trainer_empty_data_dir_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, f"data.record_dir={tmp_path / 'empty'}", "data.generate_synthetic=false")
    assert e.value.code == distributed.EXIT_BAD_INPUT
    assert "index.json: no dataset" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # bad data fails before the run folder is touched


def test_trainer_global_batch_that_does_not_divide_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, "data.batch_size=6", "mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
    assert e.value.code == distributed.EXIT_BAD_INPUT
    assert "data.batch_size=6 must be divisible by mesh.data x mesh.fsdp = 4" in _one_error_line(
        capsys.readouterr().err)


def test_errors_name_the_rank_given_on_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(distributed, "_RANK", {"index": 0, "count": 1})
    assert distributed.who() == ""
    distributed.announce(1, 2)
    assert distributed.who() == "process 1 of 2: "
    with pytest.raises(SystemExit):
        with distributed.entry_point("prog"):
            raise FileNotFoundError("data/x: not found")
    assert capsys.readouterr().err == "prog: error: process 1 of 2: data/x: not found\n"
    with pytest.raises(KeyError):  # an internal error keeps its traceback, after a line naming the process
        with distributed.entry_point("prog"):
            raise KeyError("bug")
    assert capsys.readouterr().err.startswith("jaxtalk process 1 of 2 failed: KeyError")


def test_cli_generate_error_names_the_rank(tmp_path, capsys, monkeypatch):
    """The rank comes from the flags (joining the run is left out here: no peer process exists)."""
    from jaxtalk import cli

    monkeypatch.setattr(distributed, "_RANK", {"index": 0, "count": 1})
    monkeypatch.setattr(distributed, "initialize", lambda cfg=None: (cfg.process_id, cfg.num_processes))
    code = cli.main(["generate", "--system", "style2talker", "--image", str(tmp_path / "none.png"), "--audio",
                     str(tmp_path / "none.wav"), "--emotion", "happy", "--out", str(tmp_path / "o.mp4"),
                     "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jaxtalk generate: error: process 1 of 2: "), err
    assert "not found" in err


def test_only_process_0_writes_outputs(tmp_path, monkeypatch):
    frames, audio = np.zeros((2, 16, 16, 3), np.uint8), np.zeros(1600, np.float32)
    monkeypatch.setattr(distributed, "_RANK", {"index": 1, "count": 2})
    paths = media.write_outputs(tmp_path / "a.mp4", frames, audio, 25.0, {"x": 1})
    assert paths == {"video": tmp_path / "a.mp4", "config": tmp_path / "a.yaml"}
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(distributed, "_RANK", {"index": 0, "count": 2})
    paths = media.write_outputs(tmp_path / "a.mp4", frames, audio, 25.0, {"x": 1})
    assert paths["video"].is_file() and paths["config"].is_file()


def test_only_process_0_writes_the_debug_dir(tmp_path, monkeypatch):
    """`--debug-dir` of `jaxtalk generate`: every process prepares the same face, process 0 alone writes it."""
    from jaxtalk.faces import inputs

    class Prep:  # what write_debug reads of a face preparation
        def overlay(self):
            return np.full((8, 8, 3), 200, np.uint8)

        def crop_overlay(self):
            return np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(distributed, "_RANK", {"index": 1, "count": 2})
    inputs.write_debug(tmp_path / "debug", Prep())
    assert not (tmp_path / "debug").exists()
    monkeypatch.setattr(distributed, "_RANK", {"index": 0, "count": 2})
    inputs.write_debug(tmp_path / "debug", Prep())
    assert sorted(p.name for p in (tmp_path / "debug").iterdir()) == ["crop_overlay.png", "overlay.png"]


_WORKER = """
import argparse, os, signal, sys, time
from jaxtalk import distributed
p = argparse.ArgumentParser(); distributed.add_arguments(p); a = p.parse_args()
cfg = distributed.config_from_args(a, distributed.DistributedConfig(heartbeat_timeout=4))
distributed.initialize(cfg)
distributed.sync("both_up")
print("joined", flush=True)
if a.process_id == 1:
    os.kill(os.getpid(), signal.SIGKILL)
while True:  # process 0 keeps working (a barrier every second) until the runtime stops it
    time.sleep(1.0)
    distributed.sync("step")
"""


def test_a_dead_process_stops_the_others_within_a_bounded_time(tmp_path):
    with multihost.Group(["-c", _WORKER], 2, 1, tmp_path / "logs") as group:
        group.wait(240, until=lambda: "joined" in group.text(0) and group.procs[1].poll() is not None)
        assert "joined" in group.text(0), group.text(0)[-2000:]
        t0 = time.monotonic()
        codes = group.wait(90)
        assert codes[1] == -9 and codes[0] not in (None, 0), (codes, group.text(0)[-2000:])
        assert time.monotonic() - t0 < 90
        text = group.text(0)  # the coordination service names the dead task
        assert "Task 1 heartbeat timeout" in text or "stopped sending heartbeats" in text, text[-2000:]
