"""The `jaxtalk` console entry: `demo`, `generate`, `inspect`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from jaxtalk import config
    from jaxtalk.data.demo import write_demo

    cfg = config.load(args.config, overrides=args.overrides, cls=config.DemoConfig)
    paths = write_demo(
        cfg.output_dir, seed=cfg.seed, num_clips=cfg.num_clips, resolution=cfg.data.resolution,
    )
    config.save(cfg, paths["video"].with_suffix(".yaml"))
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from jaxtalk.interop import read_state_dict

    state = read_state_dict(args.checkpoint)
    total = 0
    for name, value in sorted(state.items()):
        total += value.size
        print(f"{name} {tuple(value.shape)} {value.dtype}")
    print(f"{len(state)} tensors, {total:,} elements")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxtalk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="generate synthetic clips and write an mp4 and a contact sheet")
    p.add_argument("--config", default="demo", help="preset name or YAML path")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.resolution=256")
    p.set_defaults(fn=_demo)
    p = sub.add_parser("inspect", help="list the tensors of a checkpoint (read safely)")
    p.add_argument("checkpoint")
    p.set_defaults(fn=_inspect)
    args = parser.parse_args(argv)
    from jaxtalk.config import ConfigError
    from jaxtalk.interop import CheckpointError

    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"jaxtalk {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
