"""The shipped SVP weights (trained on the synthetic faces by train/svp_stack.py) load and animate a held-out
person: on a clip from the evaluation population the generated mouth should open and close with the true mouth
(positive lip-sync correlation, which the copied reference frame cannot have) and its mouth landmarks should be
closer to the ground truth than the copied reference frame's. The shipped weights do both on this clip (lip-sync
0.94, M-LMD 2.91 vs 3.46 for the copy; over bench/fidelity_svp.py's 16 clips lip-sync 0.83, and M-LMD within noise
of the copy's, 3.52 vs 3.45)."""

import json

import numpy as np
import pytest

from jaxtalk.data import synthetic
from jaxtalk.eval import load_evaluators
from jaxtalk.svp import loading as svp_loading
from jaxtalk.svp.pipeline import ClipInputs, StyleClip, SVPPipeline
from jaxtalk.training.svp_stack import EVAL_SEED, TRAIN_SEED

pytestmark = pytest.mark.xdist_group("trained_svp")  # one worker loads the weights and samples the clip once

STEPS = 10  # fewer than the config's 25: the test checks the weights, not the sampler budget


@pytest.fixture(scope="module")
def trained():
    return svp_loading.load_models(svp_loading.packaged_weights(), overrides=[f"sampler.steps={STEPS}"])


def test_manifest_records_the_training(trained):
    manifest = json.loads((svp_loading.packaged_weights() / "manifest.json").read_text())
    training = manifest["training"]
    assert training["train_seed"] == TRAIN_SEED and training["eval_seed"] == EVAL_SEED
    assert {"vae", "style_prior", "stage1", "stage2", "stage3", "stage3_det"} <= set(training["runs"])
    assert all(run["steps"] > 0 and run["wall_s"] > 0 for run in training["runs"].values())
    assert manifest["num_params"] == trained.num_params
    assert trained.config.audio.encoder == "logmel" and trained.config.style.enabled


@pytest.fixture(scope="module")
def held_out(trained):
    identity = synthetic.make_identity(EVAL_SEED, 321)
    target = synthetic.generate_clip(identity, "surprised", 2, seed=11, num_frames=16, resolution=64)
    style = synthetic.generate_clip(identity, "surprised", 2, seed=12, num_frames=16, resolution=64,
                                    render_video=False)
    clip = ClipInputs(target.frames[0], target.audio, target.head_kps, StyleClip(style.expression, style.audio))
    frames = SVPPipeline(trained, progress=False)(clip).frames
    assert frames.shape == target.frames.shape and frames.dtype == np.uint8
    ev = load_evaluators()
    generated = ev.frame_metrics(frames, target.frames)
    copied = ev.frame_metrics(np.repeat(target.frames[:1], len(frames), 0), target.frames)
    print(f"[trained svp] generated {generated} | copied reference {copied}")
    return generated, copied


def test_held_out_mouth_moves_with_the_true_mouth(held_out):
    generated, copied = held_out
    assert generated["lip_sync"] > 0.0 == copied["lip_sync"]


def test_held_out_mouth_landmarks_beat_the_copied_reference(held_out):
    generated, copied = held_out
    assert generated["m_lmd"] < copied["m_lmd"]
