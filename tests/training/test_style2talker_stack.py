"""The whole-stack Style2Talker trainer's Style-A fine-tune (`style_a_expression`): it starts from the `style_a`
stage's checkpoint (`init_run`, tested in test_style_a_training), trains with the expression term, and its
Style-A is what the export holds."""

import json

import numpy as np
import pytest
from flax import traverse_util

from jaxtalk import config
from jaxtalk.style2talker.loading import load_models
from jaxtalk.training.style2talker import build_tasks, restore_params, style_a_config, train_all

PRESET = "train_style2talker_tiny"
ONLY_STYLE_A = ("text.steps=0", "audio2exp.steps=0", "style_e.steps=0", "style_a.steps=2", "style_a.batch_size=8",
                "style_a_expression.steps=2", "style_a_expression.batch_size=8", "progress=false")


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):  # two Style-A trainings: ~4-6 minutes of CPU, hence `slow`
    work = tmp_path_factory.mktemp("s2t_stack") / "run"
    cfg = config.load(PRESET, [f"workdir={work}", *ONLY_STYLE_A])
    return cfg, train_all(cfg, "test")


@pytest.mark.slow
def test_fine_tune_starts_from_the_style_a_stage_and_is_exported(stack):
    cfg, manifest = stack
    work = cfg.workdir
    ft_cfg = style_a_config(cfg, "style_a_expression")
    assert ft_cfg.loss.expression == cfg.style_a_expression_weight > 0 and ft_cfg.init_run.endswith("style_a")
    assert cfg.style_a_loss.expression == 0  # the style_a stage itself keeps the original objective
    tasks = build_tasks(cfg)
    base, _ = restore_params(tasks["style_a"], style_a_config(cfg))
    tuned, step = restore_params(tasks["style_a_expression"], ft_cfg)
    assert step == 2 and "probe" in tuned and "probe" not in base
    exported = load_models(f"{work}/export")
    got, want, before = _flat(exported.params["style_a"]), _flat(tuned["style_a"]), _flat(base["style_a"])
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
    assert any(not np.array_equal(want[k], before[k]) for k in want)  # the fine-tune trained
    np.testing.assert_allclose(exported.style_bank, tuned["style_bank"], rtol=1e-6)
    assert manifest["steps"]["style_a_expression"] == 2 and manifest["steps_planned"]["style_a_expression"] == 2
    assert any("expression" in k for k in manifest["replacements"])
    rows = [json.loads(line) for line in open(f"{work}/style_a_expression/metrics.jsonl")]
    assert rows and all(np.isfinite(r["expr"]) for r in rows)

