"""Convert diffusers SD UNet / VAE checkpoints into jaxtalk checkpoint directories.

    python convert/sd.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: sd_unet, sd_vae.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("sd_unet", "sd_vae")

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
