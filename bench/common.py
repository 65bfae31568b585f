"""What the bench scripts share: timing a call, XLA's FLOP count of a compiled call, peak host memory, and writing
the results JSON (every script ends by writing one file and printing where it went)."""

from __future__ import annotations

import json
import pathlib
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(seconds of the first call, which includes any compile; median seconds of `repeats` further calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def xla_flops(compiled: Any) -> float:
    """FLOPs of one call of a compiled jax function, from XLA's cost analysis (0.0 where the backend gives none)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(path: str | pathlib.Path, results: dict) -> pathlib.Path:
    """Write `results` as indented JSON to `path` (folders made as needed) and say where."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return path
