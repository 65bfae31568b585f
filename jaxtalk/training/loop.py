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
4. appends metrics (losses, grad norm, steps/s, samples/s) to `<workdir>/metrics.jsonl` and to a TensorBoard
   event file in `<workdir>` (`train.tensorboard`; `tensorboard --logdir <workdir>/..`) every `log_every` steps,
   shows a progress bar with the loss, samples/s and ETA (`train.progress`, `training.progress`), checkpoints
   every `checkpoint_every` steps and at the end, and writes the resolved config to `<workdir>/config.yaml`
   (process 0 alone writes files and prints; orbax writes every process's shards);
5. watches for NaN / Inf losses and gradients (`train.nonfinite`: stop, skip or report) and never checkpoints a
   non-finite state.

Data: `cfg.data.batch_size` is the global batch. Each process reads only the rows its devices hold on the mesh
(`parallel.process_batch_rows`, handed to the task's dataset through `training.data.process_rows`) and
`parallel.shard_batch` assembles the global arrays, so any process count sees the same global batches and the
saved iterator position (a global batch count) restores onto another process count.

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
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtalk import config as config_lib
from jaxtalk import parallel
from jaxtalk.compile_cache import CompileCache
from jaxtalk.training import state as state_lib
from jaxtalk.training.checkpoint import Checkpointer
from jaxtalk.training.progress import TrainProgress
from jaxtalk.training.state import OptimizerConfig, TrainState
from jaxtalk.training.tensorboard import ScalarWriter

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


def guarded_step(step: Any, skip_nonfinite: bool) -> Any:
    """`step` plus a `nonfinite` metric (1 when the loss or the gradient norm is NaN / Inf); with
    `skip_nonfinite` such a step keeps the old params and optimiser state (the step counter still advances)."""

    def run(state: TrainState, batch: Any, rng: jax.Array) -> tuple[TrainState, dict]:
        new, metrics = step(state, batch, rng)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        if skip_nonfinite:
            keep = lambda n, o: jnp.where(finite, n, o)
            new = new.replace(params=jax.tree.map(keep, new.params, state.params),
                              opt_state=jax.tree.map(keep, new.opt_state, state.opt_state))
        return new, {**metrics, "nonfinite": (~finite).astype(jnp.float32)}

    return run


def compiled_step(task: Task, cfg: OptimizerConfig, mesh: jax.sharding.Mesh, state: TrainState,
                  batch: Mapping[str, jax.Array], compiler_options: tuple = (), skip_nonfinite: bool = False) -> Any:
    """The jitted, sharded, state-donating train step for these shapes (cached); its metrics include
    `nonfinite` (see `guarded_step`)."""
    key = (task, cfg, mesh, _shape_key(batch), compiler_options, skip_nonfinite)
    if key not in _STEPS:
        mask, _ = optimizer_of(task, cfg)
        step = guarded_step(state_lib.make_train_step(lambda p, b, r: task.loss(freeze(p, mask), b, r)),
                            skip_nonfinite)
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


def _global_batch_size(batch: Mapping[str, jax.Array]) -> int:
    """Rows of the global batch (every process's rows together)."""
    return int(next(iter(batch.values())).shape[0]) if batch else 0


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}


class NonFiniteError(RuntimeError):
    """A training step had a NaN / Inf loss or gradients and `train.nonfinite` is `stop`."""


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class _NonFiniteWatch:
    """Collects each step's `nonfinite` flag without waiting for the device; `check` reads them at log and
    checkpoint steps and applies the `train.nonfinite` policy."""

    def __init__(self, policy: str, name: str):
        self.policy, self.name, self.pending, self.skipped = policy, name, [], 0

    def add(self, step: int, flag: jax.Array) -> None:
        self.pending.append((step, flag))

    def check(self, last_saved: int | None) -> None:
        if not self.pending:
            return
        flags = jax.device_get([f for _, f in self.pending])
        bad = [s for (s, _), f in zip(self.pending, flags) if f]
        self.pending = []
        if not bad:
            return
        where = f"steps {bad[:5]}" + (" ..." if len(bad) > 5 else "")
        if self.policy == "stop":
            saved = f"step {last_saved}" if last_saved is not None else "none yet"
            raise NonFiniteError(
                f"{self.name}: non-finite loss or gradients at {where}; the update was not applied and the run "
                f"stops (train.nonfinite=stop). Last checkpoint: {saved}. Lower the learning rate or check the "
                "data, or set train.nonfinite=skip to skip such steps")
        self.skipped += len(bad) if self.policy == "skip" else 0
        action = "skipped (updates not applied)" if self.policy == "skip" else "applied (train.nonfinite=report)"
        log.warning("%s: non-finite loss or gradients at %s, %s", self.name, where, action)


def data_rows(cfg: Any, mesh: jax.sharding.Mesh) -> np.ndarray | None:
    """The rows of each global batch (`cfg.data.batch_size`, or a root `batch_size` as Style-A's) that this
    process reads for `mesh`."""
    batch_size = getattr(getattr(cfg, "data", None), "batch_size", None)
    if batch_size is None:
        batch_size = getattr(cfg, "batch_size", None)
    if batch_size is None:
        return None
    return parallel.process_batch_rows(mesh, batch_size)


def _agreed(step: int | None) -> int | None:
    """Process 0's view of the newest checkpoint, for every process (file listings may lag on shared storage)."""
    if jax.process_count() == 1:
        return step
    from jax.experimental import multihost_utils

    agreed = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if step is None else step)))
    return None if agreed < 0 else agreed


