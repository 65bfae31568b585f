"""The shape both products share: named model components (a typo is an AttributeError, not None), one
`write_outputs`, one batch-placement rule."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk import config, parallel
from jaxtalk.data import media
from jaxtalk.style2talker import pipeline as s2t_pipeline
from jaxtalk.svp import pipeline as svp_pipeline
from jaxtalk.svp.models import COMPONENTS, SVPModels


def test_svp_models_have_named_components():
    models = SVPModels(config=config.load("svp_tiny"), modules={"unet": "the unet"}, params={})
    assert models.unet == "the unet"
    assert all(getattr(models, name) is None for name in COMPONENTS if name != "unet")
    with pytest.raises(AttributeError):
        models.unte  # noqa: B018 - a typo must fail here, not later as None


def test_one_write_outputs_for_both_products(tmp_path):
    assert svp_pipeline.write_outputs is s2t_pipeline.write_outputs is media.write_outputs
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    audio = np.zeros(16000 // 25 * 4, np.float32)
    paths = media.write_outputs(tmp_path / "out.mp4", frames, audio, 25.0, config.load("svp_tiny"))
    assert paths["video"].is_file() and config.load(paths["config"]).video == config.load("svp_tiny").video


def test_batch_placement_rule():
    mesh = parallel.make_mesh(4, 2, 1)
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    placed = parallel.put(x, mesh, parallel.batch_sharding(mesh, 2))
    np.testing.assert_array_equal(np.asarray(placed), x)
    assert placed.sharding == parallel.batch_sharding(mesh, 2)
    assert parallel.put(np.float32(2.0), mesh).sharding.is_fully_replicated
    again = parallel.put(placed, mesh, parallel.batch_sharding(mesh, 2))
    np.testing.assert_array_equal(np.asarray(again), x)
    assert parallel.shard_batch({"x": x}, mesh)["x"].sharding == parallel.batch_sharding(mesh, 2)


def test_both_pipelines_take_models_and_an_optional_mesh():
    """One constructor convention: `Pipeline(models, *, progress=..., mesh=None)`; SVP places the bundle on a
    mesh given here (the Style2Talker pipeline splits its frame batches over it)."""
    import inspect

    for cls in (svp_pipeline.SVPPipeline, s2t_pipeline.Style2TalkerPipeline):
        params = inspect.signature(cls.__init__).parameters
        assert list(params)[:2] == ["self", "models"] and params["mesh"].default is None
        assert params["mesh"].kind is params["progress"].kind is inspect.Parameter.KEYWORD_ONLY
