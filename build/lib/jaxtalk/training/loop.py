"""The generic training loop shared by every trainer.

    result = loop.train(task, cfg)      # cfg: a root config with train / optimizer / mesh sections

A `Task` (a frozen, hashable dataclass holding the parts of the config that shape the model and the loss) gives
the model init, the trainable-parameter regexes, the loss and the prepared grain dataset. The loop:

1. builds the (data, fsdp, tensor) mesh from `cfg.mesh` and creates every param directly on its shards
   (`parallel.init_sharded`); without a checkpoint to resume it then applies `task.prepare_params` (init sources,
   zeroed layers) and builds the sharded `TrainState` (AdamW + clipping on the trainable params only);
2. with `train.resume` and a checkpoint in `<workdir>/checkpoints`, restores the state (sharded) and the grain
   iterator position saved beside it, so the run continues exactly where it stopped;
3. runs the jitted step — `jax.jit(in_shardings, out_shardings, donate_argnums=0)`, frozen params behind
   `stop_gradient` so their weight gradients are never computed — with the step rng `fold_in(key(seed), step)`;
4. appends metrics to `<workdir>/metrics.jsonl` every `log_every` steps, checkpoints every `checkpoint_every`
   steps and at the end, and writes the resolved config to `<workdir>/config.yaml`.

Compiled steps are cached per (task, optimizer, mesh, batch shapes), so a second run of an equal task in the same
process (a resume, a test) reuses the executable.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import grain
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtalk import config as config_lib
from jaxtalk import parallel
from jaxtalk.compile_cache import CompileCache
from jaxtalk.training import state as state_lib
from jaxtalk.training.checkpoint import Checkpointer
from jaxtalk.training.state import OptimizerConfig, TrainState

log = logging.getLogger(__name__)
METRICS_NAME = "metrics.jsonl"


class Task(abc.ABC):
    """What a trainer provides to the loop. Subclasses are frozen dataclasses (hashable: they key the step cache)."""

    name: str = "train"

    @abc.abstractmethod
    def init_variables(self, rng: jax.Array) -> dict:
        """Boxed flax variables `{"params": {component: ...}}` of the whole trained system (random init)."""

    @abc.abstractmethod
    def trainable_patterns(self) -> tuple[str, ...] | None:
        """Regexes of the trained params ('/'-joined paths); None trains everything."""

    @abc.abstractmethod
    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
        """Pure, jittable `(loss, metrics)`."""

    @abc.abstractmethod
    def dataset(self) -> grain.MapDataset:
        """Prepared host batches (numpy dicts) for this process, repeating forever."""

    def device_fields(self) -> tuple[str, ...] | None:
        """Batch fields sent to the devices (None: all)."""
        return None

    def prepare_params(self, params: dict) -> dict:
        """Host-side changes to fresh params before training (init sources, zeroed layers)."""
        return params

    def init_key(self) -> Any:
        """What the random init depends on (tasks with equal keys share one compiled init)."""
        return self


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    history: list[dict]
    workdir: pathlib.Path


def freeze(params: Any, mask: Any) -> Any:
    """Frozen params (mask False) behind `stop_gradient`: zero gradients without computing them."""
    return jax.tree.map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)


def abstract_params(task: Task) -> Any:
    return nn.meta.unbox(jax.eval_shape(task.init_variables, jax.random.key(0)))["params"]


_OPTIMIZERS = CompileCache("training.optimizers", maxsize=16)
_STEPS = CompileCache("training.steps", maxsize=16)


def optimizer_of(task: Task, cfg: OptimizerConfig) -> tuple[Any, optax.GradientTransformation]:
    """(trainable mask, optimiser) for a task; cached so equal tasks share one optimiser object (and executable)."""
    key = (task, cfg)
    if key not in _OPTIMIZERS:
        mask = state_lib.trainable_mask(abstract_params(task), task.trainable_patterns())
        _OPTIMIZERS[key] = (mask, state_lib.make_optimizer(cfg, mask))
    return _OPTIMIZERS[key]


def _shape_key(tree: Any) -> tuple:
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(tree.items()))


def compiled_step(task: Task, cfg: OptimizerConfig, mesh: jax.sharding.Mesh, state: TrainState,
                  batch: Mapping[str, jax.Array], compiler_options: tuple = ()) -> Any:
    """The jitted, sharded, state-donating train step for these shapes (cached)."""
    key = (task, cfg, mesh, _shape_key(batch), compiler_options)
    if key not in _STEPS:
        mask, _ = optimizer_of(task, cfg)
        step = state_lib.make_train_step(lambda p, b, r: task.loss(freeze(p, mask), b, r))
        state_sh = state_lib.shardings_of(state)
        batch_sh = {k: parallel.batch_sharding(mesh, v.ndim) for k, v in batch.items()}
        replicated = NamedSharding(mesh, P())
        _STEPS[key] = jax.jit(step, in_shardings=(state_sh, batch_sh, replicated),
                              out_shardings=(state_sh, replicated), donate_argnums=0,
                              compiler_options=dict(compiler_options) or None)
    return _STEPS[key]


FAST_COMPILE = (("xla_backend_optimization_level", 0), ("xla_llvm_disable_expensive_passes", True))
_INITS = CompileCache("training.inits", maxsize=16)


def init_params(task: Task, mesh: jax.sharding.Mesh, seed: int, compiler_options: tuple = ()) -> Any:
    """The task's random params created directly on their shards (as `parallel.init_sharded`), with the jitted
    init cached per (task, mesh)."""
    key = (task.init_key(), mesh, compiler_options)
    with nn.logical_axis_rules(parallel.LOGICAL_RULES):
        if key not in _INITS:
            abstract = jax.eval_shape(task.init_variables, jax.random.key(0))
            shardings = parallel.logical_to_shardings(abstract, mesh)
            _INITS[key] = jax.jit(lambda r: nn.meta.unbox(task.init_variables(r)), out_shardings=shardings,
                                  compiler_options=dict(compiler_options) or None)
        with jax.set_mesh(mesh):
            return _INITS[key](jax.random.key(seed))["params"]


def make_state(task: Task, cfg: OptimizerConfig, mesh: jax.sharding.Mesh, seed: int, fresh: bool,
               compiler_options: tuple = ()) -> TrainState:
    """A sharded TrainState from the random init (then `prepare_params` when `fresh`)."""
    _, tx = optimizer_of(task, cfg)
    params = init_params(task, mesh, seed, compiler_options)
    if fresh:
        params = task.prepare_params(params)
    with jax.set_mesh(mesh):
        return state_lib.create_sharded_state(params, tx)


def _host_batch(batch: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    names = fields if fields is not None else tuple(batch)
    missing = [n for n in names if n not in batch]
    if missing:
        raise KeyError(f"the prepared batch lacks fields {missing}; it has {sorted(batch)}")
    return {n: np.asarray(batch[n]) for n in names}


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}


def train(task: Task, cfg: Any) -> TrainResult:
    """Run (or continue) training of `task` with the root config's train / optimizer / mesh sections."""
    loop, mesh_cfg = cfg.train, cfg.mesh
    mesh = parallel.make_mesh(mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor)
    workdir = pathlib.Path(loop.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        config_lib.save(cfg, workdir / "config.yaml")
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=loop.max_to_keep)
    resume_step = ckpt.latest_step() if loop.resume else None
    iterator = _iterator(task.dataset(), loop.num_threads)
    options = FAST_COMPILE if loop.fast_compile else ()
    state = make_state(task, cfg.optimizer, mesh, loop.seed, fresh=resume_step is None, compiler_options=options)
    if resume_step is not None:
        state, extra = ckpt.restore(state, resume_step)
        if "data_iterator" in extra:
            iterator.set_state(extra["data_iterator"])
        log.info("%s: resumed from step %d in %s", task.name, resume_step, workdir)
    history: list[dict] = []
    metrics_path = workdir / METRICS_NAME
    step = int(jax.device_get(state.step))
    base_key = jax.random.key(loop.seed)
    t_last, step_last = time.perf_counter(), step
    try:
        with jax.set_mesh(mesh):
            while step < loop.steps:
                host = _host_batch(next(iterator), task.device_fields())
                batch = parallel.shard_batch(host, mesh)
                fn = compiled_step(task, cfg.optimizer, mesh, state, batch, options)
                state, metrics = fn(state, batch, jax.random.fold_in(base_key, step))
                step += 1
                if step % loop.log_every == 0 or step == loop.steps:
                    now = time.perf_counter()
                    row = {"step": step, **_scalars(metrics),
                           "steps_per_sec": (step - step_last) / max(now - t_last, 1e-9)}
                    t_last, step_last = now, step
                    history.append(row)
                    if jax.process_index() == 0:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        if loop.progress:
                            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
                            print(f"[{task.name}] step {step}/{loop.steps} {shown}", flush=True)
                if step % loop.checkpoint_every == 0 or step == loop.steps:
                    ckpt.save(step, state, cfg=cfg, extra={"data_iterator": iterator.get_state()}, force=True)
    finally:
        ckpt.close()
    return TrainResult(state, history, workdir)


def _iterator(ds: grain.MapDataset, num_threads: int) -> grain.DatasetIterator:
    from jaxtalk.training.data import make_iterator

    return make_iterator(ds, num_threads)


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    path = pathlib.Path(workdir) / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None, system: str, make_task: Any, description: str = "") -> TrainResult:
    """The body of the `train/*.py` entry scripts: `--config PRESET_OR_PATH [--steps N] [--workdir DIR]
    [key=value ...]` (dotted overrides, YAML values), for the root config named `system`."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML preset name (jaxtalk/presets/) or path")
    parser.add_argument("--steps", type=int, default=None, help="total steps (train.steps)")
    parser.add_argument("--workdir", default=None, help="run folder (train.workdir)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=8")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.workdir is not None:
        overrides.append(f"train.workdir={args.workdir}")
    cfg = config_lib.load(args.config, overrides)
    name = config_lib.root_name(cfg)
    if name != system:
        raise config_lib.ConfigError(f"{args.config}: a `system: {name}` config; this script trains `{system}`")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return train(make_task(cfg), cfg)
