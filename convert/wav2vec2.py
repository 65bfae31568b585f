"""Convert a wav2vec 2.0 encoder (transformers layout) into a jaxtalk checkpoint directory.

    python convert/wav2vec2.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: wav2vec2.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("wav2vec2",)

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
