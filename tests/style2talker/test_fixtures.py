"""The Style2Talker golden fixtures, driven by the manifest: one test per module, id = module name.

Runners come from every `tests/style2talker/fixture_runners*.py` (each defines `RUNNERS = {name: fn(fixture_dir,
entry)}`); a manifest module without a runner fails, so a new fixture can never go unchecked.
"""

from __future__ import annotations

import functools
import importlib
import json
import pathlib

import pytest

from tests.conftest import fixtures_root

HERE = pathlib.Path(__file__).resolve().parent


def _manifest_modules() -> list[str]:
    path = fixtures_root() / "style2talker" / "manifest.json"
    if not path.is_file():
        return ["<no style2talker manifest>"]
    return sorted(json.loads(path.read_text())["modules"])


@functools.cache
def _runners() -> tuple[dict, dict[str, str]]:
    """(name -> runner, runner file -> import error) over all fixture_runners*.py files."""
    runners, errors, owner = {}, {}, {}
    for file in sorted(HERE.glob("fixture_runners*.py")):
        try:
            mod = importlib.import_module(f"tests.style2talker.{file.stem}")
        except Exception as e:  # noqa: BLE001 - reported on the modules that then lack a runner
            errors[file.name] = f"{type(e).__name__}: {e}"
            continue
        for name, fn in getattr(mod, "RUNNERS", {}).items():
            if name in runners:
                raise AssertionError(f"fixture runner {name!r} defined in both {owner[name]} and {file.name}")
            runners[name], owner[name] = fn, file.name
    return runners, errors


@pytest.mark.parametrize("name", _manifest_modules())
def test_fixture(name: str, fixtures_dir: pathlib.Path) -> None:
    folder = fixtures_dir / "style2talker"
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        pytest.skip(f"{manifest_path} not found")
    entry = json.loads(manifest_path.read_text())["modules"][name]
    runners, errors = _runners()
    if name not in runners:
        broken = "; ".join(f"{f} failed to import ({e})" for f, e in errors.items())
        pytest.fail(f"no runner for fixture module {name}" + (f" ({broken})" if broken else ""))
    runners[name](folder, entry)
