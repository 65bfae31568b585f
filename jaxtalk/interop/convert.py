"""`jaxtalk convert` and `jaxtalk inspect` for one interop kind: a PyTorch checkpoint into a component bundle
(`jaxtalk.interop.bundle`, the one on-disk format), and a listing of what a checkpoint file or folder holds.

    jaxtalk convert --kind KIND --weights FILE_OR_DIR [--weights MORE] [--config CFG] --out DIR
    jaxtalk inspect FILE_OR_DIR

Several `--weights` are merged into one state dict first (e.g. a V-Express `denoising_unet.pth` with its
`motion_module.pth`). `--config` is a JSON / YAML file in the source's own config format, or a preset string the
kind understands; without it the `config.json` beside the weights is used when there is one, else the config is
inferred from tensor shapes. The result loads back with `jaxtalk.interop.checkpoint.load_converted(DIR)` or
`jaxtalk.loading.load_models(DIR)`. Whole products (`--kind vexpress`, `--kind style2talker`) are imported by
`jaxtalk.loading.import_product` into product bundles; `inspect` lists both kinds of bundle.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import yaml
from flax import traverse_util

from jaxtalk.interop import bundle
from jaxtalk.interop.checkpoint import (
    _jsonable,
    _torch_shapes,
    is_converted,
    load_converted,
    read_meta,
    save_converted,
)
from jaxtalk.interop.reading import CheckpointError, read_state_dict
from jaxtalk.interop.registry import from_torch, get_kind


def find_config(weights: Sequence[str], config: str | None) -> Any:
    """The given config (file -> dict, else the string as a preset), else a config.json beside the weights."""
    if config is not None:
        path = pathlib.Path(config)
        if path.is_file():
            text = path.read_text()
            return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return config
    first = pathlib.Path(weights[0])
    beside = (first if first.is_dir() else first.parent) / "config.json"
    return json.loads(beside.read_text()) if beside.is_file() else None


def merged_state(weights: Sequence[str]) -> Any:
    """One source for `from_torch`: the path itself, or several files merged (a key in two files is an error)."""
    if len(weights) == 1:
        return weights[0]
    merged: dict[str, np.ndarray] = {}
    for w in weights:
        part = read_state_dict(w)
        clash = sorted(set(part) & set(merged))
        if clash:
            raise CheckpointError(f"{w}: keys also present in an earlier --weights file: {', '.join(clash[:5])}")
        merged.update(part)
    return merged


def _reloadable_config(kind: str, module: Any, params: Any, resolved: Any, given: Any) -> Any:
    """The resolved config when the kind rebuilds the same module from its JSON form, else the config as given
    (`load_converted` rebuilds modules from the saved config and the saved shapes)."""
    try:
        rebuilt, _ = get_kind(kind).build(_jsonable(resolved), _torch_shapes(kind, params))
        if rebuilt == module:
            return resolved
    except Exception:  # noqa: BLE001 - a kind that cannot take its resolved config back keeps the given one
        pass
    return given


def convert(kind: str, weights: Sequence[str], config: Any, out: str, overwrite: bool = False) -> pathlib.Path:
    """Import strictly and write a component bundle (orbax params, config.yaml with the kind and its resolved
    config, manifest.json)."""
    module, params, resolved = from_torch(kind, merged_state(weights), config, return_config=True)
    path = save_converted(out, kind, params, _reloadable_config(kind, module, params, resolved, config),
                          overwrite=overwrite, source=[str(w) for w in weights])
    leaves = jax.tree.leaves(params)
    print(f"{kind}: {len(leaves)} tensors, {sum(np.size(x) for x in leaves) / 1e6:.2f}M params -> {path}")
    return path


def run(kind: str, weights: Sequence[str], config: str | None, out: str, overwrite: bool = False) -> pathlib.Path:
    """`jaxtalk convert`: `config` as given on the command line (a file or a preset name, else the config.json
    beside the weights); an unknown kind or an existing output is a ValueError."""
    try:
        get_kind(kind)
    except KeyError as e:
        raise ValueError(e.args[0] if e.args else f"unknown kind {kind!r}") from None
    try:
        return convert(kind, weights, find_config(weights, config), out, overwrite)
    except FileExistsError as e:
        raise ValueError(f"{e}; pass --overwrite") from None


def _array_lines(tree: Any, prefix: str = "") -> tuple[list[str], int, int]:
    flat = traverse_util.flatten_dict(dict(tree))
    lines = [f"{prefix}{'/'.join(k)} {tuple(v.shape)} {v.dtype}" for k, v in sorted(flat.items())]
    return lines, len(flat), sum(int(np.prod(v.shape)) for v in flat.values())


def inspect(path: str | pathlib.Path) -> list[str]:
    """Lines describing a checkpoint: a component bundle's (or older converted folder's) kind, config and param
    shapes; a product bundle's system, layout, provenance and arrays; or a PyTorch file's (or shard folder's)
    tensors, read safely."""
    path = pathlib.Path(path)
    if is_converted(path):
        meta = read_meta(path)
        _, params = load_converted(path)
        lines, count, total = _array_lines(params)
        header = [f"kind {meta['kind']} (format {meta['format']})", f"config {json.dumps(meta['config'])}"]
        return [*header, *lines, f"{count} arrays, {total:,} elements"]
    if bundle.claims_bundle(path):
        manifest = bundle.read_manifest(path)
        header = [f"system {manifest.get('system')} (format {manifest['format']}, layout {manifest['layout']})"]
        header += [f"{key} {json.dumps(manifest[key], default=str)}" for key in ("source", "num_params", "files")
                   if key in manifest]
        if manifest["layout"] != "orbax":
            return [*header, *[f"{p.name}" for p in sorted(path.iterdir()) if p.is_file()]]
        lines, count, total = _array_lines(bundle.stored_tree(path))
        return [*header, *lines, f"{count} arrays, {total:,} elements"]
    state = read_state_dict(path)
    lines = [f"{name} {tuple(value.shape)} {value.dtype}" for name, value in sorted(state.items())]
    return [*lines, f"{len(state)} tensors, {sum(v.size for v in state.values()):,} elements"]
