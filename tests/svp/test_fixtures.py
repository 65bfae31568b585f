"""The svp golden fixtures, one test per manifest module (id = module name), through `tests.fixture_harness`:
the runner in `tests/svp/fixture_runners*.py` must exist and must take every constructor key, literal call
argument and array from the fixture."""

from __future__ import annotations

import pathlib

import pytest

from tests import fixture_harness


@pytest.mark.parametrize("name", fixture_harness.module_names("svp"))
def test_fixture(name: str, fixtures_dir: pathlib.Path) -> None:
    fixture_harness.run("svp", name, fixtures_dir)
