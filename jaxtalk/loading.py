"""One call that loads any bundle (`jaxtalk.interop.bundle`), and the importers that write whole products as
bundles. The manifest says what a bundle holds: a product (its `loading.load_models` reads it) or one converted
component (`interop.checkpoint.load_converted` reads it).

    models = jaxtalk.loading.load_models("ckpt/svp")            # an SVPModels
    models = jaxtalk.loading.load_models("ckpt/style2talker")   # a Style2TalkerModels
    module, params = jaxtalk.loading.load_models("ckpt/vae")    # one component (jaxtalk convert --kind sd_vae)

    import_product("vexpress", "V-Express/model_ckpts", "ckpt/svp")       # jaxtalk convert --kind vexpress
    import_product("style2talker", "Style2Talker/checkpoints", "ckpt/s2t") # jaxtalk convert --kind style2talker
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jaxtalk.interop import bundle

SYSTEMS = {"svp": "jaxtalk.svp.loading", "style2talker": "jaxtalk.style2talker.loading"}
PRODUCT_KINDS = {
    "vexpress": "a V-Express checkpoint folder (denoising_unet, motion_module, reference_net, v_kps_guider, "
                "audio_projection; --vae / --audio-encoder add SD's VAE and wav2vec2, else they are random) -> an "
                "SVP bundle (config: svp_vexpress unless --config)",
    "style2talker": "a folder of Style2Talker's original checkpoints (clip_text / ViT-B-32, checkpoint (Style-E), "
                    "audio2exp, encoder (pSp), vtoonify (Style-A), exstyle_code.npz) -> a Style2Talker bundle",
}


def load_models(directory: str | os.PathLike, **kwargs: Any) -> Any:
    """The weights of the bundle in `directory`: a product's models (SVP or Style2Talker, from its manifest;
    `kwargs` go to the product's `load_models`: both take `cfg` and `mesh`, SVP also `overrides`), or for a
    component bundle `(module, params)` (`kwargs`: `shardings`)."""
    import importlib

    manifest = bundle.read_manifest(directory)
    if manifest.get("component"):
        from jaxtalk.interop.checkpoint import load_converted

        return load_converted(directory, **kwargs)
    system = manifest.get("system")
    if system not in SYSTEMS:
        raise bundle.BundleError(f"{directory}: manifest system {system!r} is not one of {', '.join(SYSTEMS)}")
    return importlib.import_module(SYSTEMS[system]).load_models(directory, **kwargs)


def import_product(kind: str, weights: str | os.PathLike, out: str | os.PathLike, *,
                   config: str | os.PathLike | None = None, vae: str | os.PathLike | None = None,
                   audio_encoder: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Import a whole product's original checkpoint folder (`kind` in `PRODUCT_KINDS`) strictly and write it as
    a product bundle in `out` (what `jaxtalk generate --checkpoint` and `load_models` read). `config`: a product
    preset or YAML; `vae` / `audio_encoder`: V-Express's separately shipped SD VAE and wav2vec2."""
    from jaxtalk import config as config_lib

    if kind not in PRODUCT_KINDS:
        raise ValueError(f"unknown product kind {kind!r}; choose one of {', '.join(PRODUCT_KINDS)}")
    out = Path(out)
    if bundle.claims_bundle(out) and not overwrite:
        raise ValueError(f"--out {out}: already holds a bundle; pass --overwrite to replace it")
    if kind != "vexpress" and (vae is not None or audio_encoder is not None):
        raise ValueError(f"--vae / --audio-encoder: only --kind vexpress takes them, not {kind}")
    if kind == "vexpress":
        from jaxtalk.interop.hf_cache import resolve_pretrained
        from jaxtalk.svp import loading as svp_loading
        from jaxtalk.svp.config import SVPConfig

        cfg = config_lib.load(config or "svp_vexpress", cls=SVPConfig)
        models = svp_loading.from_vexpress(
            weights, vae=resolve_pretrained(vae, "--vae") if vae else None,
            audio_encoder=resolve_pretrained(audio_encoder, "--audio-encoder") if audio_encoder else None, cfg=cfg)
        path = svp_loading.save_models(models, out, imported_from=str(weights), importer=kind)
    else:
        from jaxtalk.style2talker import loading as s2t_loading
        from jaxtalk.style2talker.config import Style2TalkerConfig

        if bundle.is_bundle(weights) and bundle.read_manifest(weights)["layout"] == "orbax":
            raise ValueError(f"--weights {weights}: already a jaxtalk bundle; use it as --checkpoint as it is")
        cfg = config_lib.load(config, cls=Style2TalkerConfig) if config else None
        models = s2t_loading.load_models(weights, cfg)
        path = s2t_loading.save_models(models, out, imported_from=str(weights), importer=kind)
    print(f"{kind}: {len(models.params)} components, {models.num_params / 1e6:.2f}M params -> {path}")
    return path
