"""Converted checkpoints of one interop kind on disk: a component bundle (`jaxtalk.interop.bundle`, the format
of product weights too) with the kind and its resolved source config.

    module, params = interop.from_torch("sd_unet", "unet/diffusion_pytorch_model.safetensors", config)
    save_converted("ckpt/sd15_unet", "sd_unet", params, resolved_config)
    module, params = load_converted("ckpt/sd15_unet")                       # on one device
    module, params = load_converted("ckpt/sd15_unet", shardings=shardings)   # straight into a sharded layout

Layout of DIR: `manifest.json` (`"component": kind`), `config.yaml` (`{kind, config}`) and `params/` (orbax,
`{kind: params}`). Folders written before the bundle format (`params/` holding the bare tree and
`jaxtalk_kind.json` = `{"format": 1, "kind", "config"}`) still load. Loading rebuilds the module with the kind's
`build(config, state)`, given the saved config and a shape-only view of the torch state (`jax.ShapeDtypeStruct`s
under the torch keys), so kinds whose resolved config is JSON-able (a dict or a dataclass) reload without the
original weights.
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

from jaxtalk import distributed
from jaxtalk.config import to_dict
from jaxtalk.interop import bundle
from jaxtalk.interop.registry import get_kind

FORMAT = 1  # of the older folders' jaxtalk_kind.json
META_NAME = "jaxtalk_kind.json"
PARAMS_NAME = bundle.PARAMS


def _jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return to_dict(config)
    if isinstance(config, dict):
        return {k: _jsonable(v) for k, v in config.items()}
    if isinstance(config, tuple | list):
        return [_jsonable(v) for v in config]
    return config


def _legacy(directory: pathlib.Path) -> bool:
    """A folder written before the bundle format (`jaxtalk_kind.json` + bare params/)."""
    return (directory / META_NAME).is_file() and not (directory / bundle.MANIFEST).is_file()


def is_converted(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds one converted component (a component bundle, or an older jaxtalk_kind.json
    folder)."""
    d = pathlib.Path(directory)
    if _legacy(d):
        return True
    try:
        return bool(bundle.read_manifest(d).get("component"))
    except bundle.BundleError:
        return False


def save_converted(directory: str | os.PathLike, kind: str, params: Any, config: Any,
                   *, overwrite: bool = False, **provenance: Any) -> pathlib.Path:
    """Write `params` (a pytree of arrays, boxed or not) of `kind` with its resolved `config` as a component
    bundle in `directory`; keywords are recorded in the manifest (e.g. the source files)."""
    get_kind(kind)  # fail early on an unknown kind
    directory = pathlib.Path(directory).resolve()
    if (is_converted(directory) or bundle.claims_bundle(directory)) and not overwrite:
        raise FileExistsError(f"{directory} already holds a converted checkpoint; pass overwrite=True to replace it")
    try:
        config = json.loads(json.dumps(_jsonable(config)))
    except TypeError as e:
        raise TypeError(f"config of kind {kind!r} is not JSON-serialisable ({e}); pass a dict or a dataclass") from None
    path = bundle.write_component(directory, kind, config, nn.meta.unbox(params), **provenance)
    if distributed.is_main():
        (path / META_NAME).unlink(missing_ok=True)  # an older folder overwritten: the bundle alone describes it
    return path


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The `{format, kind, config}` record of a converted checkpoint (either layout)."""
    import yaml

    directory = pathlib.Path(directory)
    if _legacy(directory):
        path = directory / META_NAME
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r} is not supported (expected {FORMAT})")
        return meta
    try:
        manifest = bundle.read_manifest(directory)
    except bundle.BundleError as e:
        raise FileNotFoundError(f"{e}; not a checkpoint written by jaxtalk convert / save_converted") from None
    if not manifest.get("component"):
        raise ValueError(f"{directory}: a {manifest.get('system')} model bundle, not one converted component; "
                         "load it with jaxtalk.loading.load_models")
    saved = yaml.safe_load((directory / bundle.CONFIG).read_text()) or {}
    return {"format": manifest["format"], "kind": manifest["component"], "config": saved.get("config")}


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
    """Rebuild `(module, params)` from `save_converted` output (or an older jaxtalk_kind.json folder).

    `shardings`: None (every array on the first local device) or a pytree of `jax.sharding.Sharding` matching
    the params, restored shard by shard (e.g. the shardings from `jaxtalk.parallel.init_sharded`).
    """
    directory = pathlib.Path(directory).resolve()
    meta = read_meta(directory)
    kind = get_kind(meta["kind"])
    legacy = _legacy(directory)
    checkpointer = ocp.StandardCheckpointer()
    stored = checkpointer.metadata(directory / PARAMS_NAME).item_metadata.tree
    tree = stored if legacy else stored[meta["kind"]]
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
    target = traverse_util.unflatten_dict(target)
    params = checkpointer.restore(directory / PARAMS_NAME, target if legacy else {meta["kind"]: target})
    return module, params if legacy else params[meta["kind"]]
