"""Style-A training on the tiny preset over a tiny synthetic split, on a (2, 1, 4) mesh of 8 CPU devices: batch
shapes and targets (photo or art style by degree), finite losses, constants frozen and the GAN parts trained,
resume equals the uninterrupted run, `train/style_a.py` end to end."""

import importlib.util
import shutil

import numpy as np
import pytest
from flax import traverse_util

from jaxtalk import config
from jaxtalk.style2talker import art_styles
from jaxtalk.training import loop
from jaxtalk.training.style_a import StyleATask
from tests.conftest import REPO_ROOT

PRESET = "train_style_a_tiny"
pytestmark = pytest.mark.xdist_group("style_a_training")  # one worker trains the module's run once


def _cfg(root, name, *overrides):
    return config.load(PRESET, [f"cache_dir={root / 'data'}", f"train.workdir={root / name}", "train.progress=false",
                                *overrides])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("style_a_train")


@pytest.fixture(scope="module")
def run(root):
    cfg = _cfg(root, "full", "train.steps=3", "train.checkpoint_every=2")
    return cfg, loop.train(StyleATask.from_config(cfg), cfg)


def test_batches_pair_targets_with_styles(run):
    cfg = run[0]
    task = StyleATask.from_config(cfg)
    batch = next(iter(task.dataset()))
    b, a = cfg.batch_size, cfg.model.style_a
    assert batch["reference"].shape == (b, a.in_size, a.in_size, 3) and batch["reference"].dtype == np.uint8
    assert batch["frame"].shape == batch["target"].shape == (b, a.out_size, a.out_size, 3)
    assert batch["reference_full"].shape == batch["frame"].shape and batch["reference_full"].dtype == np.uint8
    assert batch["driven"].shape == (b, 27, 73)
    np.testing.assert_allclose(batch["driven"][:, :, -3:], np.broadcast_to([1.0, 128.0, 128.0], (b, 27, 3)))
    for k in range(b):  # the target is the frame filtered by its style at its degree
        expected = art_styles.stylise(batch["frame"][k], int(batch["style"][k]), float(batch["degree"][k]))
        np.testing.assert_allclose(batch["target"][k], expected, atol=1e-6)
    mouth = batch["mouth"]  # mouth boxes in frame sides, inside the frame, around its lower middle
    assert mouth.shape == (b, 4) and np.all((0 < mouth) & (mouth < 1))
    assert np.all(mouth[:, 2] > mouth[:, 0]) and np.all(mouth[:, 3] > mouth[:, 1]) and np.all(mouth[:, 1] > 0.5)
    again = next(iter(task.dataset()))
    for k in batch:  # a pure function of (seed, index)
        np.testing.assert_array_equal(batch[k], again[k])


def test_losses_are_finite_and_logged(run):
    rows = run[1].history
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in ("rec", "mouth_psnr", "perc", "adv", "warp", "d", "loss"):
            assert np.isfinite(r[key]), (key, r)
    assert rows[-1]["rec"] < rows[0]["rec"]  # from the random init's out-of-range frames, the MSE falls at once



def test_mouth_mask_covers_the_grown_box():
    from jaxtalk.training.style_a import mouth_mask

    boxes = np.array([[0.25, 0.25, 0.5, 0.75], [0.0, 0.0, 0.1, 0.1]], np.float32)
    m = np.asarray(mouth_mask(boxes, 8, 0.0))[..., 0]  # pixel centres (i + 0.5) / 8
    expected = np.zeros((2, 8, 8), np.float32)
    expected[0, 2:6, 2:4] = 1.0
    expected[1, 0, 0] = 1.0
    np.testing.assert_array_equal(m, expected)
    grown = np.asarray(mouth_mask(boxes, 8, 0.125))[..., 0]
    expected[0, 1:7, 1:5] = 1.0
    expected[1, :2, :2] = 1.0
    np.testing.assert_array_equal(grown, expected)

