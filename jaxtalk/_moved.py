"""Names that moved to another module and stay importable from the old one (for code written before the move)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def forward(module: str, target: str, names: tuple[str, ...]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `module` that hands `names` on from `target` (imported on first use)."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - it becomes the module's __getattr__
        if name in names:
            return getattr(importlib.import_module(target), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
