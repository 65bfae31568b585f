"""The shape both products share: named model components (a typo is an AttributeError, not None), one
`write_outputs`, one batch-placement rule."""

from __future__ import annotations

import dataclasses

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


def test_style2talker_models_have_named_components():
    from jaxtalk.style2talker.models import KINDS, Style2TalkerModels

    models = Style2TalkerModels(config.load("style2talker_tiny"), {name: f"the {name}" for name in KINDS}, {})
    assert [getattr(models, name) for name in KINDS] == [f"the {name}" for name in KINDS]
    with pytest.raises(AttributeError):
        models.style_b  # noqa: B018


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


def test_both_products_name_the_same_roles_with_one_call_convention():
    """`Pipeline(models, ...)` called on one `Inputs` (-> one `Result`) or a sequence (-> a list), with a seed;
    `generate()` and `write_demo()` take the same keyword arguments in both products."""
    import inspect

    for product in (svp_pipeline, s2t_pipeline):
        assert product.Pipeline.__call__.__name__ == "__call__" and product.Inputs and product.Result
        call = inspect.signature(product.Pipeline.__call__).parameters
        assert list(call)[:2] == ["self", "inputs"] and call["seed"].kind is inspect.Parameter.KEYWORD_ONLY
    shared = {"face", "driving", "face_index", "min_face_score", "debug_dir", "paste_back", "checkpoint", "config",
              "overrides", "seed", "models", "progress", "on_progress", "on_note", "write"}
    for product in (svp_pipeline, s2t_pipeline):
        params = inspect.signature(product.generate).parameters
        assert shared <= set(params), shared - set(params)
        assert list(params)[:2] == ["image", "audio"] and "out" in params
    demo = [inspect.signature(p.write_demo).parameters for p in (svp_pipeline, s2t_pipeline)]
    assert list(demo[0]) == list(demo[1]) == ["out_dir", "seed", "config", "checkpoint", "progress"]


def test_pipelines_refuse_what_is_not_their_inputs():
    svp = svp_pipeline.SVPPipeline.__new__(svp_pipeline.SVPPipeline)
    s2t = s2t_pipeline.Style2TalkerPipeline.__new__(s2t_pipeline.Style2TalkerPipeline)
    for pipe in (svp, s2t):
        with pytest.raises(ValueError, match="no"):
            pipe([])
        with pytest.raises(TypeError, match="pass one"):
            pipe(["not an input"])


@pytest.mark.parametrize("system", ["svp", "style2talker"])
def test_cli_generate_is_the_library_generate(system, tmp_path, monkeypatch, capsys):
    """`jaxtalk generate` parses arguments and calls the product's `generate()`: no second code path."""
    import json

    from jaxtalk import cli

    product = svp_pipeline if system == "svp" else s2t_pipeline
    seen = {}

    def fake_generate(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        kwargs["on_note"]("face: a note from the library")
        frames = np.zeros((3, 8, 8, 3), np.uint8)
        summary = media.result_summary(system, args[-1], frames, 25.0, "random init (seed 0)")
        return {"video": tmp_path / "v.mp4", "config": tmp_path / "v.yaml", "summary": summary}

    monkeypatch.setattr(product, "generate", fake_generate)
    argv = ["generate", "--system", system, "--image", "face.png", "--audio", "a.wav", "--out", "v.mp4", "--json",
            "--paste-back", "--face", "on", "--seed", "4", "x.y=1"] + (["--emotion", "calm"] if system != "svp" else [])
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == media.result_summary(system, "v.mp4", np.zeros((3, 8, 8, 3)), 25.0,
                                                           "random init (seed 0)")
    assert "face: a note from the library" in printed.err and "video: 3 frames of 8x8" in printed.err
    kw = seen["kwargs"]
    assert seen["args"][:2] == ("face.png", "a.wav") and seen["args"][-1] == "v.mp4"
    assert (kw["paste_back"], kw["face"], kw["seed"], kw["overrides"], kw["progress"]) == (True, "on", 4, ["x.y=1"],
                                                                                            False)


def test_one_bounded_compile_cache_for_both_pipelines():
    """Both pipelines compile their stages through `compile_cache.compiled` into registered, bounded caches."""
    import jax.numpy as jnp

    from jaxtalk import compile_cache

    for name in ("svp.pipeline.stages", "style2talker.pipeline.stages"):
        assert compile_cache.CACHES[name].maxsize <= 64
    cache = compile_cache.CompileCache("test.compiled", maxsize=2)
    double = lambda x: 2 * x
    one = compile_cache.compiled(cache, "double", double, (np.zeros(3, np.float32),))
    assert compile_cache.compiled(cache, "double", double, (np.ones(3, np.float32),)) is one
    np.testing.assert_array_equal(np.asarray(one(np.ones(3, np.float32))), 2.0)
    compile_cache.compiled(cache, "double", double, (jnp.zeros(4),))
    compile_cache.compiled(cache, "double", double, (jnp.zeros(5),))
    assert len(cache) == 2 and compile_cache.compiled(cache, "double", double, (np.zeros(3, np.float32),)) is not one


def test_both_models_modules_read_alike():
    """The same helpers, in the same order, in both products' models modules; both bundles place on a mesh."""
    import inspect

    from jaxtalk.style2talker import models as s2t_models
    from jaxtalk.svp import models as svp_models

    helpers = ("ModelLoadError", "build_modules", "init_functions", "abstract_params")
    for module in (svp_models, s2t_models):
        lines = [inspect.getsourcelines(getattr(module, name))[1] for name in helpers]
        assert lines == sorted(lines), (module.__name__, dict(zip(helpers, lines)))
    for cls in (svp_models.SVPModels, s2t_models.Style2TalkerModels):
        fields = [f.name for f in dataclasses.fields(cls)]
        assert fields[:3] == ["config", "modules", "params"] and {"mesh", "shardings", "source"} <= set(fields)
        assert list(inspect.signature(cls.on_mesh).parameters) == ["self", "mesh"]
    for fn in (svp_models.abstract_params, s2t_models.abstract_params):
        assert list(inspect.signature(fn).parameters) == ["cfg", "modules", "mesh"]
