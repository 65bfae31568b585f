"""The `svp_synthetic_fast` sampling preset: it loads, differs from `svp_synthetic` only in its sampler, names the
solver and step count that `bench/svp_steps.py` measured (docs/svp_steps.json), and `generate --fast` uses it."""

from __future__ import annotations

import json
from pathlib import Path

from jaxtalk import config
from jaxtalk.cli import _parser
from jaxtalk.svp import pipeline as P
from jaxtalk.svp.config import SVPConfig

MEASURED = Path(__file__).resolve().parents[2] / "docs" / "svp_steps.json"


def test_preset_loads_and_changes_only_the_sampler() -> None:
    fast = config.to_dict(config.load("svp_synthetic_fast", cls=SVPConfig))
    base = config.to_dict(config.load("svp_synthetic", cls=SVPConfig))
    assert {k for k in base if base[k] != fast[k]} == {"sampler"}
    changed = {k for k in base["sampler"] if base["sampler"][k] != fast["sampler"][k]}
    assert changed <= {"kind", "steps"} and changed


def test_preset_names_the_measured_solver_and_steps() -> None:
    kind, steps = P.fast_sampling()
    measured = json.loads(MEASURED.read_text())
    fewest = measured["fewest_steps_within_noise"]
    assert fewest[kind] == steps
    assert steps == min(n for n in fewest.values() if n is not None)
    assert steps < 25 and "wall_s" in measured["runs"][f"{kind}@{steps}"]


def test_generate_fast_flag_picks_the_preset() -> None:
    kind, steps = P.fast_sampling()
    args = _parser().parse_args(["generate", "--image", "a.png", "--out", "o.mp4", "--fast"])
    assert args.fast
    assert P.sampling_choice(args.sampler, args.steps, fast=args.fast) == (kind, steps)
    assert P.sampling_choice(None, 40, fast=True) == (kind, 40)
    assert P.sampling_choice("ddim", None, fast=True) == ("ddim", None)
    assert P.sampling_choice(None, None, fast=False) == (None, None)
