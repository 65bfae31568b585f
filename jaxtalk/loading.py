"""One call that loads any product's bundle (`jaxtalk.interop.bundle`): the manifest says which product it holds,
and that product's `loading.load_models` reads it.

    models = jaxtalk.loading.load_models("ckpt/svp")            # an SVPModels
    models = jaxtalk.loading.load_models("ckpt/style2talker")   # a Style2TalkerModels
"""

from __future__ import annotations

import os
from typing import Any

from jaxtalk.interop import bundle

SYSTEMS = {"svp": "jaxtalk.svp.loading", "style2talker": "jaxtalk.style2talker.loading"}


def load_models(directory: str | os.PathLike, **kwargs: Any) -> Any:
    """The models of the bundle in `directory` (SVP or Style2Talker, from its manifest); `kwargs` go to the
    product's `load_models` (both: `cfg`, `mesh`; SVP also `overrides`)."""
    import importlib

    system = bundle.read_manifest(directory).get("system")
    if system not in SYSTEMS:
        raise bundle.BundleError(f"{directory}: manifest system {system!r} is not one of {', '.join(SYSTEMS)}")
    return importlib.import_module(SYSTEMS[system]).load_models(directory, **kwargs)
