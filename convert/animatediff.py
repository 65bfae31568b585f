"""Convert AnimateDiff motion modules (mm_sd_v15_v2 or diffusers MotionAdapter layout).

    python convert/animatediff.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: animatediff_motion_module.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("animatediff_motion_module",)

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
