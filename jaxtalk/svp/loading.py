"""Every way SVP weights get in: a converted / trained bundle (config.yaml + params/), V-Express's original
checkpoint folder, a folder of per-kind converted parts, random init for what is missing. The only SVP module that
imports `interop`.

    models = load_models("ckpt/svp", mesh=mesh)            # a bundle written by save_models (config.yaml + params/)
    models = from_vexpress("model_ckpts/v-express", vae="model_ckpts/sd-vae-ft-mse",
                           audio_encoder="model_ckpts/wav2vec2-base-960h")
    models = load_converted_parts("ckpt/vx_parts")         # sub-folders written by `jaxtalk convert`
    save_models(models, "ckpt/svp")

Bundles are the one format of both products (`jaxtalk.interop.bundle`: orbax params restored straight into the mesh
shardings, the resolved config and manifest.json beside them); V-Express's five files are read strictly through
their interop kinds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxtalk import config as config_lib
from jaxtalk import interop
from jaxtalk.backbones.wav2vec2 import Wav2Vec2Model
from jaxtalk.interop import bundle
from jaxtalk.interop.checkpoint import is_converted, load_converted, read_meta
from jaxtalk.interop.kinds.vexpress import load_vexpress_unet
from jaxtalk.svp.config import SVPConfig
from jaxtalk.svp.models import (
    _SUFFIXES,
    VEXPRESS_FILES,
    ModelLoadError,
    SVPModels,
    _random_init,
    abstract_params,
    build_modules,
    init_functions,
    reference_unet_config,
)


def save_models(models: SVPModels, directory: str | os.PathLike, *, files: Sequence[str] = (),
                **provenance: Any) -> Path:
    """Write the bundle (`jaxtalk.interop.bundle`: params/ in orbax, the resolved config.yaml, manifest.json).
    `files`: extra files already written into the folder; keywords are recorded in the manifest."""
    provenance.setdefault("source", models.source)
    return bundle.write(directory, models.config, models.params, system="svp", files=files, **provenance)


PACKAGED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "svp_synthetic"


def packaged_weights() -> Path:
    """The SVP model trained on the synthetic talking faces that ships inside the package (`train/svp_stack.py`
    made it; its manifest.json records how): the default weights of `jaxtalk generate` and `make demo`."""
    if not is_converted_checkpoint(PACKAGED_WEIGHTS):
        raise ModelLoadError(f"{PACKAGED_WEIGHTS}: the shipped SVP weights are missing from this installation; "
                             "reinstall jaxtalk or pass --checkpoint")
    return PACKAGED_WEIGHTS


def is_converted_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether `directory` is an SVP bundle (manifest.json of the bundle format, or config.yaml + params/)."""
    try:
        return bundle.read_manifest(directory, "svp")["layout"] == "orbax"
    except bundle.BundleError:
        return False


def load_models(directory: str | os.PathLike, *, overrides: Sequence[str] = (), mesh: Mesh | None = None,
                cfg: SVPConfig | None = None) -> SVPModels:
    """An SVP bundle (`jaxtalk.interop.bundle`): its `config.yaml` (with dotted overrides; sizes must still match
    the params) and its params restored into the mesh shardings."""
    d = Path(directory).resolve()
    try:
        bundle.read_manifest(d, "svp")
    except bundle.BundleError as e:
        raise ModelLoadError(f"{e}; write an SVP bundle with jaxtalk.svp.loading.save_models or pass a V-Express "
                             "checkpoint folder") from None
    cfg = cfg or config_lib.load(d / "config.yaml", overrides=overrides, cls=SVPConfig)
    modules = build_modules(cfg)
    target = abstract_params(cfg, modules, mesh)
    try:
        params = bundle.restore(d, target)
    except bundle.BundleError as e:
        raise ModelLoadError(str(e)) from None
    shardings = None
    if mesh is not None:
        shardings = jax.tree.map(lambda s: s.sharding, target)
    return SVPModels(cfg, modules, dict(params), mesh, shardings, source=f"converted checkpoint {d}")


# ------------------------------------------------------------------------------------ imported components

