"""Initial weights for training: previous runs, converted checkpoints and PyTorch files merged over a random init.

A trainer's params are a dict of components (`{"unet": ..., "reference_net": ..., ...}`). `apply_init_sources`
loads each `InitSource` and writes its tensors over the matching params, placed on the params' shardings:

- kind "run": the newest checkpoint of a jaxtalk training run (stage 1 -> stage 2 -> stage 3, or the style
  prior run into SVP stage 3); only the `params` part of its state is read.
- an interop kind (`vexpress_denoising_unet`, `animatediff_motion_module`, `sd_unet`, `clip_text`, ...): a
  converted checkpoint folder (`jaxtalk.interop.checkpoint.save_converted`) or a PyTorch / safetensors file read
  with `jaxtalk.interop.from_torch`, into one component.

Every source tensor must land on an existing param of the same shape (otherwise one error lists the offenders);
params a source does not cover keep their values (e.g. new motion modules, the style attention).
"""

from __future__ import annotations

import logging
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml
from flax import traverse_util

from jaxtalk.training.config import InitSource

log = logging.getLogger(__name__)


def load_interop(kind: str, path: str | pathlib.Path, config: str | pathlib.Path | None = None) -> Any:
    """Params of a converted checkpoint folder or a PyTorch / safetensors file of an interop kind (host arrays).

    `config`: a JSON / YAML file with the source's config; by default a `config.json` beside the weights is used
    when there is one, else the kind infers the config from shapes.
    """
    from jaxtalk import interop
    from jaxtalk.interop.checkpoint import is_converted, load_converted, read_meta

    path = pathlib.Path(path)
    if is_converted(path):
        saved = read_meta(path)["kind"]
        if saved != kind:
            raise ValueError(f"{path}: a converted {saved!r} checkpoint, but the init source says kind {kind!r}")
        return load_converted(path)[1]
    if not path.exists():
        raise FileNotFoundError(f"init source {path}: no such file or folder")
    beside = (path if path.is_dir() else path.parent) / "config.json"
    config_path = pathlib.Path(config) if config else beside if beside.is_file() else None
    source_config = yaml.safe_load(config_path.read_text()) if config_path is not None else None
    return interop.from_torch(kind, str(path), source_config)[1]


def component_params(module: nn.Module, checkpoint: str | None, kind: str, seed: int) -> Any:
    """A frozen helper model's params: loaded from `checkpoint` (interop `kind`) or drawn at random (tests)."""
    if checkpoint:
        return load_interop(kind, checkpoint)
    log.warning("%s: no checkpoint given, using random weights (seed %d)", kind, seed)
    return nn.meta.unbox(module.init_params(jax.random.key(seed)))["params"]


def checkpoint_dir(path: str | pathlib.Path) -> pathlib.Path:
    """A run's checkpoint folder: `<workdir>/checkpoints` or the folder itself."""
    path = pathlib.Path(path).resolve()
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def run_params(path: str | pathlib.Path, step: int | None = None) -> Any:
    """The `params` of a training run's newest (or given) checkpoint, as host arrays."""
    directory = checkpoint_dir(path)
    steps = sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()) \
        if directory.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"init source {path}: no training checkpoint in {directory}")
    step = steps[-1] if step is None else step
    item = directory / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(item).item_metadata.tree
    if "params" not in tree:
        raise ValueError(f"{item}: not a jaxtalk TrainState checkpoint (no 'params')")
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=cpu), tree["params"])
    wanted = {"params": target}
    args = ocp.args.PyTreeRestore(item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
                                  partial_restore=True)
    restored = ocp.PyTreeCheckpointer().restore(item, args=args)
    return jax.tree.map(np.asarray, restored["params"])


def merge_params(target: Any, source: Any, where: str, skip: Sequence[str] = ()) -> tuple[Any, list[str]]:
    """Write every leaf of `source` over `target` (same paths and shapes); returns (merged, '/'-paths written).

    Source leaves matching a `skip` regex are dropped (parts of a checkpoint the trained system does not hold, e.g.
    the VAE decoder). Placement follows the target leaf's sharding when it has one.
    """
    flat_t = traverse_util.flatten_dict(target, sep="/")
    flat_s = traverse_util.flatten_dict(nn.meta.unbox(source), sep="/")
    skipped = [k for k in flat_s if any(re.search(p, k) for p in skip)]
    if skipped:
        log.info("init source %s: %d tensors not used in training skipped", where, len(skipped))
        flat_s = {k: v for k, v in flat_s.items() if k not in set(skipped)}
    missing = [k for k in flat_s if k not in flat_t]
    shapes = [f"{k} {tuple(np.shape(v))} vs {tuple(flat_t[k].shape)}" for k, v in flat_s.items()
              if k in flat_t and tuple(np.shape(v)) != tuple(flat_t[k].shape)]
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors have no param here (e.g. {missing[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} have another shape (e.g. {shapes[:3]})")
        raise ValueError(f"init source {where}: " + "; ".join(parts))
    out = dict(flat_t)
    for k, v in flat_s.items():
        old = flat_t[k]
        v = np.asarray(v).astype(old.dtype)
        out[k] = jax.device_put(v, old.sharding) if isinstance(old, jax.Array) else v
    return traverse_util.unflatten_dict(out, sep="/"), list(flat_s)


def apply_init_sources(params: dict, sources: Sequence[InitSource],
                       skip: dict[str, tuple[str, ...]] | None = None) -> tuple[dict, set[str]]:
    """Load every source over `params` (a dict of components), in order; also returns the '/'-paths
    ('component/...') that some source wrote. `skip`: per component, regexes of source tensors to drop."""
    skip = skip or {}
    params, written = dict(params), set()
    for src in sources:
        if src.kind == "run":
            loaded = run_params(src.path)
            names = [src.component] if src.component else [k for k in loaded if k in params]
            if not names:
                raise ValueError(f"init source {src.path}: the run's components {sorted(loaded)} share none with "
                                 f"this model's {sorted(params)}")
            for name in names:
                if name not in loaded or name not in params:
                    raise ValueError(f"init source {src.path}: component {name!r} is not in both the run "
                                     f"({sorted(loaded)}) and this model ({sorted(params)})")
                params[name], keys = merge_params(params[name], loaded[name], f"{src.path}:{name}",
                                                  skip.get(name, ()))
                written.update(f"{name}/{k}" for k in keys)
                log.info("init: %d tensors of %s from run %s", len(keys), name, src.path)
        else:
            if src.component not in params:
                raise ValueError(f"init source {src.path}: component {src.component!r} is not one of {sorted(params)}")
            loaded = load_interop(src.kind, src.path, src.config)
            params[src.component], keys = merge_params(params[src.component], loaded,
                                                       f"{src.path} ({src.kind})", skip.get(src.component, ()))
            written.update(f"{src.component}/{k}" for k in keys)
            log.info("init: %d tensors of %s from %s", len(keys), src.component, src.path)
    return params, written
