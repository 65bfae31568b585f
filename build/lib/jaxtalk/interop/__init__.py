"""PyTorch checkpoint interop: `from_torch(kind, source, config)`, `to_torch(kind, params, config)`, `KINDS`.

`KINDS` maps each supported kind to a summary with its call convention (see design.md for the contract).
"""

from __future__ import annotations

from typing import Any

from jaxtalk.interop.reading import CheckpointError, read_state_dict
from jaxtalk.interop.registry import (
    ConversionError,
    Kind,
    all_kinds,
    from_torch,
    get_kind,
    register,
    to_torch,
)

__all__ = [
    "KINDS", "CheckpointError", "ConversionError", "Kind", "from_torch", "get_kind", "read_state_dict",
    "register", "to_torch",
]


def __getattr__(name: str) -> Any:
    if name == "KINDS":
        return all_kinds()
    raise AttributeError(name)
