"""Compilation caches, in one place: the process-wide caches of compiled / jitted programs (bounded), and XLA's
persistent on-disk cache for the command line.

In-process: pipelines, model inits and train steps compile once per (config, mesh, shapes) and reuse the
executable. Each cache is a `CompileCache`, a dict that keeps the `maxsize` most recently used entries, so a
long-lived server or notebook that sees many configs or clip lengths does not hold every executable forever.
Meshes enter keys through `mesh_key` (axis names, shape and device ids), never `id(mesh)`, which a new mesh may
reuse after the old one is freed; modules enter by value (flax modules hash their fields).

One compile style for both products' pipelines: `compiled(cache, key, fn, args)` ahead-of-time compiles
`fn(*args)` (a closure over the flax modules, taking the params as an argument) once per (key, the shapes,
dtypes and shardings of `args`) and returns the executable. Small host-side tables use `@memoized(name)`.

On disk: a second `jaxtalk generate` with the same shapes loads its compiled programs from disk instead of
compiling them again. On by default for the CLI, in `$JAXTALK_COMPILE_CACHE`, else
`$XDG_CACHE_HOME/jaxtalk/xla` (~/.cache/jaxtalk/xla). Turn it off with `--no-compile-cache` or
`JAXTALK_COMPILE_CACHE=off`. Library users call `enable_compile_cache()` themselves (importing jaxtalk never
changes JAX's global configuration).
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jax

OFF_VALUES = ("", "0", "off", "false", "no", "none")


def default_cache_dir() -> Path | None:
    """The cache folder the CLI uses, or None when `JAXTALK_COMPILE_CACHE` turns it off."""
    env = os.environ.get("JAXTALK_COMPILE_CACHE")
    if env is not None:
        return None if env.strip().lower() in OFF_VALUES else Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxtalk" / "xla"


def enable_compile_cache(path: str | os.PathLike | None = None, *, min_compile_seconds: float = 0.5) -> Path | None:
    """Point JAX's persistent compilation cache at `path` (default: `default_cache_dir()`); programs that took at
    least `min_compile_seconds` to compile are stored. Returns the folder, or None when off or not writable."""
    import jax

    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


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


def _shape_key(args: Any) -> Hashable:
    """The tree structure, shapes and dtypes of the arguments (shardings are given to `compiled` explicitly)."""
    import jax

    def leaf(a: Any) -> Hashable:
        return (tuple(getattr(a, "shape", ())), str(getattr(a, "dtype", type(a).__name__)))

    leaves, treedef = jax.tree.flatten(args)
    return (str(treedef), tuple(leaf(a) for a in leaves))


def compiled(cache: CompileCache, key: Hashable, fn: Callable, args: tuple, *, in_shardings: Any = None,
             out_shardings: Any = None, mesh: jax.sharding.Mesh | None = None) -> Any:
    """`jax.jit(fn).lower(*args).compile()`, made once per (`key`, the shapes of `args`) and kept in `cache`.

    `key` names everything `fn` closes over that changes the program (stage name, module configs, static
    flags, `mesh_key(mesh)`); the argument shapes are added here. With `in_shardings` / `out_shardings` the
    program is compiled under `mesh` with those shardings. The executable takes `args` of the same shapes."""
    import jax

    full = (key, _shape_key(args))
    if full in cache:
        return cache[full]
    jit_kwargs = {}
    if in_shardings is not None:
        jit_kwargs["in_shardings"] = in_shardings
    if out_shardings is not None:
        jit_kwargs["out_shardings"] = out_shardings
    if mesh is not None:
        with jax.set_mesh(mesh):
            program = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    else:
        program = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    cache[full] = program
    return program


def memoized(name: str, maxsize: int = 16) -> Callable[[Callable], Callable]:
    """Like `functools.lru_cache(maxsize)` for functions of hashable arguments, with the entries in a registered
    `CompileCache` (so `clear_all` drops them too)."""

    def wrap(fn: Callable) -> Callable:
        cache = CompileCache(name, maxsize)

        @functools.wraps(fn)
        def cached(*args: Any, **kwargs: Any) -> Any:
            key = (args, tuple(sorted(kwargs.items())))
            if key not in cache:
                cache[key] = fn(*args, **kwargs)
            return cache[key]

        cached.cache = cache  # type: ignore[attr-defined]
        return cached

    return wrap


def mesh_key(mesh: jax.sharding.Mesh | None) -> Hashable:
    """A hashable identity of a mesh's layout: equal meshes share compiled programs."""
    if mesh is None:
        return None
    return (tuple(mesh.axis_names), tuple(mesh.devices.shape), tuple(int(d.id) for d in mesh.devices.flat))


def clear_all() -> None:
    """Drop every cached executable (e.g. after changing JAX flags)."""
    for cache in CACHES.values():
        cache.clear()
