"""XLA's persistent compilation cache for the command line: a second `jaxtalk generate` with the same shapes
loads its compiled programs from disk instead of compiling them again.

On by default for the CLI, in `$JAXTALK_COMPILE_CACHE`, else `$XDG_CACHE_HOME/jaxtalk/xla` (~/.cache/jaxtalk/xla).
Turn it off with `--no-compile-cache` or `JAXTALK_COMPILE_CACHE=off`. Library users call `enable_compile_cache()`
themselves (importing jaxtalk never changes JAX's global configuration).
"""

from __future__ import annotations

import os
from pathlib import Path

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
