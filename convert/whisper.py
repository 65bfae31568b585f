"""Convert a Whisper audio encoder (transformers Whisper folder or file, or an openai-whisper .pt with dims + model_state_dict)
to jaxtalk Flax params.

    python convert/whisper.py SOURCE OUT.safetensors [--config CONFIG]

SOURCE: a checkpoint file or folder (safetensors, or torch files read with weights_only=True). CONFIG: a
transformers config.json, a preset (tiny, base, small, medium, large-v2, large-v3), or omitted: the folder's config.json when there is one, else
sizes inferred from shapes. OUT holds the params under their Flax paths ("layers_0/self_attn/q_proj/kernel", ...) with
the kind and the resolved config in the safetensors metadata; `interop.to_torch("whisper_encoder", params, layout=...)`
writes PyTorch names back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from jaxtalk import interop

KIND = "whisper_encoder"


def load_config(source: str, config: str | None):
    """A config.json path, a preset name, the source folder's config.json, or None (inferred from shapes)."""
    if config is None:
        folder_config = pathlib.Path(source) / "config.json"
        return json.loads(folder_config.read_text()) if folder_config.is_file() else None
    path = pathlib.Path(config)
    return json.loads(path.read_text()) if path.is_file() else config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="checkpoint file or folder")
    parser.add_argument("output", help="where to write the Flax params (.safetensors)")
    parser.add_argument("--config", default=None, help="config.json path or preset name")
    args = parser.parse_args(argv)
    module, params = interop.from_torch(KIND, args.source, load_config(args.source, args.config))
    flat = {"/".join(path): np.ascontiguousarray(value) for path, value in traverse_util.flatten_dict(params).items()}
    metadata = {"jaxtalk_kind": KIND, "config": json.dumps(dataclasses.asdict(module.config))}
    save_file(flat, args.output, metadata=metadata)
    count = sum(v.size for v in flat.values())
    print(f"{KIND}: {len(flat)} tensors, {count / 1e6:.2f}M params, config {module.config} -> {args.output}")


if __name__ == "__main__":
    main()
