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


_SKIPPED_FOR_FIXTURES: list[str] = []


def in_ci() -> bool:
    """CI=true (or 1 / yes): missing golden fixtures fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """The golden fixture folder. Missing: an error under CI=true; locally a skip that the end of the run lists."""
    root = fixtures_root()
    if not (root / "svp" / "manifest.json").is_file() or not (root / "style2talker" / "manifest.json").is_file():
        message = (f"golden fixture folder {root} (with svp/ and style2talker/ manifests) not found; set "
                   "JAXTALK_FIXTURES or check out ../shared/fixtures")
        if in_ci():
            pytest.fail(message + " (CI=true: the parity checks may not be skipped)", pytrace=False)
        pytest.skip(message)
    return root


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "golden fixture folder" in str(report.longrepr):
        _SKIPPED_FOR_FIXTURES.append(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest hook
    if _SKIPPED_FOR_FIXTURES:
        terminalreporter.section("GOLDEN FIXTURES MISSING", sep="!", red=True, bold=True)
        terminalreporter.write_line(f"{len(_SKIPPED_FOR_FIXTURES)} parity tests did NOT run (no fixture folder at "
                                    f"{fixtures_root()}):", red=True, bold=True)
        for nodeid in _SKIPPED_FOR_FIXTURES:
            terminalreporter.write_line(f"  skipped {nodeid}", red=True)


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
