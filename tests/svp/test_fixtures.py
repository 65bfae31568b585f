"""The SVP golden fixtures, driven by `<fixtures>/svp/manifest.json`: one test per module (id = module name).

Runners are gathered from every `tests/svp/fixture_runners*.py`, each defining `RUNNERS = {module name:
fn(fixture_dir, entry)}` (`fixture_dir`: the svp fixture folder, `entry`: the module's manifest record). A manifest
module without a runner fails, so a new fixture can never go unchecked.
"""

from __future__ import annotations

import functools
import importlib
import json
import pathlib

import pytest

from tests.conftest import fixtures_root

HERE = pathlib.Path(__file__).resolve().parent


def _manifest(folder: pathlib.Path) -> dict:
    return {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if not k.startswith("_")}


def _module_names() -> list[str]:
    folder = fixtures_root() / "svp"
    if not (folder / "manifest.json").is_file():
        return ["<no svp manifest>"]
    return sorted(_manifest(folder))


@functools.cache
def _runners() -> tuple[dict, dict[str, str]]:
    """(module name -> runner, runner file -> import error) over tests/svp/fixture_runners*.py."""
    runners, owner, errors = {}, {}, {}
    for file in sorted(HERE.glob("fixture_runners*.py")):
        try:
            mod = importlib.import_module(f"tests.svp.{file.stem}")
        except Exception as e:  # noqa: BLE001 - reported on the modules that then lack a runner
            errors[file.name] = f"{type(e).__name__}: {e}"
            continue
        for name, fn in getattr(mod, "RUNNERS", {}).items():
            if name in runners:
                raise AssertionError(f"fixture runner {name!r} is defined in both {owner[name]} and {file.name}")
            runners[name], owner[name] = fn, file.name
    return runners, errors


@pytest.mark.parametrize("name", _module_names())
def test_fixture(name: str, fixtures_dir: pathlib.Path) -> None:
    folder = fixtures_dir / "svp"
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"{folder / 'manifest.json'} not found")
    runners, errors = _runners()
    if name not in runners:
        broken = "; ".join(f"{f} failed to import ({e})" for f, e in errors.items())
        pytest.fail(f"no runner for fixture module {name}" + (f" ({broken})" if broken else ""))
    runners[name](folder, _manifest(folder)[name])
