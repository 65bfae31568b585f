"""Style-E training on the tiny preset over synthetic records, on a (2, 2, 2) mesh of 8 CPU devices: sparse and
text conditions, finite decreasing x0 MSE on a fixed batch, the timestep table frozen, resume equals the
uninterrupted run, `train/style_e.py` end to end."""

import numpy as np
import pytest

from jaxtalk import config
from jaxtalk.data import pipeline
from jaxtalk.training import data as data_lib
from jaxtalk.training import loop
from jaxtalk.training.style_e import StyleETask, save_text_features, text_feature_table
from tests.training.train_utils import check_mask, check_resume, load_cfg, overfit, run_script

PRESET = "train_style_e_tiny"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("style_e_train")


@pytest.fixture(scope="module")
def run(root):
    cfg = load_cfg(PRESET, root, "train.steps=3", "train.checkpoint_every=2")
    return cfg, loop.train(StyleETask.from_config(cfg), cfg)


def test_conditions(root, run):
    cfg = run[0]
    batch = next(iter(StyleETask.from_config(cfg).dataset()))
    b, t = cfg.data.batch_size, cfg.model.window
    assert batch["x0"].shape == batch["sparse"].shape == (b, t, 64)
    assert batch["text"].shape == (b, cfg.model.text_dim)
    source = pipeline.ClipWindowSource(cfg.data.record_dir, t)
    windows = [source[i] for i in range(len(source))]
    for i in range(b):  # the sparse condition is a window of the same speaker
        same = [w for w in windows if np.array_equal(w["expression"], batch["sparse"][i])]
        assert same and all(int(w["identity"]) == int(batch["identity"][i]) for w in same)
    same_window = load_cfg(PRESET, root, "data.sparse=same_window")
    batch = next(iter(StyleETask.from_config(same_window).dataset()))
    np.testing.assert_array_equal(batch["sparse"], batch["x0"])


def test_precomputed_text_features_match_the_text_tower(root, run):
    cfg = run[0]
    texts = data_lib.emotion_texts(cfg.data.record_dir)
    table = text_feature_table(cfg.text, texts)
    assert sorted(table) == texts and all(v.shape == (cfg.model.text_dim,) for v in table.values())
    path = save_text_features(root / "texts.npz", table)
    cfg2 = load_cfg(PRESET, root, f"text.features_file={path}")
    again = text_feature_table(cfg2.text, texts)
    for t in texts:
        np.testing.assert_array_equal(again[t], table[t])
    with pytest.raises(ValueError, match="no feature"):
        text_feature_table(cfg2.text, [*texts, "an unseen description"])


def test_trains_and_overfits_with_the_timestep_table_frozen(run):
    cfg, result = run
    assert [r["step"] for r in result.history] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in result.history)
    task = StyleETask.from_config(cfg)
    _, before, after, losses = overfit(task, cfg, 15)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    check_mask(task, cfg, before, after, trained=("style_e/input_process", "style_e/mlp", "style_e/output_process"),
               frozen=("embed_timestep/pe",))


def test_resume_gives_the_uninterrupted_loss(root, run):
    check_resume(StyleETask.from_config(run[0]), run[0], run[1], root, PRESET)


def test_config_is_checked():
    with pytest.raises(config.ConfigError, match="prediction_type"):
        config.load(PRESET, ["diffusion.prediction_type=epsilon"])
    with pytest.raises(config.ConfigError, match="text_dim"):
        config.load(PRESET, ["model.text_dim=8"])


def test_train_script_runs(root, run):
    run_script("style_e", PRESET, root)
