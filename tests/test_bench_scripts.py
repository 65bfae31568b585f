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


def _fidelity_run(seed: int, rng, clips: int, weights: str = "w") -> dict:
    row = lambda: {k: float(rng.normal()) for k in ("psnr", "ssim", "f_lmd", "m_lmd", "lip_sync")}  # noqa: E731
    row2 = lambda: {k: float(rng.normal()) for k in ("psnr", "f_lmd", "m_lmd", "stylesim")}  # noqa: E731
    per_clip = {"table1": {m: [row() for _ in range(clips)] for m in
                           ("trained", "wo_style", "mismatched_audio", "copy_reference")},
                "table2": {m: [row2() for _ in range(clips)] for m in ("trained", "wo_style")},
                "identity_leakage": {m: [{"margin": float(rng.normal())} for _ in range(clips)]
                                     for m in ("probabilistic", "deterministic")}}
    dcls = {b: {"happy": float(rng.uniform(0.1, 5)), "sad": float(rng.uniform(0.1, 5))}
            for b in ("audio", "expression", "both")}
    return {"seed": seed, "weights": weights, "per_clip": per_clip, "dcls": dcls}


def test_fidelity_pool_is_the_paired_verdict_over_all_clips(tmp_path):
    import numpy as np
    import pytest

    from bench import fidelity_svp
    from jaxtalk.eval import metrics

    rng = np.random.default_rng(0)
    runs = [_fidelity_run(0, rng, 4), _fidelity_run(1, rng, 12)]
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    pooled = fidelity_svp.pool(paths)
    assert pooled["clips"] == 16 and pooled["seeds"] == [0, 1]
    trained = runs[0]["per_clip"]["table1"]["trained"] + runs[1]["per_clip"]["table1"]["trained"]
    copy = runs[0]["per_clip"]["table1"]["copy_reference"] + runs[1]["per_clip"]["table1"]["copy_reference"]
    assert pooled["targets"]["m_lmd_beats_copy_reference"] == metrics.paired_verdict(trained, copy, "m_lmd", True)
    assert pooled["table1"]["trained"]["lip_sync"] == pytest.approx(np.mean([r["lip_sync"] for r in trained]))
    assert pooled["dcls"]["both"]["sad"] == pytest.approx((runs[0]["dcls"]["both"]["sad"]
                                                           + runs[1]["dcls"]["both"]["sad"]) / 2)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_fidelity_run(2, rng, 4, weights="another")))
    with pytest.raises(SystemExit, match="different weights"):
        fidelity_svp.pool([paths[0], other])
