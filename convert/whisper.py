"""Convert a Whisper encoder (transformers or openai-whisper layout) into a jaxtalk checkpoint directory.

    python convert/whisper.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: whisper_encoder.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("whisper_encoder",)

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
