"""The Style2Talker weights shipped in the package: they load (tensors only), and for a short clip of a HELD-OUT
identity speaking a held-out utterance, the expression coefficients generated under an emotion text are
recognised as that emotion by the evaluation classifier (trained on ground-truth expression windows)."""

import numpy as np
import pytest

from jaxtalk.data import facs, synthetic
from jaxtalk.style2talker import art_styles
from jaxtalk.style2talker.emotion_phrases import descriptions
from jaxtalk.style2talker.pipeline import Style2TalkerPipeline
from jaxtalk.style2talker.shipped import load_shipped, shipped_dir, shipped_manifest
from jaxtalk.training.style2talker_data import SplitConfig

pytestmark = pytest.mark.skipif(shipped_dir() is None, reason="this checkout has no shipped Style2Talker weights")


@pytest.fixture(scope="module")
def models():
    return load_shipped()


def test_shipped_folder_is_small_and_documented(models):
    files = [p for p in shipped_dir().iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 30 * 2**20
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt") for p in files)  # no pickles
    manifest = shipped_manifest()
    for key in ("command", "commit", "train_split", "eval_split", "steps", "wall_seconds", "final_metrics"):
        assert key in manifest, key
    assert manifest["train_split"]["identity_seed"] != manifest["eval_split"]["identity_seed"]
    assert models.style_names == art_styles.STYLE_NAMES and not models.random_weights


@pytest.mark.parametrize("emotion", ["happy", "sad"])
def test_generated_emotion_is_recognised_on_a_heldout_clip(models, emotion):
    from jaxtalk.eval import load_evaluators
    from jaxtalk.eval.evaluators import MANIFEST, default_weights_dir

    if not (default_weights_dir() / MANIFEST).is_file():
        pytest.skip("jaxtalk.eval has no shipped evaluator weights in this checkout")
    ev = load_evaluators()
    split = SplitConfig.eval()
    ident = synthetic.make_identity(split.identity_seed, 1)
    clip = synthetic.generate_clip(ident, "neutral", 1, split.utterance_seed + 5, num_frames=40, render_video=False)
    pipe = Style2TalkerPipeline(models, progress=False)
    text = pipe.text_feature(descriptions(emotion, 3, ident.gender, "train")[1])
    expression = pipe.expression(clip.audio, text, clip.expression[0], seed=0)
    assert expression.shape == (40, 64) and np.all(np.isfinite(expression))
    assert facs.EMOTIONS[int(ev.predict_emotion(expression))] == emotion
