"""What `jaxtalk.faces` hands Style2Talker: the landmark-region parsing map reaches Style-A (as stand-in BiSeNet
logits) when the weights were trained with a parsing input, and not when they were trained with zeros; the
identity's expression measures."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk import config, faces
from jaxtalk.faces import analysis as fa
from jaxtalk.faces import geometry as geo
from jaxtalk.style2talker import pipeline
from jaxtalk.style2talker.config import Style2TalkerConfig


class CapturedError(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_models():
    """The tiny preset's config without weights: the capture below stops generate before any model runs."""
    from jaxtalk.style2talker.models import Style2TalkerModels

    return Style2TalkerModels(config.load("style2talker_tiny", cls=Style2TalkerConfig), {}, {})


def test_parsing_logits_from_labels():
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = geo.PARSING_LABELS["nose"]
    logits = geo.parsing_logits(labels, 4)
    assert logits.shape == (4, 4, 19) and logits.dtype == np.float32
    assert np.all(logits.argmax(-1)[1:3, 1:3] == geo.PARSING_LABELS["nose"]) and logits[0, 0, 0] == geo.PARSING_LOGIT
    assert np.all(logits.sum(-1) == geo.PARSING_LOGIT)
    with pytest.raises(ValueError, match="label map"):
        geo.parsing_logits(np.full((4, 4), 40, np.uint8), 4)


@pytest.mark.parametrize("uses_parsing", [True, False])
def test_generate_passes_the_parsing_map_when_the_weights_use_it(tiny_models, monkeypatch, tmp_path, uses_parsing):
    import dataclasses

    seen = {}

    def capture(self, inputs, seed=None):
        seen["parsing"] = inputs.parsing
        raise CapturedError

    monkeypatch.setattr(pipeline.Style2TalkerPipeline, "__call__", capture)
    models = dataclasses.replace(tiny_models, uses_parsing=uses_parsing)
    labels = np.zeros((256, 256), np.uint8)
    labels[100:150, 100:150] = geo.PARSING_LABELS["skin"]
    with pytest.raises(CapturedError):
        pipeline.generate(np.zeros((64, 64, 3), np.uint8), np.sin(np.arange(16000) / 5).astype(np.float32) * 0.3,
                          "She is happy.", tmp_path / "out.mp4", models=models, parsing=labels)
    if uses_parsing:
        size = models.config.style_a.in_size
        assert seen["parsing"].shape == (size, size, 19)
        assert seen["parsing"][size // 2, size // 2].argmax() == geo.PARSING_LABELS["skin"]
    else:
        assert seen["parsing"] is None
    with pytest.raises(ValueError, match="label map"):  # a bad map is refused before any model work
        pipeline.generate(np.zeros((64, 64, 3), np.uint8), np.ones(16000, np.float32) * 0.1, "She is happy.",
                          tmp_path / "out.mp4", models=models, parsing=np.full((8, 8), 99, np.uint8))


def test_shipped_weights_were_trained_without_parsing():
    from jaxtalk.style2talker.loading import _trained_with_parsing
    from jaxtalk.style2talker.shipped import shipped_dir

    assert _trained_with_parsing(shipped_dir()) is False
    assert _trained_with_parsing(shipped_dir().parent) is True  # no manifest: an original / converted checkpoint


def test_generate_from_a_photo_hands_the_landmark_parsing_map_to_style2talker(material, tiny_models, monkeypatch,
                                                                             tmp_path):
    """A raw photo given to `generate()` (what `jaxtalk generate --system style2talker` calls) is aligned, and its
    landmark parsing map and head pose reach the pipeline."""
    seen = {}

    def capture(self, inputs, seed=None):
        seen["inputs"] = inputs
        raise CapturedError

    monkeypatch.setattr(pipeline.Style2TalkerPipeline, "__call__", capture)
    with pytest.raises(CapturedError):
        pipeline.generate(material / "astronaut.png", material / "speech.wav", "She is happy.", tmp_path / "o.mp4",
                          models=tiny_models)
    inputs, size = seen["inputs"], tiny_models.config.style_a.in_size
    assert inputs.image.shape == (256, 256, 3) and inputs.pose.shape == (6,)
    assert inputs.parsing.shape == (size, size, 19)
    assert len(set(inputs.parsing.argmax(-1).ravel().tolist())) >= 4  # several face regions, not a blank map


def test_expression_measures_are_pose_invariant_and_see_an_open_mouth():
    """The canonical face, its jaw dropped by 1.5 cm, posed and projected: the measures see the open mouth (and
    nothing else) whatever the pose; the neutral face measures zero."""
    from jaxtalk.faces import headpose as hp

    v = hp.canonical_face().vertices * hp.TO_CAMERA_AXES  # camera axes: y down
    opened = v.copy()
    lower = v[:, 1] > v[14, 1] - 0.05  # the lower lip's inner edge and everything below it
    opened[lower, 1] += 1.5
    assert all(abs(x) < 1e-6 for x in fa.expression_measures(v).values())
    size = (480, 640)
    K = hp.camera_matrix(size)
    for angles in ((0, 0, 0), (0.25, -0.4, 0.2)):
        R = hp.rotation_from_euler(np.asarray(angles))
        cam = opened @ R.T + [0, 0, 100.0]
        lms = np.concatenate([cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2],
                              (cam[:, 2:] - 100.0) * K[0, 0] / 100.0], 1)
        fit = hp.fit_head_pose(lms, size)
        m = fa.expression_measures(lms, fit.rotation)
        iod = np.linalg.norm(v[list(fa.LEFT_EYE_CONTOUR)].mean(0)[:2] - v[list(fa.RIGHT_EYE_CONTOUR)].mean(0)[:2])
        assert m["mouth_open"] == pytest.approx(1.5 / iod, abs=0.03), (angles, m)
        assert abs(m["eye_open_left"]) < 0.03 and abs(m["brow_raise_right"]) < 0.03, m
        assert abs(m["smile"]) < 0.03 and abs(m["mouth_width"]) < 0.03, m


def test_astronaut_expression(astronaut):
    p = faces.prepare_style2talker(astronaut)
    m = p.meta["expression_measures"]
    assert m["mouth_width"] > 0.1  # her wide smile, against the canonical face
    assert "BFM" in p.meta["identity_exp"]
