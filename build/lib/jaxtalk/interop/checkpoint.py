"""Converted checkpoints on disk: orbax params plus a `jaxtalk_kind.json` naming the kind and resolved config.

    module, params = interop.from_torch("sd_unet", "unet/diffusion_pytorch_model.safetensors", config)
    save_converted("ckpt/sd15_unet", "sd_unet", params, resolved_config)
    module, params = load_converted("ckpt/sd15_unet")                       # on one device
    module, params = load_converted("ckpt/sd15_unet", shardings=shardings)   # straight into a sharded layout

Layout of DIR: `params/` (orbax `StandardCheckpointer`) and `jaxtalk_kind.json`
(`{"format": 1, "kind": ..., "config": ...}`). Loading rebuilds the module with the kind's `build(config, state)`,
given the saved config and a shape-only view of the torch state (`jax.ShapeDtypeStruct`s under the torch keys), so
kinds whose resolved config is JSON-able (a dict or a dataclass) reload without the original weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp
from flax import traverse_util

from jaxtalk.config import to_dict
from jaxtalk.interop.registry import get_kind

FORMAT = 1
META_NAME = "jaxtalk_kind.json"
PARAMS_NAME = "params"


def _jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return to_dict(config)
    if isinstance(config, dict):
        return {k: _jsonable(v) for k, v in config.items()}
    if isinstance(config, tuple | list):
        return [_jsonable(v) for v in config]
    return config


def save_converted(directory: str | os.PathLike, kind: str, params: Any, config: Any,
                   *, overwrite: bool = False) -> pathlib.Path:
    """Write `params` (a pytree of arrays, boxed or not) and `{kind, config}` into `directory`."""
    get_kind(kind)  # fail early on an unknown kind
    directory = pathlib.Path(directory).resolve()
    meta_path = directory / META_NAME
    if meta_path.exists() and not overwrite:
        raise FileExistsError(f"{directory} already holds a converted checkpoint; pass overwrite=True to replace it")
    try:
        meta = json.dumps({"format": FORMAT, "kind": kind, "config": _jsonable(config)}, indent=1)
    except TypeError as e:
        raise TypeError(f"config of kind {kind!r} is not JSON-serialisable ({e}); pass a dict or a dataclass") from None
    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS_NAME, nn.meta.unbox(params), force=overwrite)
    checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        tmp = meta_path.with_name(META_NAME + ".tmp")
        tmp.write_text(meta)
        os.replace(tmp, meta_path)
    return directory


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The `{format, kind, config}` record of a converted checkpoint."""
    path = pathlib.Path(directory) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {META_NAME}; not a checkpoint written by save_converted")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not supported (expected {FORMAT})")
    return meta


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if leaf != "kernel" or len(shape) < 2:
        return shape
    if len(shape) == 2:
        return shape[::-1]
    return (shape[-1], shape[-2], *shape[:-2])


def _torch_shapes(kind: Any, tree: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """A shape-only torch state dict for a params tree (or a `{'params': ..., 'batch_stats': ...}` tree)."""
    kind = get_kind(kind) if isinstance(kind, str) else kind
    tree = dict(tree)
    collections = tree if "params" in tree and all(isinstance(v, dict) for v in tree.values()) else {"params": tree}
    shapes = {}
    for collection, sub in collections.items():
        for path, m in traverse_util.flatten_dict(sub).items():
            key = kind.torch_key(path, collection)
            shapes[key] = jax.ShapeDtypeStruct(_torch_shape(path[-1], tuple(m.shape)), m.dtype)
    return shapes


def load_converted(directory: str | os.PathLike, *, shardings: Any = None) -> tuple[nn.Module, Any]:
    """Rebuild `(module, params)` from `save_converted` output.

    `shardings`: None (every array on the first local device) or a pytree of `jax.sharding.Sharding` matching
    the params, restored shard by shard (e.g. the shardings from `jaxtalk.parallel.init_sharded`).
    """
    directory = pathlib.Path(directory).resolve()
    meta = read_meta(directory)
    kind = get_kind(meta["kind"])
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(directory / PARAMS_NAME).item_metadata.tree
    flat = traverse_util.flatten_dict(tree)
    module, _ = kind.build(meta["config"], _torch_shapes(kind, tree))
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = {path: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device) for path, m in flat.items()}
    else:
        flat_sh = traverse_util.flatten_dict(shardings)
        if set(flat_sh) != set(flat):
            raise ValueError(f"{directory}: the shardings tree does not match the saved params "
                             f"({len(flat_sh)} vs {len(flat)} leaves)")
        target = {path: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=flat_sh[path])
                  for path, m in flat.items()}
    params = checkpointer.restore(directory / PARAMS_NAME, traverse_util.unflatten_dict(target))
    return module, params
