"""Convert the StyleTalk style encoder.

    python convert/styletalk.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: styletalk_style_encoder.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("styletalk_style_encoder",)

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
