"""Convert CLIP text / image towers (transformers or OpenAI layout) into jaxtalk checkpoint directories.

    python convert/clip.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: clip_text, clip_vision.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("clip_text", "clip_vision")

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
