"""The process-wide caches of compiled and jitted functions (and abstract shapes), bounded, in one place.

Pipelines, model inits and train steps compile once per (config, mesh, shapes) and reuse the executable in the
process. Each cache is a `CompileCache`: a dict that keeps the `maxsize` most recently used entries, so a
long-lived server or notebook that sees many configs or clip lengths does not hold every executable forever.
Meshes enter keys through `mesh_key` (axis names, shape and device ids), never `id(mesh)`, which a new mesh may
reuse after the old one is freed.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable
from typing import Any

import jax

CACHES: dict[str, CompileCache] = {}


class CompileCache(collections.OrderedDict):
    """A least-recently-used dict of at most `maxsize` entries, registered under `name` in `CACHES`."""

    def __init__(self, name: str, maxsize: int = 32) -> None:
        super().__init__()
        if maxsize < 1:
            raise ValueError(f"CompileCache {name!r}: maxsize must be >= 1, got {maxsize}")
        self.name, self.maxsize = name, maxsize
        CACHES[name] = self

    def __getitem__(self, key: Hashable) -> Any:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def update(self, items: Any = (), **kw: Any) -> None:  # through __setitem__, so the bound holds
        pairs: Iterable = items.items() if hasattr(items, "items") else items
        for k, v in [*pairs, *kw.items()]:
            self[k] = v


def mesh_key(mesh: jax.sharding.Mesh | None) -> Hashable:
    """A hashable identity of a mesh's layout: equal meshes share compiled programs."""
    if mesh is None:
        return None
    return (tuple(mesh.axis_names), tuple(mesh.devices.shape), tuple(int(d.id) for d in mesh.devices.flat))


def clear_all() -> None:
    """Drop every cached executable (e.g. after changing JAX flags)."""
    for cache in CACHES.values():
        cache.clear()