def train(task: Task, cfg: Any) -> TrainResult:
    """Run (or continue) training of `task` with the root config's train / optimizer / mesh sections.

    Multi-process runs (after `jaxtalk.distributed.initialize`) need no other change: the mesh spans every
    process's devices, each process reads the rows of every global batch that its devices hold and the step gets
    global arrays, orbax writes each process's shards, and process 0 alone writes metrics, progress and config.
    """
    loop, mesh_cfg = cfg.train, cfg.mesh
    mesh = parallel.make_mesh(mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor)
    workdir = pathlib.Path(loop.workdir).resolve()
    main_process = jax.process_index() == 0
    from jaxtalk.training.data import process_rows

    with process_rows(data_rows(cfg, mesh)):  # first: bad data fails before the run folder is touched
        iterator = _iterator(task.dataset(), loop.num_threads)
    if main_process:
        workdir.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, workdir / "config.yaml")
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=loop.max_to_keep)
    resume_step = _agreed(ckpt.latest_step()) if loop.resume else None
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
    policy = getattr(loop, "nonfinite", "report")
    watch = _NonFiniteWatch(policy, task.name)
    last_saved = resume_step
    progress = TrainProgress(task.name, loop.steps, step, enabled=main_process and loop.progress)
    scalars = ScalarWriter(workdir) if main_process and getattr(loop, "tensorboard", True) else None
    try:
        with jax.set_mesh(mesh):
            while step < loop.steps:
                host = _host_batch(next(iterator), task.device_fields())
                batch = parallel.shard_batch(host, mesh)
                fn = compiled_step(task, cfg.optimizer, mesh, state, batch, options, policy != "report")
                state, metrics = fn(state, batch, jax.random.fold_in(base_key, step))
                step += 1
                progress.advance(step)
                metrics = dict(metrics)
                watch.add(step, metrics.pop("nonfinite"))
                logged = step % loop.log_every == 0 or step == loop.steps
                saving = step % loop.checkpoint_every == 0 or step == loop.steps
                if logged or saving:
                    watch.check(last_saved)
                if logged:
                    row = {"step": step, **_scalars(metrics)}  # waits for the step: the rate below is real
                    now = time.perf_counter()
                    rate = (step - step_last) / max(now - t_last, 1e-9)
                    row.update(steps_per_sec=rate, samples_per_sec=rate * _global_batch_size(batch))
                    if watch.skipped:
                        row["skipped_steps"] = watch.skipped
                    t_last, step_last = now, step
                    history.append(row)
                    if main_process:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        if scalars is not None:
                            scalars.add_scalars(step, {k: v for k, v in row.items() if k != "step"})
                        progress.log(row)
                if saving:
                    if not bool(_all_finite(state.params)):
                        log.warning("%s: step %d: params are not finite; checkpoint %s is kept and this state is "
                                    "not saved", task.name, step, last_saved)
                        continue
                    ckpt.save(step, state, cfg=cfg, extra={"data_iterator": iterator.get_state(),
                                                           "process_count": jax.process_count()}, force=True)
                    last_saved = step
    finally:
        progress.close()
        if scalars is not None:
            scalars.close()
        ckpt.close()
    return TrainResult(state, history, workdir)


def _iterator(ds: grain.MapDataset, num_threads: int) -> grain.DatasetIterator:
    from jaxtalk.training.data import make_iterator

    return make_iterator(ds, num_threads)


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    path = pathlib.Path(workdir) / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def entry_parser(description: str = "", steps: bool = True, prefix: str = "train") -> Any:
    """The command line every training script shares: `--config PRESET_OR_PATH [--steps N] [--workdir DIR]
    [--coordinator HOST:PORT --num-processes N --process-id I] [key=value ...]`. Scripts add their own options
    before `overrides` is parsed (argparse takes options in any order). `prefix`: as in `start`."""
    import argparse

    from jaxtalk import distributed

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML preset name (jaxtalk/presets/) or path")
    dot = f"{prefix}." if prefix else ""
    if steps:
        parser.add_argument("--steps", type=int, default=None, help=f"total steps ({dot}steps)")
    parser.add_argument("--workdir", default=None, help=f"run folder ({dot}workdir)")
    distributed.add_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=8")
    return parser


def start(args: Any, system: str, *, prefix: str = "train") -> Any:
    """Load the root config named `system` from parsed `entry_parser` arguments, join the multi-process run
    (`jaxtalk.distributed`: the flags, else `<prefix>.distributed.*`, else cluster auto-detection) and set up
    rank-aware logging. `prefix`: the config section holding `steps`, `workdir` and `distributed` (`train` for
    one-task trainers, "" for a root that holds them itself). Call inside `distributed.entry_point`."""
    from jaxtalk import distributed

    distributed.announce(args.process_id, args.num_processes)
    dot = f"{prefix}." if prefix else ""
    overrides = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        overrides.append(f"{dot}steps={args.steps}")
    if args.workdir is not None:
        overrides.append(f"{dot}workdir={args.workdir}")
    overrides += distributed.overrides_from_args(args, f"{dot}distributed")
    cfg = config_lib.load(args.config, overrides)
    name = config_lib.root_name(cfg)
    if name != system:
        raise config_lib.ConfigError(f"{args.config}: a `system: {name}` config; this script trains `{system}`")
    section = getattr(cfg, prefix) if prefix else cfg
    distributed.initialize(section.distributed)
    distributed.setup_logging(logging.INFO)
    return cfg


def main(argv: list[str] | None, system: str, make_task: Any, description: str = "") -> TrainResult:
    """The body of the one-task `train/*.py` entry scripts (`entry_parser`'s command line) for the root config
    named `system`. Joins the multi-process run first (`start`)."""
    from jaxtalk import distributed

    parser = entry_parser(description)
    args = parser.parse_args(argv)
    with distributed.entry_point(parser.prog):  # bad config / data / batch: one line, exit 2, no traceback
        cfg = start(args, system)
        return train(make_task(cfg), cfg)
