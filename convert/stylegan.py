"""Convert rosinality StyleGAN2 and DualStyleGAN generators (g_ema of training checkpoints).

    python convert/stylegan.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: stylegan2, dualstylegan.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("stylegan2", "dualstylegan")

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
