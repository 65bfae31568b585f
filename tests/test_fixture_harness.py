"""The fixture harness itself: a manifest field or array a runner leaves unread is an error, literal call
arguments are parsed from the manifest's call text, and a runner takes them from the fixture (a fixture recorded
with another truncation is run with that truncation)."""

from __future__ import annotations

import copy

import pytest

from tests import fixture_harness
from tests.fixture_harness import Fixture, call_literals


def test_call_literals_reads_code_not_comments():
    text = "img, lat = G([z], truncation=0.7, truncation_latent=t, noise=[n_i...], return_latents=True)  # i=4"
    assert call_literals(text) == {"truncation": 0.7, "return_latents": True}
    assert call_literals('ctl(unet, mode="read", batch_size=1, w=-1e-3)') == {"mode": "read", "batch_size": 1,
                                                                          "w": -1e-3}


def test_an_ignored_constructor_field_is_an_error(fixtures_dir):
    entry = copy.deepcopy(fixture_harness.manifest_entries("svp", fixtures_dir)["vx_ddim_scheduler"])
    entry["constructor"]["thresholding"] = True  # diffusers' option that jaxtalk's DDIM does not implement
    with pytest.raises(AssertionError, match=r"ignores constructor\.thresholding"):
        fixture_harness.run("svp", "vx_ddim_scheduler", fixtures_dir, entry=entry)


def test_an_unread_call_argument_or_array_is_an_error(tmp_path, fixtures_dir):
    entry = fixture_harness.manifest_entries("style2talker", fixtures_dir)["flow_warp"]
    entry = dict(entry, calls=[*entry["calls"], "out = warp_image(feat_same, deformation, padding_mode='border')"])
    with pytest.raises(AssertionError, match=r"ignores calls\[3\]\.padding_mode"):
        fixture_harness.run("style2talker", "flow_warp", fixtures_dir, entry=entry)

    def lazy(fx: Fixture) -> None:
        fx.arrays["flow"]  # reads one input, compares nothing

    with pytest.raises(AssertionError, match=r"ignores .*arrays\.deformation"):
        fixture_harness.run("style2talker", "flow_warp", fixtures_dir, runner=lazy)


def test_waived_fields_are_named_with_a_reason(fixtures_dir):
    def waiving(fx: Fixture) -> None:
        for k in list(fx.arrays.keys()):
            fx.waive(f"arrays.{k}", "test")

    assert fixture_harness.run("style2talker", "flow_warp", fixtures_dir, runner=waiving).unconsumed() == []


def test_stylegan2_runner_uses_the_recorded_truncation(fixtures_dir):
    """With the call's truncation changed the runner computes another image, so the stored one no longer matches:
    the value comes from the manifest, not from the runner."""
    entry = copy.deepcopy(fixture_harness.manifest_entries("style2talker", fixtures_dir)["stylegan2_generator"])
    entry["calls"][1] = entry["calls"][1].replace("truncation=0.7", "truncation=0.5")
    with pytest.raises(AssertionError, match="img_from_z"):
        fixture_harness.run("style2talker", "stylegan2_generator", fixtures_dir, entry=entry)


def test_missing_fixtures_fail_under_ci_and_are_listed_locally(tmp_path):
    """Without the golden fixture folder a parity test fails under CI=true and, locally, is skipped and listed
    loudly at the end of the run (run in a child pytest pointed at a folder that does not exist)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    test = "tests/test_fixture_harness.py::test_waived_fields_are_named_with_a_reason"
    env = {**os.environ, "JAXTALK_FIXTURES": str(tmp_path / "no_fixtures")}
    env.pop("CI", None)
    argv = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q", test]
    local = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    assert "GOLDEN FIXTURES MISSING" in local.stdout and test in local.stdout
    ci = subprocess.run(argv, cwd=REPO_ROOT, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=300)
    assert ci.returncode != 0 and "CI=true: the parity checks may not be skipped" in ci.stdout, ci.stdout[-2000:]
