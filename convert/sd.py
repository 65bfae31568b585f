"""Convert a diffusers SD UNet or VAE checkpoint into a jaxtalk orbax checkpoint (params + resolved config).

    python convert/sd.py --kind sd_unet --weights unet/diffusion_pytorch_model.safetensors \
        --config unet/config.json --out ckpt/sd15_unet
    python convert/sd.py --kind sd_vae --weights vae/ --out ckpt/sd_vae

--weights: a .safetensors / .bin / .pt file, or a folder of them. --config: the diffusers config.json; when
omitted, the config.json beside the weights is used if there is one, else the config is inferred from shapes.
Load the result with `jaxtalk.interop.checkpoint.load_converted(OUT)`.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import numpy as np

from jaxtalk import interop
from jaxtalk.interop.checkpoint import save_converted

KINDS = ("sd_unet", "sd_vae")


def find_config(weights: str, config: str | None) -> dict | None:
    """The given config.json, else the one beside the weights, else None (inferred from shapes)."""
    if config is not None:
        return json.loads(pathlib.Path(config).read_text())
    path = pathlib.Path(weights)
    beside = (path if path.is_dir() else path.parent) / "config.json"
    return json.loads(beside.read_text()) if beside.is_file() else None


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--weights", required=True, help="checkpoint file or folder")
    parser.add_argument("--config", default=None, help="diffusers config.json (default: beside the weights)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing converted checkpoint")
    args = parser.parse_args(argv)
    kind = interop.get_kind(args.kind)
    module, params = interop.from_torch(args.kind, args.weights, find_config(args.weights, args.config))
    _, resolved = kind.build(module.config, {})
    out = save_converted(args.out, args.kind, params, resolved, overwrite=args.overwrite)
    leaves = jax.tree.leaves(params)
    print(f"{args.kind}: {len(leaves)} tensors, {sum(np.size(x) for x in leaves) / 1e6:.2f}M params -> {out}")
    return out


if __name__ == "__main__":
    main()
