"""The generic mapping between Flax param paths and PyTorch state-dict keys.

Flax modules name submodules after their torch attributes, with list elements as `name_{i}`. A param path
`("down_blocks_0", "resnets_1", "conv1", "kernel")` is the torch key `down_blocks.0.resnets.1.conv1.weight`.
Leaves: kernel/scale/embedding -> weight; everything else keeps its name. Kernels are transposed by rank:
Dense (in, out) <-> (out, in); Conv (*k, in, out) <-> (out, in, *k).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

_INDEXED = re.compile(r"^(.*\D)_(\d+)$")
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def default_torch_key(path: Iterable[str], keep: frozenset[str] = frozenset()) -> str:
    """Torch key for a Flax param path; segments in `keep` (torch names that end in `_<digit>`) stay as they are."""
    path = list(path)
    parts = []
    for seg in path[:-1]:
        m = _INDEXED.match(seg)
        parts.append(seg if seg in keep or m is None else f"{m.group(1)}.{m.group(2)}")
    parts.append(_LEAF_NAMES.get(path[-1], path[-1]))
    return ".".join(parts)


def kernel_to_torch(leaf: str, x: np.ndarray) -> np.ndarray:
    """Flax layout -> torch layout for one param."""
    if leaf != "kernel" or x.ndim < 2:
        return x
    if x.ndim == 2:
        return np.ascontiguousarray(x.T)
    nd = x.ndim - 2
    return np.ascontiguousarray(np.transpose(x, (nd + 1, nd, *range(nd))))


def kernel_from_torch(leaf: str, x: np.ndarray) -> np.ndarray:
    """Torch layout -> Flax layout for one param."""
    if leaf != "kernel" or x.ndim < 2:
        return x
    if x.ndim == 2:
        return np.ascontiguousarray(x.T)
    nd = x.ndim - 2
    return np.ascontiguousarray(np.transpose(x, (*range(2, 2 + nd), 1, 0)))
