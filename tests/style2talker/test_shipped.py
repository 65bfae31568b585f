"""The Style2Talker weights shipped in the package: they load (tensors only), and for a short clip of a HELD-OUT
identity speaking a held-out utterance, the expression coefficients generated under an emotion text are
recognised as that emotion by the evaluation classifier (trained on ground-truth expression windows), and the
mouth in the generated video opens and closes with the true mouth (read by the evaluation regressor)."""

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


def _evaluators():
    from jaxtalk.eval import load_evaluators
    from jaxtalk.eval.evaluators import MANIFEST, default_weights_dir

    if not (default_weights_dir() / MANIFEST).is_file():
        pytest.skip("jaxtalk.eval has no shipped evaluator weights in this checkout")
    return load_evaluators()


@pytest.mark.parametrize("emotion", ["happy", "sad"])
def test_generated_emotion_is_recognised_on_a_heldout_clip(models, emotion):
    ev = _evaluators()
    split = SplitConfig.eval()
    ident = synthetic.make_identity(split.identity_seed, 1)
    clip = synthetic.generate_clip(ident, "neutral", 1, split.utterance_seed + 5, num_frames=40, render_video=False)
    pipe = Style2TalkerPipeline(models, progress=False)
    text = pipe.text_feature(descriptions(emotion, 3, ident.gender, "train")[1])
    expression = pipe.expression(clip.audio, text, clip.expression[0], seed=0)
    assert expression.shape == (40, 64) and np.all(np.isfinite(expression))
    assert facs.EMOTIONS[int(ev.predict_emotion(expression))] == emotion


def test_generated_video_mouth_moves_with_the_true_mouth_on_a_heldout_clip(models):
    """The whole chain (audio + text -> Style-E -> Style-A frames) on a held-out identity and utterance: the mouth
    opening the evaluation regressor reads from the video correlates with the clip's true mouth opening. A copied
    reference frame scores 0; the weights shipped before Style-A's motion fix scored 0.04 over the bench's clips."""
    from jaxtalk.eval import metrics
    from jaxtalk.eval.data import clip_landmarks
    from jaxtalk.style2talker.pipeline import Style2TalkerInputs

    ev = _evaluators()
    split = SplitConfig.eval()
    ident = synthetic.make_identity(split.identity_seed, 2)
    clip = synthetic.generate_clip(ident, "happy", 2, split.utterance_seed + 7, num_frames=50,
                                   resolution=split.resolution)
    text = descriptions("happy", 2, ident.gender, "heldout")[0]
    result = Style2TalkerPipeline(models, progress=False)(Style2TalkerInputs(
        clip.frames[0], clip.audio, text, identity_expression=clip.expression[0], pose=clip.pose))
    n = min(len(result.frames), len(clip.frames))
    true_open = metrics.mouth_opening(clip_landmarks(ident, clip, split.resolution)[:n], split.resolution)
    lip_sync = metrics.pearson(ev.analyse(result.frames[:n])["mouth_opening"], true_open)
    print(f"[shipped style2talker] video lip-sync {lip_sync:.3f} over {n} frames")
    assert lip_sync > 0.3
