"""Convert V-Express checkpoints (denoising UNet + motion module, ReferenceNet, V-Kps guider, audio projection).

    python convert/vexpress.py --kind KIND --weights FILE_OR_DIR [--config CFG] --out DIR

Kinds: vexpress_denoising_unet, vexpress_reference_net, vexpress_kps_guider, vexpress_audio_projection.
See `jaxtalk/interop/convert.py` for the options and `jaxtalk.interop.KINDS` for each kind.
"""

from jaxtalk.interop.convert import main

KINDS = ("vexpress_denoising_unet", "vexpress_reference_net", "vexpress_kps_guider", "vexpress_audio_projection")

if __name__ == "__main__":
    main(kinds=KINDS, description=__doc__.splitlines()[0])
