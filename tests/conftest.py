"""Test-wide settings: 8 simulated CPU devices, highest matmul precision, fixture location."""

import os
import pathlib

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAXTALK_COMPILE_CACHE", "off")  # CLI tests must not write to the user's ~/.cache

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def fixtures_root() -> pathlib.Path:
    """Fixture folder from `JAXTALK_FIXTURES` (default `../shared/fixtures` from the repo root)."""
    env = os.environ.get("JAXTALK_FIXTURES")
    return pathlib.Path(env) if env else (REPO_ROOT.parent / "shared" / "fixtures")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    root = fixtures_root()
    if not root.is_dir():
        pytest.skip(f"fixture folder {root} not found; set JAXTALK_FIXTURES")
    return root


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep torch from oversubscribing the small CI machine."""
    try:
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
