"""The CLI's persistent compilation cache: where it lives, how it is turned off, and that a second process reads
what the first wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jaxtalk import compile_cache

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
from jaxtalk.compile_cache import enable_compile_cache
import jax, jax.numpy as jnp
folder = enable_compile_cache(sys.argv[1], min_compile_seconds=0)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
f(jnp.ones((64, 64))).block_until_ready()
print(folder)
"""


def test_default_folder_and_off_switch(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXTALK_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_cache_dir() == tmp_path / "jaxtalk" / "xla"
    monkeypatch.setenv("JAXTALK_COMPILE_CACHE", str(tmp_path / "mine"))
    assert compile_cache.default_cache_dir() == tmp_path / "mine"
    for off in ("off", "0", ""):
        monkeypatch.setenv("JAXTALK_COMPILE_CACHE", off)
        assert compile_cache.default_cache_dir() is None
        assert compile_cache.enable_compile_cache() is None


def test_second_process_reads_the_first_ones_entries(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    folder = tmp_path / "xla"
    run = lambda: subprocess.run([sys.executable, "-c", CHILD, str(folder)], env=env, capture_output=True, text=True,
                                 check=True, timeout=300)
    assert run().stdout.strip() == str(folder)
    entries = sorted(p.name for p in folder.iterdir())
    assert entries, "the first process wrote no cache entry"
    run()
    assert sorted(p.name for p in folder.iterdir()) == entries  # same program: read back, nothing new written
