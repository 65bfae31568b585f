"""Contrastive style-extractor training on the tiny preset over synthetic records, on a (1, 4, 2) mesh of 8 CPU
devices: positive-pair batches, finite decreasing InfoNCE on a fixed batch, every param trained, resume equals
the uninterrupted run, `train/style_prior.py` end to end."""

import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.training import data as data_lib
from jaxtalk.training import loop
from jaxtalk.training.style_prior import StylePriorTask
from tests.training.train_utils import check_mask, check_resume, load_cfg, overfit, run_script

PRESET = "train_style_prior_tiny"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("style_prior_train")


@pytest.fixture(scope="module")
def run(root):
    cfg = load_cfg(PRESET, root, "train.steps=3", "train.checkpoint_every=2")
    return cfg, loop.train(StylePriorTask.from_config(cfg), cfg)


def test_batches_pair_every_window_with_a_positive(run):
    cfg = run[0]
    task = StylePriorTask.from_config(cfg)
    batch = data_lib.contrastive_pairs(next(iter(task.dataset())))
    b, t = cfg.data.batch_size, cfg.data.window
    assert batch["exp"].shape == (2 * b, t, 64)
    assert batch["audio"].shape == (2 * b, t, cfg.audio.feature_dim)
    np.testing.assert_array_equal(batch["identity"][:b], batch["identity"][b:])
    np.testing.assert_array_equal(batch["emotion"][:b], batch["emotion"][b:])
    clips = StylePriorTask.from_config(config.load(PRESET, [f"data.record_dir={cfg.data.record_dir}",
                                                            "data.positives=clip"])).dataset()
    pair = data_lib.contrastive_pairs(next(iter(clips)))
    np.testing.assert_array_equal(pair["clip"][:b], pair["clip"][b:])


def test_trains_every_param_and_overfits(run):
    cfg, result = run
    assert [r["step"] for r in result.history] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in result.history)
    task = StylePriorTask.from_config(cfg)
    _, before, after, losses = overfit(task, cfg, 15)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    check_mask(task, cfg, before, after, trained=("style_extractor/exp_branch", "style_extractor/audio_branch",
                                                  "style_extractor/fusion_exp", "style_extractor/style_query"))


def test_resume_gives_the_uninterrupted_loss(root, run):
    check_resume(StylePriorTask.from_config(run[0]), run[0], run[1], root, PRESET)


def test_config_is_checked():
    with pytest.raises(config.ConfigError, match="audio_dim"):
        config.load(PRESET, ["extractor.audio_dim=32"])
    with pytest.raises(config.ConfigError, match="pos_len"):
        config.load(PRESET, ["data.window=100"])


def test_train_script_runs(root, run):
    run_script("style_prior", PRESET, root)
