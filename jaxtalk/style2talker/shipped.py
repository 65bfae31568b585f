"""The Style2Talker weights shipped inside the package: every component trained from nothing on synthetic clips
of the training identities (`train/style2talker.py --config train_style2talker_synthetic`).

    models = load_shipped()          # Style2TalkerModels from jaxtalk/assets/style2talker_synthetic/
    shipped_manifest()               # how they were trained (command, commit, seeds, steps, wall times, figures)

The folder is a bundle (`jaxtalk.interop.bundle`) of layout "torch-safetensors", written before orbax bundles
(`loading.save_checkpoints`): safetensors per component, the resolved `config.yaml`, the art-style bank
`exstyle_code.npz` (names in `art_styles.STYLE_NAMES`) and `manifest.json` (format, layout, files, and the
training record). It is kept as shipped rather than re-committed as orbax, so the repository stays small; the
one loader reads both layouts. Loading reads tensors only (safetensors / npz without pickles); no code runs.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

SHIPPED_NAME = "style2talker_synthetic"
MANIFEST = "manifest.json"


def shipped_dir() -> Path | None:
    """The shipped checkpoint folder, or None when this installation has none."""
    path = Path(str(resources.files("jaxtalk") / "assets" / SHIPPED_NAME))
    return path if (path / "config.yaml").is_file() else None


def load_shipped() -> Any:
    """The shipped `Style2TalkerModels` (a clear error when the package has none)."""
    from jaxtalk.style2talker.models import ModelLoadError, load_models

    path = shipped_dir()
    if path is None:
        raise ModelLoadError(f"this jaxtalk has no shipped Style2Talker weights (jaxtalk/assets/{SHIPPED_NAME}); "
                             "pass --checkpoint or train them with train/style2talker.py")
    models = load_models(path)
    models.source = f"shipped weights trained on synthetic data ({path})"
    return models


def shipped_manifest() -> dict[str, Any]:
    """The shipped weights' manifest (training record and evaluation figures)."""
    path = shipped_dir()
    if path is None or not (path / MANIFEST).is_file():
        return {}
    return json.loads((path / MANIFEST).read_text())
