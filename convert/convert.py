"""`python convert/convert.py ARGS` is `jaxtalk convert ARGS` (for a checkout without the console script)."""

import sys

from jaxtalk.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
