"""Pretrained encoders named the Hugging Face way, resolved offline.

`resolve_pretrained(name)` turns a `--vae` / `--audio-encoder` argument into a local path: an existing file or
folder is used as it is (a folder in HF layout: config.json + safetensors / weights-only .bin); otherwise a model
id such as `facebook/wav2vec2-base-960h` is looked up in the local Hugging Face cache (`HF_HUB_CACHE`, else
`HF_HOME/hub`, else `~/.cache/huggingface/hub`), at the snapshot `refs/main` (or a given `@revision`) points to.
Nothing is downloaded; a model that is not cached is one clear error saying how to get it there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?$")


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_pretrained(name: str | os.PathLike, what: str = "model") -> Path:
    """Local path of `name` (see module docstring); FileNotFoundError (one line) when it is neither."""
    path = Path(name)
    if path.exists():
        return path
    text = str(name)
    if not _MODEL_ID.match(text):
        raise FileNotFoundError(f"{what} {text}: no such file or folder (give a local folder in Hugging Face layout "
                                "or a model id like org/name that is in the Hugging Face cache)")
    model_id, _, revision = text.partition("@")
    repo = hub_cache() / f"models--{model_id.replace('/', '--')}"
    if not repo.is_dir():
        raise FileNotFoundError(f"{what} {model_id}: not in the Hugging Face cache {hub_cache()}; download it once "
                                f"(huggingface-cli download {model_id}) or pass a local folder")
    ref = repo / "refs" / (revision or "main")
    snapshot = ref.read_text().strip() if ref.is_file() else (revision or "")
    folder = repo / "snapshots" / snapshot if snapshot else None
    if folder is None or not folder.is_dir():
        snaps = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
        if revision or len(snaps) != 1:
            raise FileNotFoundError(f"{what} {text}: no cached snapshot for revision {revision or 'main'} in {repo}")
        folder = snaps[0]
    return folder
