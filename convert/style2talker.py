"""Convert Style2Talker checkpoints (Style-E, Style-A) and their parts (audio2exp, pSp, VToonify, PIRender).

    python convert/style2talker.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: style2talker_style_e, style2talker_style_a, sadtalker_audio2exp, psp_encoder, vtoonify, pirender.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("style2talker_style_e", "style2talker_style_a", "sadtalker_audio2exp", "psp_encoder", "vtoonify", "pirender")

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
