"""Put a Style-A run's weights into a Style2Talker bundle (e.g. a Style-A fine-tuned from the shipped one).

    python train/style_a_export.py --run outputs/train/style_a --out outputs/style2talker_finetuned \
        [--base jaxtalk/assets/style2talker_synthetic]

The bundle `--base` (default: the run's init_bundle) is copied to `--out` with the run's newest Style-A, pSp and
art-style bank in place of its own; its manifest gains the run's record (`style_a_run`).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from jaxtalk.training.style_a import export_into_bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="workdir of a train/style_a.py run")
    parser.add_argument("--out", required=True, help="folder to write the bundle to (replaced)")
    parser.add_argument("--base", help="bundle whose other components are kept (default: the run's init_bundle)")
    args = parser.parse_args(argv)
    command = "python train/style_a_export.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        manifest = export_into_bundle(args.run, args.out, args.base, command)
    except (FileNotFoundError, ValueError) as err:
        print(f"style_a_export: {err}", file=sys.stderr)
        return 2
    run = manifest["style_a_run"]
    print(f"wrote {args.out}: Style-A step {run['steps']} from {args.run} over {run['base']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
