"""The one on-disk format of jaxtalk weights: a product's (SVP and Style2Talker alike; converted, imported or
trained) and a single converted component's (`jaxtalk convert --kind K`):

    <folder>/config.yaml     the resolved config: the product config (`system: svp` / `system: style2talker`), or
                             for a component `{kind: K, config: <the kind's resolved source config>}`
    <folder>/manifest.json   {"format": "jaxtalk-bundle/1", "system", "layout", "components": {name: params},
                              "files": [extra files], ...provenance (source, training record, evaluation)};
                             a component bundle has "system": null and "component": K
    <folder>/params/         layout "orbax": `{name: variables}` in flax names, one orbax tree (a component
                             bundle holds one name, its kind)
    <folder>/<extra files>   e.g. the Style2Talker art-style bank `exstyle_code.npz`

Why orbax: it restores each array straight into its mesh sharding (no full host copy on multi-host runs), keeps
the stored dtype, is what the trainers checkpoint with, and reads with no code execution (JSON metadata plus
tensorstore arrays; no pickle). The manifest makes a folder self-describing, so one reader (`read_manifest`) tells
which product and layout it holds before anything is loaded.

Layout "torch-safetensors" (one `<component>.safetensors` per component in its interop kind's torch layout) is
read for compatibility: Style2Talker checkpoint folders written before this format (the weights shipped in
`jaxtalk/assets/style2talker_synthetic`) and the export for the original PyTorch code. Folders without a
manifest (older SVP bundles: config.yaml + params/) read as layout "orbax".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtalk import config as config_lib
from jaxtalk import distributed
from jaxtalk.data.atomic import atomic_path

FORMAT = "jaxtalk-bundle/1"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
PARAMS = "params"
LAYOUTS = ("orbax", "torch-safetensors")


class BundleError(ValueError):
    """A folder that is not a readable bundle of the expected product; the message says what is wrong."""


def _count(tree: Any) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def _config_system(path: Path) -> str | None:
    """The `system:` a config.yaml names (None when unreadable)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data.get("system") if isinstance(data, dict) else None


def read_manifest(directory: str | os.PathLike, system: str | None = None) -> dict[str, Any]:
    """The folder's manifest (a folder without one but with config.yaml + params/ reads as an orbax bundle of the
    config's system). Checks the format, the layout and, when given, the product `system`."""
    d = Path(directory)
    path = d / MANIFEST
    manifest: dict[str, Any] = {}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"{path}: cannot be read as JSON ({e})") from None
    if "format" not in manifest:  # written before the format had a manifest of its own
        if not ((d / CONFIG).is_file() and (d / PARAMS).is_dir()):
            raise BundleError(f"{d}: not a jaxtalk bundle (no {MANIFEST} with \"format\": \"{FORMAT}\", and no "
                              f"{CONFIG} + {PARAMS}/)")
        manifest = {**manifest, "format": FORMAT, "layout": "orbax",
                    "system": manifest.get("system") or _config_system(d / CONFIG)}
    if manifest["format"] != FORMAT:
        raise BundleError(f"{path}: format {manifest['format']!r} is not {FORMAT!r}; this jaxtalk cannot read it")
    if manifest.get("layout") not in LAYOUTS:
        raise BundleError(f"{path}: layout {manifest.get('layout')!r} is not one of {', '.join(LAYOUTS)}")
    if system is not None and manifest.get("component"):
        raise BundleError(f"{d}: holds one converted component ({manifest['component']}, jaxtalk convert --kind), "
                          f"not {system} model weights; load it with jaxtalk.loading.load_models or "
                          "interop.checkpoint.load_converted (SVP also reads a folder of such parts)")
    if system is not None and manifest.get("system") != system:
        raise BundleError(f"{d}: holds {manifest.get('system')} weights, not {system}; pass it as --system "
                          f"{manifest.get('system')}")
    if not (d / CONFIG).is_file():
        raise BundleError(f"{d}: {CONFIG} is missing from the bundle")
    missing = [f for f in manifest.get("files", []) if not (d / f).is_file()]
    if missing:
        raise BundleError(f"{d}: files listed in {MANIFEST} are missing: {', '.join(missing)}")
    return manifest


