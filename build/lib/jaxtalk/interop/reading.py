"""Safe checkpoint reading: safetensors, or torch files with `weights_only=True` — never unrestricted pickle.

Everything is returned as one flat `{dotted.name: np.ndarray}` dict; nested containers are flattened with dots.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
StateDict = dict[str, np.ndarray]


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not match the expected layout."""


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor / jax array / numpy array as numpy (bfloat16 and float16 widened to float32)."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    a = np.asarray(x)
    if a.dtype.name in ("bfloat16", "float16"):
        a = a.astype(np.float32)
    return a


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def flatten_state_dict(tree: Mapping[str, Any], prefix: str = "") -> StateDict:
    """Flatten nested mappings of tensors into dotted names; non-tensor leaves (epochs, configs) are dropped."""
    flat: StateDict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_state_dict(value, name + "."))
        elif _is_array(value):
            flat[name] = to_numpy(value)
    return flat


def _load_safetensors(path: pathlib.Path) -> StateDict:
    from safetensors import safe_open

    out: StateDict = {}
    try:
        try:
            with safe_open(str(path), framework="np") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
        except (TypeError, ValueError) as e:  # bfloat16 has no numpy dtype: go through torch when available
            if "bf16" not in str(e).lower() and "bfloat16" not in str(e).lower():
                raise
            with safe_open(str(path), framework="pt") as f:
                for k in f.keys():
                    out[k] = to_numpy(f.get_tensor(k))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - one clear message for any malformed file
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return out


def _load_torch(path: pathlib.Path) -> StateDict:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading PyTorch files needs torch; install it or convert the file to .safetensors"
        ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - includes UnpicklingError for code-executing pickles
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused or unreadable torch checkpoint (loaded with weights_only=True, so pickles that would "
            f"run code are rejected): {first}. Re-save it as plain tensors or .safetensors."
        ) from None
    if _is_array(obj):
        raise CheckpointError(f"{path}: holds a single tensor, not a state dict")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    return flatten_state_dict(obj)


def _checkpoint_files(directory: pathlib.Path) -> list[pathlib.Path]:
    for index_name in ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json",
                       "pytorch_model.bin.index.json", "diffusion_pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [directory / s for s in shards]
    files = sorted(p for p in directory.iterdir() if p.suffix == ".safetensors")
    if not files:
        files = sorted(p for p in directory.iterdir() if p.suffix in TORCH_SUFFIXES)
    if not files:
        raise CheckpointError(f"{directory}: no .safetensors or torch checkpoint files in this folder")
    return files


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> StateDict:
    """Read a checkpoint file, folder of shards, or in-memory mapping into a flat `{name: np.ndarray}` dict."""
    if isinstance(source, Mapping):
        return flatten_state_dict(source)
    path = pathlib.Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    files: Iterable[pathlib.Path] = _checkpoint_files(path) if path.is_dir() else [path]
    out: StateDict = {}
    for f in files:
        if f.suffix == ".safetensors":
            part = _load_safetensors(f)
        elif f.suffix in TORCH_SUFFIXES:
            part = _load_torch(f)
        else:
            raise CheckpointError(
                f"{f}: unsupported checkpoint suffix {f.suffix!r}; use .safetensors or one of {TORCH_SUFFIXES}"
            )
        out.update(part)
    if not out:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return out


def select_subtree(state: StateDict, containers: Iterable[str], strip_prefixes: Iterable[str]) -> StateDict:
    """Descend into the first container present (e.g. `state_dict`, `g_ema`) and strip a common prefix
    (e.g. `module.`) when every key carries it."""
    for c in containers:
        sub = {k[len(c) + 1:]: v for k, v in state.items() if k.startswith(c + ".")}
        if sub:
            state = sub
            break
    for p in strip_prefixes:
        if state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
    return state