# Interop kind -> component, for folders of per-kind converted checkpoints (`jaxtalk convert` output).
KIND_COMPONENTS = {
    "vexpress_denoising_unet": "unet", "vexpress_reference_net": "reference_net", "vexpress_kps_guider": "kps_guider",
    "vexpress_audio_projection": "audio_projection", "sd_vae": "vae", "wav2vec2": "audio_encoder",
    "whisper_encoder": "audio_encoder",
}


def _config_with(cfg: SVPConfig, imported: Mapping[str, tuple[nn.Module, Any]]) -> SVPConfig:
    """`cfg` with the sizes of the imported modules (the checkpoints decide), re-validated as a whole."""
    from jaxtalk.svp.audio_projection import AudioProjectionConfig
    from jaxtalk.svp.kps_guider import KpsGuiderConfig

    changes: dict[str, Any] = {}
    if "unet" in imported:
        changes["unet"] = imported["unet"][0].config
    if "reference_net" in imported:
        ref = imported["reference_net"][0].config
        unet2d = (changes.get("unet") or cfg.unet).unet
        if dataclasses.replace(ref, use_conv_norm_out=False) != dataclasses.replace(unet2d, use_conv_norm_out=False):
            raise ModelLoadError("the ReferenceNet checkpoint's UNet sizes differ from the denoising UNet's; they "
                                 "must be the same 2D UNet")
    if "kps_guider" in imported:
        g = imported["kps_guider"][0]
        changes["kps_guider"] = KpsGuiderConfig(g.conditioning_embedding_channels, g.conditioning_channels,
                                                tuple(g.block_out_channels))
    if "audio_projection" in imported:
        a, ap = imported["audio_projection"][0], cfg.audio_projection
        if a.max_seq_len % ap.vectors_per_frame or (a.max_seq_len // ap.vectors_per_frame) % 2 == 0:
            raise ModelLoadError(f"audio projection max_seq_len={a.max_seq_len} is not vectors_per_frame="
                                 f"{ap.vectors_per_frame} x an odd number of frames (2 * pad + 1)")
        changes["audio_projection"] = AudioProjectionConfig(
            dim=a.dim, depth=a.depth, dim_head=a.dim_head, heads=a.heads, num_queries=a.num_queries,
            embedding_dim=a.embedding_dim, output_dim=a.output_dim, ff_mult=a.ff_mult,
            num_pad_audio_frames=(a.max_seq_len // ap.vectors_per_frame - 1) // 2, vectors_per_frame=ap.vectors_per_frame)
    if "vae" in imported:
        changes["vae"] = imported["vae"][0].config
    if "audio_encoder" in imported:
        enc = imported["audio_encoder"][0]
        kind = "wav2vec2" if isinstance(enc, Wav2Vec2Model) else "whisper"
        changes["audio"] = dataclasses.replace(cfg.audio, encoder=kind, **{kind: enc.config})
    try:
        return config_lib.from_dict(SVPConfig, config_lib.to_dict(dataclasses.replace(cfg, **changes)))
    except config_lib.ConfigError as e:
        raise ModelLoadError(f"the imported checkpoints do not fit together with the config: {e}") from None


def _assemble(cfg: SVPConfig, imported: Mapping[str, tuple[nn.Module, Any]], mesh: Mesh | None, seed: int,
              sources: list[str]) -> SVPModels:
    """Imported components plus random init for the rest (listed in `source`), placed on `mesh`."""
    cfg = _config_with(cfg, imported)
    modules = build_modules(cfg)
    fns = init_functions(cfg, modules)
    missing = [name for name in fns if name not in imported]
    params = {name: imported[name][1] for name in fns if name in imported}
    if missing:
        params.update(_random_init(cfg, fns, missing, seed))
        sources.append(f"random init (seed {seed}): {', '.join(missing)}")
    models = SVPModels(cfg, modules, {k: jax.tree.map(jnp.asarray, params[k]) for k in fns}, None, None,
                       source="; ".join(sources))
    return models.on_mesh(mesh) if mesh is not None else models


def load_converted_parts(directory: str | os.PathLike, *, cfg: SVPConfig | None = None, mesh: Mesh | None = None,
                         seed: int = 0) -> SVPModels:
    """A folder of per-kind converted checkpoints (`jaxtalk convert --out DIR/<part>`: component bundles, or
    older `jaxtalk_kind.json` folders); components without one are randomly initialised and `source` lists them."""
    d = Path(directory)
    cfg = cfg or config_lib.load("svp_vexpress", cls=SVPConfig)
    imported: dict[str, tuple[nn.Module, Any]] = {}
    sources = []
    for sub in sorted(p for p in d.iterdir() if is_converted(p)):
        kind = read_meta(sub)["kind"]
        if kind not in KIND_COMPONENTS:
            raise ModelLoadError(f"{sub}: kind {kind!r} is not an SVP component ({', '.join(KIND_COMPONENTS)})")
        name = KIND_COMPONENTS[kind]
        if name in imported:
            raise ModelLoadError(f"{sub}: a second checkpoint for the {name} (kind {kind})")
        imported[name] = load_converted(sub)
        sources.append(f"{name} {sub}")
    if not imported:
        raise ModelLoadError(f"{d}: no converted checkpoints (sub-folders written by jaxtalk convert) found")
    return _assemble(cfg, imported, mesh, seed, sources)


def is_converted_parts(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return d.is_dir() and any(is_converted(p) for p in d.iterdir())


def _find(directory: Path, stem: str) -> Path:
    for suffix in _SUFFIXES:
        path = directory / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise ModelLoadError(f"{directory}: no {stem}{{{','.join(_SUFFIXES)}}}; V-Express ships "
                         f"{', '.join(f + '.bin' for f in VEXPRESS_FILES)}")


def _weights_in(path: Path) -> tuple[Path, dict | None]:
    """A weights file, or a diffusers / transformers model folder (its weights file and config.json)."""
    import json

    if path.is_file():
        return path, None
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not found")
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    for stem in ("diffusion_pytorch_model", "model", "pytorch_model"):
        for suffix in _SUFFIXES:
            if (path / f"{stem}{suffix}").is_file():
                return path / f"{stem}{suffix}", config
    raise ModelLoadError(f"{path}: no diffusion_pytorch_model / model / pytorch_model weights file")


def is_vexpress_folder(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return d.is_dir() and any((d / f"denoising_unet{s}").is_file() for s in _SUFFIXES)


def from_vexpress(directory: str | os.PathLike, *, vae: str | os.PathLike | None = None,
                  audio_encoder: str | os.PathLike | None = None, cfg: SVPConfig | None = None,
                  mesh: Mesh | None = None, seed: int = 0) -> SVPModels:
    """Import V-Express's checkpoints (denoising_unet + motion_module, reference_net, v_kps_guider,
    audio_projection) strictly through the interop kinds; the VAE (`sd_vae`) and the wav2vec2 encoder come from
    the given files / folders (the encoder also from `cfg.audio.checkpoint`), else they are randomly initialised
    from `cfg` (and `source` says so).

    `cfg` (default the `svp_vexpress` preset) supplies what shapes cannot show (head counts, motion-module
    settings) and the strict import checks every shape against it; `unet.use_style` adds SVP's style attention,
    kept at its zero-output init. Guider and projection widths are read from the checkpoints.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ModelLoadError(f"{d}: V-Express checkpoint folder not found")
    cfg = cfg or config_lib.load("svp_vexpress", cls=SVPConfig)
    files = {stem: _find(d, stem) for stem in VEXPRESS_FILES}
    audio_encoder = audio_encoder if audio_encoder is not None else cfg.audio.checkpoint
    ap = cfg.audio_projection
    imported = {
        "unet": load_vexpress_unet(files["denoising_unet"], files["motion_module"], config=cfg.unet),
        "reference_net": interop.from_torch("vexpress_reference_net", files["reference_net"],
                                            config=reference_unet_config(cfg)),
        "kps_guider": interop.from_torch("vexpress_kps_guider", files["v_kps_guider"]),
        "audio_projection": interop.from_torch("vexpress_audio_projection", files["audio_projection"],
                                               config={"heads": ap.heads, "dim_head": ap.dim_head}),
    }
    sources = [f"V-Express {d}"]
    if vae is not None:
        path, vae_config = _weights_in(Path(vae))
        imported["vae"] = interop.from_torch("sd_vae", path, config=vae_config)
        sources.append(f"vae {path}")
    if audio_encoder is not None:
        path, enc_config = _weights_in(Path(audio_encoder))
        imported["audio_encoder"] = interop.from_torch("wav2vec2", path, config=enc_config)
        sources.append(f"audio encoder {path}")
    return _assemble(cfg, imported, mesh, seed, sources)