def test_constants_frozen_and_gan_parts_trained(run):
    cfg = run[0]
    task = StyleATask.from_config(cfg)
    mask = traverse_util.flatten_dict(loop.optimizer_of(task, cfg.optimizer)[0], sep="/")
    assert any("fir_kernel" in k for k in mask) and not any(m for k, m in mask.items() if "fir_kernel" in k)
    assert not any(m for k, m in mask.items() if "noises/" in k or k.startswith("psp_stats/"))
    for prefix in ("style_a/motion_generator/", "style_a/refinement/", "style_a/encoder_", "psp/", "discriminator/",
                   "style_bank"):
        keys = [k for k in mask if k.startswith(prefix) and "fir_kernel" not in k]  # FIR kernels are constants
        assert keys and all(mask[k] for k in keys), prefix


def test_resume_gives_the_uninterrupted_loss(root, run):
    cfg, full = run
    shutil.copytree(root / "full", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / "3")
    resumed = loop.train(StyleATask.from_config(cfg), _cfg(root, "resumed", "train.steps=3"))
    assert [r["step"] for r in resumed.history] == [3]
    for key in ("loss", "rec", "perc", "d"):
        np.testing.assert_allclose(resumed.history[-1][key], full.history[-1][key], rtol=1e-5)


def test_train_script_runs(root, run):
    spec = importlib.util.spec_from_file_location("train_style_a_script", REPO_ROOT / "train" / "style_a.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = root / "script"
    result = module.main(["--config", PRESET, "--steps", "1", "--workdir", str(out), f"cache_dir={root / 'data'}",
                          "train.progress=false"])
    assert [r["step"] for r in loop.read_metrics(out)] == [1] and int(result.state.step) == 1
    assert (out / "checkpoints" / "1").is_dir() and (out / "config.yaml").is_file()


def test_expression_probe_learns_from_real_frames_only(root, run):
    """With loss.expression > 0 a probe joins the params; its gradient is the real frames' fit alone (its reading of
    the generated frames reaches the generator only), and the term is logged."""
    import jax
    import jax.numpy as jnp

    from jaxtalk.training.style_a import to_signed

    cfg = _cfg(root, "probe", "loss.expression=1.0", "loss.style_prob=0.5")
    task = StyleATask.from_config(cfg)
    assert "probe" in task.modules() and "probe" not in StyleATask.from_config(run[0]).modules()
    params = jax.device_get(task.init_variables(jax.random.key(0))["params"])
    batch = next(iter(task.dataset()))
    assert batch["expression"].shape == (cfg.batch_size, 64) and np.any(batch["style"] == 0)
    probe = task.modules()["probe"]

    def grads(p):
        total, metrics = jax.grad(lambda q: task.loss(q, batch, jax.random.key(1)), has_aux=True)(p)
        expr = jax.grad(lambda q: task.loss(q, batch, jax.random.key(1))[1]["expr"])(p)["style_a"]
        fit = jax.grad(lambda q: jnp.mean((probe.apply({"params": q}, to_signed(batch["frame"]))
                                           - batch["expression"]) ** 2))(p["probe"])
        return total, metrics, expr, fit

    total, metrics, expr, fit = jax.jit(grads, compiler_options=dict(loop.FAST_COMPILE))(params)
    for got, want in zip(jax.tree.leaves(total["probe"]), jax.tree.leaves(fit)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(expr)) > 0  # the reading pulls on the generator
    assert np.isfinite(metrics["expr"]) and np.isfinite(metrics["probe_fit"])


@pytest.fixture(scope="module")
def bundle(root, run):
    """A Style2Talker bundle of the tiny preset's shapes with random weights and a known art-style bank."""
    from jaxtalk.style2talker.loading import save_checkpoints
    from jaxtalk.style2talker.models import Style2TalkerModels, random_models

    rm = random_models(run[0].model, seed=5)
    bank = np.random.default_rng(3).standard_normal((len(art_styles.STYLES), *rm.style_bank.shape[1:]))
    save_checkpoints(Style2TalkerModels(rm.config, rm.modules, rm.params, bank.astype(np.float32),
                                        tuple(art_styles.STYLE_NAMES)), root / "bundle")
    return root / "bundle", rm, bank


@pytest.fixture(scope="module")
def fresh(root, run):
    """The random init of the tiny preset's Style-A task on one device (what init_bundle / init_run overwrite)."""
    import jax

    from jaxtalk import parallel

    task = StyleATask.from_config(run[0])
    return loop.init_params(task, parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1]), 0)


