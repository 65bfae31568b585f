"""The bench scripts are not run by the suite (they time things); here they are imported, so a broken import or
module-level name fails fast, and their shared helpers are checked on known inputs."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from bench import common

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_bench_script_imports():
    names = sorted(p.stem for p in (REPO / "bench").glob("*.py"))
    assert {"common", "unet", "gpu", "fidelity_svp", "fidelity_style2talker"} <= set(names)
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module('bench.' + name)\n")
    proc = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_timed_calls_once_plus_repeats_and_returns_the_median(monkeypatch):
    clock = iter([0.0, 5.0,  # first call: 5 s
                  10.0, 11.0, 20.0, 23.0, 30.0, 32.0])  # then 1, 3, 2 s
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))
    calls = []
    first, median = common.timed(lambda: calls.append(1), 3)
    assert len(calls) == 4 and first == 5.0 and median == 2.0


def test_write_results_makes_folders_and_round_trips(tmp_path, capsys):
    path = common.write_results(tmp_path / "a" / "b" / "r.json", {"x": [1, 2.5], "y": {"z": None}})
    assert json.loads(path.read_text()) == {"x": [1, 2.5], "y": {"z": None}}
    assert str(path) in capsys.readouterr().out


def test_xla_flops_of_a_matmul():
    import jax
    import jax.numpy as jnp

    a = jnp.ones((8, 16), jnp.float32)
    b = jnp.ones((16, 4), jnp.float32)
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    assert common.xla_flops(compiled) == 2 * 8 * 16 * 4
