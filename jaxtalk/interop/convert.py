"""Command-line conversion of PyTorch checkpoints into jaxtalk checkpoint directories (shared by `convert/*.py`).

    python convert/<family>.py --kind KIND --weights FILE_OR_DIR [--weights MORE] [--config CFG] --out DIR

Several `--weights` are merged into one state dict first (e.g. a V-Express `denoising_unet.pth` with its
`motion_module.pth`). `--config` is a JSON / YAML file in the source's own config format, or a preset string the
kind understands; without it the `config.json` beside the weights is used when there is one, else the config is
inferred from tensor shapes. The result loads back with `jaxtalk.interop.checkpoint.load_converted(DIR)`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import yaml

from jaxtalk.interop.checkpoint import _jsonable, _torch_shapes, save_converted
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
    """Import strictly and write an orbax checkpoint directory with `jaxtalk_kind.json` beside it."""
    module, params, resolved = from_torch(kind, merged_state(weights), config, return_config=True)
    path = save_converted(out, kind, params, _reloadable_config(kind, module, params, resolved, config),
                          overwrite=overwrite)
    leaves = jax.tree.leaves(params)
    print(f"{kind}: {len(leaves)} tensors, {sum(np.size(x) for x in leaves) / 1e6:.2f}M params -> {path}")
    return path


def main(argv: Sequence[str] | None = None, *, kinds: Sequence[str] | None = None,
         description: str | None = None) -> pathlib.Path | None:
    """Entry point of the `convert/` scripts; `kinds` restricts `--kind` to one family's kinds."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=list(kinds) if kinds else None,
                        help="interop kind (see jaxtalk.interop.KINDS)")
    parser.add_argument("--weights", required=True, action="append", help="checkpoint file or folder (repeatable)")
    parser.add_argument("--config", default=None, help="source config (.json / .yaml) or a preset name")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing converted checkpoint")
    args = parser.parse_args(argv)
    try:
        get_kind(args.kind)
        return convert(args.kind, args.weights, find_config(args.weights, args.config), args.out, args.overwrite)
    except (CheckpointError, KeyError, ValueError, FileExistsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"convert {args.kind}: error: {msg}", file=sys.stderr)
        if argv is not None:
            raise
        raise SystemExit(2) from None
