"""Shared checks for the trainer tests: config loading into a tmp folder, fixed-batch overfitting, mask checks,
resume-versus-uninterrupted and the entry scripts."""

import importlib.util
import shutil

import jax
import numpy as np
from flax import traverse_util

from jaxtalk import config, parallel
from jaxtalk.training import loop
from tests.conftest import REPO_ROOT


def load_cfg(name, root, *overrides):
    """A preset with its data in `root/data` and its run in `root/<name>`."""
    return config.load(name, [f"data.record_dir={root / 'data'}", f"train.workdir={root / name}",
                              "train.progress=false", *overrides])


def flat(tree):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items()}


def overfit(task, cfg, steps):
    """A fresh state, then `steps` steps on one batch with one rng: (state, params before, params after, losses)."""
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    options = loop.FAST_COMPILE if cfg.train.fast_compile else ()
    state = loop.make_state(task, cfg.optimizer, mesh, cfg.train.seed, fresh=True, compiler_options=options)
    before = flat(state.params)
    host = loop._host_batch(next(iter(task.dataset())), task.device_fields())
    losses = []
    with jax.set_mesh(mesh):
        batch = parallel.shard_batch(host, mesh)
        step = loop.compiled_step(task, cfg.optimizer, mesh, state, batch, options)
        for _ in range(steps):
            state, metrics = step(state, batch, jax.random.key(7))
            losses.append(float(metrics["loss"]))
    return state, before, flat(state.params), losses


def check_mask(task, cfg, before, after, trained=(), frozen=()):
    """Params outside the mask are bit-identical; each `trained` prefix is in the mask and moved; each `frozen`
    substring names only masked-out params."""
    mask = traverse_util.flatten_dict(loop.optimizer_of(task, cfg.optimizer)[0], sep="/")
    for k, m in mask.items():
        if not m:
            np.testing.assert_array_equal(after[k], before[k], err_msg=f"frozen {k} changed")
    for prefix in trained:
        keys = [k for k in mask if k.startswith(prefix)]
        assert keys and all(mask[k] for k in keys), prefix
        assert any(not np.array_equal(after[k], before[k]) for k in keys), f"nothing under {prefix} was trained"
    for part in frozen:
        keys = [k for k in mask if part in k]
        assert keys and not any(mask[k] for k in keys), part


def check_resume(task, cfg, full, root, name):
    """`full` ran 3 steps with checkpoints at 2 and 3: resuming a copy cut back to step 2 gives its step-3 loss."""
    shutil.copytree(root / name, root / f"{name}_resumed")
    shutil.rmtree(root / f"{name}_resumed" / "checkpoints" / "3")
    resumed = loop.train(task, load_cfg(name, root, "train.steps=3", f"train.workdir={root / f'{name}_resumed'}"))
    assert [r["step"] for r in resumed.history] == [3]
    np.testing.assert_allclose(resumed.history[-1]["loss"], full.history[-1]["loss"], rtol=1e-6)
    assert loop.read_metrics(root / f"{name}_resumed")[-1]["step"] == 3


def run_script(script, preset, root, *extra):
    """`train/<script>.py main()` for 2 steps; checks the run folder and returns the result."""
    spec = importlib.util.spec_from_file_location(f"train_{script}_script", REPO_ROOT / "train" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = root / f"script_{script}"
    result = module.main(["--config", preset, "--steps", "2", "--workdir", str(out),
                          f"data.record_dir={root / 'data'}", "train.progress=false", *extra])
    assert [r["step"] for r in loop.read_metrics(out)] == [1, 2]
    assert (out / "checkpoints" / "2").is_dir() and (out / "config.yaml").is_file()
    assert int(result.state.step) == 2
    return result