def test_init_bundle_starts_from_its_weights(root, bundle, fresh):
    """`init_bundle` writes a saved bundle's Style-A, pSp and art-style bank over the random init."""
    import jax

    path, rm, bank = bundle
    task = StyleATask.from_config(_cfg(root, "from_bundle", f"init_bundle={path}"))
    params = jax.device_get(task.prepare_params(fresh))
    np.testing.assert_allclose(params["style_bank"], bank, rtol=1e-6)
    for name, want in (("style_a", rm.params["style_a"]), ("psp", rm.params["psp"]["params"])):
        flat_w = traverse_util.flatten_dict(want, sep="/")
        flat_g = traverse_util.flatten_dict(params[name], sep="/")
        for k, v in flat_w.items():
            np.testing.assert_allclose(flat_g[k], np.asarray(v), rtol=1e-5, atol=1e-6, err_msg=k)


def test_export_puts_the_run_into_a_copy_of_the_bundle(root, run, bundle):
    """train/style_a_export.py: the run's Style-A / pSp / bank replace the base bundle's, the rest is copied byte
    for byte, the manifest records the run; a missing base is one clear error."""
    import json

    from jaxtalk.style2talker.loading import load_models
    from jaxtalk.training.style2talker import restore_params

    spec = importlib.util.spec_from_file_location("style_a_export", REPO_ROOT / "train" / "style_a_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base, out = bundle[0], root / "exported"
    assert module.main(["--run", str(root / "full"), "--out", str(out), "--base", str(base)]) == 0
    cfg = run[0]
    params, step = restore_params(StyleATask.from_config(cfg), cfg)
    got = load_models(out)
    for name, want in (("style_a", params["style_a"]), ("psp", params["psp"])):
        flat_w = traverse_util.flatten_dict(want, sep="/")
        flat_g = traverse_util.flatten_dict(got.params[name] if name == "style_a" else got.params[name]["params"],
                                            sep="/")
        for k, v in flat_w.items():
            np.testing.assert_allclose(flat_g[k], np.asarray(v), rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(got.style_bank, params["style_bank"], rtol=1e-6)
    for name in ("clip_text", "style_e", "audio2exp"):
        assert (out / f"{name}.safetensors").read_bytes() == (base / f"{name}.safetensors").read_bytes()
    record = json.loads((out / "manifest.json").read_text())["style_a_run"]
    assert record["steps"] == step == 3 and record["final_metrics"]["step"] == 3
    assert (out / record["curves"]).is_file()
    assert module.main(["--run", str(root / "full"), "--out", str(root / "nothing")]) == 2  # no init_bundle, no base
    assert not (root / "nothing").exists()


def test_init_run_starts_from_the_runs_weights(root, run, fresh):
    """`init_run` writes a Style-A run's newest Style-A, pSp (and its statistics) and art-style bank over the
    random init; the discriminator stays fresh; naming a bundle too is one clear error."""
    import jax

    from jaxtalk.training.style2talker import restore_params

    cfg = run[0]
    want, _ = restore_params(StyleATask.from_config(cfg), cfg)
    task = StyleATask.from_config(_cfg(root, "from_run", f"init_run={root / 'full'}"))
    params = jax.device_get(task.prepare_params(fresh))
    for name in ("style_a", "psp", "psp_stats", "style_bank"):
        for (path, got), w in zip(jax.tree_util.tree_leaves_with_path(params[name]), jax.tree.leaves(want[name])):
            np.testing.assert_array_equal(got, w, err_msg=f"{name}{jax.tree_util.keystr(path)}")
    for got, init in zip(jax.tree.leaves(params["discriminator"]), jax.tree.leaves(jax.device_get(fresh)["discriminator"])):
        np.testing.assert_array_equal(got, init)
    with pytest.raises(ValueError, match="give one starting point"):
        StyleATask.from_config(_cfg(root, "both", f"init_run={root / 'full'}", f"init_bundle={root / 'bundle'}"))