def claims_bundle(directory: str | os.PathLike) -> bool:
    """Whether `directory` says it is a bundle (a manifest naming a format, or config.yaml + params/), readable
    or not: a folder that claims it gets `read_manifest`'s error rather than another format's."""
    d = Path(directory)
    if (d / CONFIG).is_file() and (d / PARAMS).is_dir():
        return True
    try:
        return "format" in json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError, TypeError):
        return False


def is_bundle(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a bundle (a manifest of this format, or an older config.yaml + params/ folder)."""
    try:
        read_manifest(directory)
    except BundleError:
        return False
    return True


def write(directory: str | os.PathLike, config: Any, params: Mapping[str, Any], *, system: str,
          files: Sequence[str] = (), **provenance: Any) -> Path:
    """Write a bundle: `params/` (orbax, `{component: variables}`), `config.yaml` and `manifest.json` (last, so a
    folder with a manifest is complete). `files`: extra files the caller has written into the folder; keyword
    arguments are recorded in the manifest (source, training record, ...)."""
    import orbax.checkpoint as ocp

    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(d / PARAMS, dict(params), force=True)
    if not distributed.is_main():  # a multi-process run: all write the params together, process 0 the rest
        return d
    config_lib.save(config, d / CONFIG)
    manifest = {"format": FORMAT, "system": system, "layout": "orbax",
                "components": {name: _count(tree) for name, tree in params.items()},
                "num_params": _count(params), "files": list(files), **provenance}
    with atomic_path(d / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return d


def write_component(directory: str | os.PathLike, kind: str, config: Any, variables: Any,
                    **provenance: Any) -> Path:
    """Write a component bundle: one interop kind's variables under `params/{kind}`, `config.yaml` with the kind
    and its resolved source config (JSON-able), and `manifest.json` naming the component (written last)."""
    import orbax.checkpoint as ocp
    import yaml

    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(d / PARAMS, {kind: variables}, force=True)
    if not distributed.is_main():  # as in `write`: all processes write the params, process 0 the rest
        return d
    with atomic_path(d / CONFIG) as tmp:
        Path(tmp).write_text(yaml.safe_dump({"kind": kind, "config": config}, sort_keys=False))
    manifest = {"format": FORMAT, "system": None, "component": kind, "layout": "orbax",
                "components": {kind: _count(variables)}, "num_params": _count(variables), "files": [],
                **provenance}
    with atomic_path(d / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return d


def stored_tree(directory: str | os.PathLike) -> dict[str, Any]:
    """The stored `{name: variables}` tree of an orbax bundle as shape / dtype metadata (nothing is read)."""
    import orbax.checkpoint as ocp

    return dict(ocp.StandardCheckpointer().metadata(Path(directory).resolve() / PARAMS).item_metadata.tree)


def update_manifest(directory: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge `fields` (provenance: training record, evaluation) into a bundle's manifest, atomically; the format
    keys themselves cannot be changed this way."""
    d = Path(directory)
    manifest = read_manifest(d)
    fixed = {"format", "system", "component", "layout", "components", "files"} & set(fields)
    if fixed:
        raise BundleError(f"update_manifest: {sorted(fixed)} describe the stored weights; write the bundle again")
    manifest.update(fields)
    with atomic_path(d / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return manifest


def restore(directory: str | os.PathLike, target: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `{component: variables}` of an orbax bundle, restored into `target`'s shapes and shardings (a tree of
    ShapeDtypeStructs) or, without one, as stored. A mismatch with `target` is a BundleError naming the folder."""
    import orbax.checkpoint as ocp

    d = Path(directory).resolve()
    try:
        with ocp.StandardCheckpointer() as ckpt:
            return dict(ckpt.restore(d / PARAMS, target) if target is not None else ckpt.restore(d / PARAMS))
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{d}/{PARAMS} does not match the config's model sizes ({type(e).__name__}: "
                          f"{str(e)[:300]}); do not override size keys of a saved bundle") from None
