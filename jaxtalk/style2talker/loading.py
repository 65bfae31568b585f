"""Every way Style2Talker weights get in: random init (each component's random torch-layout state imported
through its interop kind, so random weights take the same strict path as real checkpoints), a bundle
(`jaxtalk.interop.bundle`, the format SVP uses too: orbax params + config.yaml + manifest.json, with the art-style
bank `exstyle_code.npz`), a folder of the original checkpoints (one torch-layout file per component, with
`config.yaml` and the art-style bank), and the writers of both. The only Style2Talker module that imports
`interop`.

    models = random_models(cfg, seed=0)
    models = load_models("ckpt/style2talker")          # a bundle, or config.yaml + one torch-layout file per component
    save_models(models, "ckpt/style2talker")           # the bundle (what the trainer exports)
    save_checkpoints(models, "ckpt/torch_layout")      # the original code's layouts (safetensors per component)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxtalk import config as config_lib
from jaxtalk import distributed, interop
from jaxtalk.data.atomic import atomic_path
from jaxtalk.interop import bundle
from jaxtalk.interop.registry import abstract_variables, get_kind
from jaxtalk.nn.upfirdn2d import make_kernel
from jaxtalk.style2talker.config import Audio2ExpConfig, PSPConfig, Style2TalkerConfig, StyleAConfig
from jaxtalk.style2talker.models import (
    CONFIG_FILE,
    FILE_STEMS,
    KINDS,
    RANDOM_BANK_SIZE,
    STYLE_BANK_FILE,
    SUFFIXES,
    ModelLoadError,
    Style2TalkerModels,
    abstract_params,
    build_modules,
)
from jaxtalk.style2talker.style_a import AudioDrivenVToonify
from jaxtalk.style2talker.style_e import sinusoidal_table

# ------------------------------------------------------------------------------------------------ random weights

_MAPPING = re.compile(r"generator\.(generator\.)?style\.\d+\.weight")  # EqualLinear lr_mul 0.01: stored N(0,1)/0.01
_COLOUR_TRANSFORM = re.compile(r"generator\.res\.(\d+)\.weight")  # T_c EqualLinear: identity after scaling
_PRELU = re.compile(r"(.*\.)?(input_layer|res_layer)\.2\.weight")  # pSp PReLU slopes


def _equalized(kind: str, key: str) -> bool:
    """Weights stored N(0, 1) and scaled at run time (StyleGAN2 equalized learning rate)."""
    if kind == "style2talker_style_a":
        if key.startswith(("generator.", "res.")):
            return ".norm" not in key  # AdaIN style maps are plain nn.Linear
        return key.startswith("refinement.") and not key.startswith(("refinement.inject_3dmm",
                                                                     "refinement.linear_3dmm"))
    return kind == "psp_encoder" and bool(re.fullmatch(r"styles\.\d+\.linear\.weight", key))


def random_value(kind: str, key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One random tensor in the torch layout of `kind` under torch name `key` (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if key.endswith((".blur.kernel", ".upsample.kernel")):
        return make_kernel((1, 3, 3, 1), 2)
    if key.endswith(".kernel"):
        return make_kernel((1, 3, 3, 1))
    if key == "embed_timestep.pe":
        return sinusoidal_table(shape[0], shape[-1])
    if key.endswith("running_mean") or key.endswith("noise.weight") or key == "latent_avg":
        return np.zeros(shape, np.float32)
    if key.endswith("running_var"):
        return np.ones(shape, np.float32)
    if key.endswith("modulation.bias"):
        return np.ones(shape, np.float32)
    if re.fullmatch(r".*norm2?\.style\.bias", key):  # AdaIN: gamma 1, beta 0
        half = shape[0] // 2
        return np.concatenate([np.ones(half, np.float32), np.zeros(shape[0] - half, np.float32)])
    if key.endswith("flow_out.0.weight"):  # LayerNorm2d affine scale
        return np.ones(shape, np.float32)
    if _PRELU.fullmatch(key):
        return np.full(shape, 0.25, np.float32)
    if key.endswith("weight") and len(shape) == 1:  # BatchNorm / LayerNorm scales
        return np.ones(shape, np.float32)
    if key.endswith("bias"):
        return np.zeros(shape, np.float32)
    normal = rng.standard_normal(shape, dtype=np.float32)
    if kind == "style2talker_style_a" and _COLOUR_TRANSFORM.fullmatch(key) and len(shape) == 2:
        return (np.eye(shape[0], shape[1], dtype=np.float32) * math.sqrt(shape[1]) + 0.01 * normal).astype(np.float32)
    if _MAPPING.fullmatch(key):
        return normal / np.float32(0.01)
    if _equalized(kind, key) or "noises.noise_" in key or key.endswith("input.input"):
        return normal
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return normal / np.float32(math.sqrt(max(fan_in, 1)))


def torch_shapes(kind: str, module: nn.Module) -> dict[str, tuple[int, ...]]:
    """{torch key: shape} of `module` under `kind`, without allocating the params."""
    abstract = abstract_variables(get_kind(kind), module)
    ghosts = jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), abstract)
    return {k: tuple(v.shape) for k, v in interop.to_torch(kind, ghosts).items()}


def random_state(kind: str, module: nn.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random torch-layout state dict for `module` (keys sorted, so a seed gives the same weights)."""
    shapes = torch_shapes(kind, module)
    return {k: np.ascontiguousarray(random_value(kind, k, shapes[k], rng), np.float32) for k in sorted(shapes)}


def _kind_config(component: str, cfg: Style2TalkerConfig) -> Any:
    """The `config` passed to `from_torch`: CLIP's head count and pSp's input size cannot be read off the shapes;
    the rest is inferred from them."""
    if component == "clip_text":
        return cfg.clip
    if component == "psp":
        return {"input_size": cfg.psp.input_size}
    return None


def random_models(cfg: Style2TalkerConfig, seed: int = 0, *, mesh: Mesh | None = None) -> Style2TalkerModels:
    """Every component with random weights (host numpy, see the module docstring) and a random Z+ style bank;
    replicated on `mesh` when one is given (`Style2TalkerModels.on_mesh`)."""
    modules = build_modules(cfg)
    params = {}
    for i, (component, kind) in enumerate(KINDS.items()):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        _, params[component] = interop.from_torch(kind, random_state(kind, modules[component], rng),
                                                  _kind_config(component, cfg))
    a = cfg.style_a
    bank_rng = np.random.default_rng(np.random.SeedSequence([seed, len(KINDS)]))
    bank = bank_rng.standard_normal((RANDOM_BANK_SIZE, a.n_latent, a.style_dim), dtype=np.float32)
    models = Style2TalkerModels(cfg, modules, params, bank, tuple(f"random_{k}" for k in range(RANDOM_BANK_SIZE)),
                                source=f"random init (seed {seed}): untrained weights, the frames show no face")
    return models if mesh is None else models.on_mesh(mesh)


# ------------------------------------------------------------------------------------------------ checkpoints


def find_checkpoint(directory: Path, component: str) -> Path:
    """The file holding `component` in `directory` (one of its accepted names and suffixes)."""
    found = [directory / f"{stem}{suffix}" for stem in FILE_STEMS[component] for suffix in SUFFIXES
             if (directory / f"{stem}{suffix}").is_file()]
    if not found:
        names = ", ".join(f"{s}{{{','.join(SUFFIXES)}}}" for s in FILE_STEMS[component][:2])
        raise ModelLoadError(f"{directory}: no {component} checkpoint ({KINDS[component]}); expected one of {names}")
    if len(found) > 1:
        raise ModelLoadError(f"{directory}: several {component} checkpoints ({', '.join(p.name for p in found)}); "
                             "keep one")
    return found[0]


def load_style_bank(path: str | os.PathLike, n_latent: int, style_dim: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """An `.npz` of named Z+ codes, each (n_latent, D) or (1, n_latent, D) -> ((K, n_latent, D), names)."""
    import zipfile

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            items = [(k, np.asarray(z[k], np.float32)) for k in z.files]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelLoadError(f"{path}: not a readable .npz of style codes ({e})") from None
    codes = []
    for name, code in items:
        code = code.reshape(code.shape[-2:]) if code.ndim == 3 and code.shape[0] == 1 else code
        if code.shape != (n_latent, style_dim) or not np.all(np.isfinite(code)):
            raise ModelLoadError(f"{path}: style {name!r} has shape {code.shape}; each code must be finite "
                                 f"(n_latent={n_latent}, {style_dim}) or (1, {n_latent}, {style_dim})")
        codes.append(code)
    if not codes:
        raise ModelLoadError(f"{path}: holds no style codes")
    return np.stack(codes), tuple(name for name, _ in items)


def _canonical(module: nn.Module) -> nn.Module:
    """A module with its channel table spelled out, so equal architectures compare equal."""
    if isinstance(module, AudioDrivenVToonify):
        return module.clone(channels=module.channel_list, channel_scale=1.0, refine_channels=module.refine_width,
                            parent=None)
    return module.clone(parent=None)


_MODULE_FIELDS = ("dtype", "param_dtype", "parent", "name")
STYLE_A_CONFIG_ONLY = ("motion_size", "warp_skip", "driving_mean", "driving_std")


def _section_from_module(component: str, module: nn.Module, cfg: Style2TalkerConfig) -> Style2TalkerConfig:
    """`cfg` with the section of `component` rewritten to describe the checkpoint's module."""
    if component == "clip_text":
        return dataclasses.replace(cfg, clip=module.config)
    if component == "style_e":
        return dataclasses.replace(cfg, style_e=module.config)
    if component == "audio2exp":
        return dataclasses.replace(cfg, audio2exp=Audio2ExpConfig(width_scale=float(module.width_scale)))
    if component == "psp":
        return dataclasses.replace(cfg, psp=PSPConfig(
            input_size=module.input_size, widths=tuple(module.widths), units=tuple(module.units),
            se_reduction=module.se_reduction, latent_avg=module.latent_avg_shape is not None))
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(StyleAConfig)}
    fields.update(channels=tuple(module.channel_list), channel_scale=1.0, refine_channels=module.refine_width)
    return dataclasses.replace(cfg, style_a=StyleAConfig(**fields))


def save_models(models: Style2TalkerModels, directory: str | os.PathLike, **provenance: Any) -> Path:
    """Write the bundle (`jaxtalk.interop.bundle`: params/ in orbax, the resolved config.yaml, manifest.json) and
    the art-style bank as `exstyle_code.npz`; keywords are recorded in the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    if models.style_bank is not None and distributed.is_main():  # multi-process: process 0 writes the files
        with atomic_path(directory / STYLE_BANK_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **dict(zip(models.style_names, models.style_bank)))
    if models.style_bank is not None:
        files.append(STYLE_BANK_FILE)
    provenance.setdefault("source", models.source)
    if not models.uses_parsing:  # read back by `_trained_with_parsing`
        provenance.setdefault("replacements", {"face parsing (BiSeNet)": "zeros"})
    return bundle.write(directory, models.config, models.params, system="style2talker", files=files, **provenance)


def _load_bundle(directory: Path, cfg: Style2TalkerConfig | None, mesh: Mesh | None) -> Style2TalkerModels:
    """An orbax-layout bundle: its config (or `cfg`, whose model sections must match the stored params), the
    params restored straight into their replicated shardings when a mesh is given."""
    cfg = cfg or config_lib.load(directory / CONFIG_FILE, cls=Style2TalkerConfig)
    modules = build_modules(cfg)
    target = abstract_params(cfg, modules, mesh)
    try:
        params = bundle.restore(directory, target)
    except bundle.BundleError as e:
        raise ModelLoadError(str(e)) from None
    bank, names = None, ()
    if (directory / STYLE_BANK_FILE).is_file():
        bank, names = load_style_bank(directory / STYLE_BANK_FILE, cfg.style_a.n_latent, cfg.style_a.style_dim)
    shardings = None if mesh is None else jax.tree.map(lambda s: s.sharding, target)
    return Style2TalkerModels(cfg, modules, dict(params), bank, names, source=f"bundle {directory}",
                              uses_parsing=_trained_with_parsing(directory), mesh=mesh, shardings=shardings)


def load_models(directory: str | os.PathLike, cfg: Style2TalkerConfig | None = None, *,
                mesh: Mesh | None = None) -> Style2TalkerModels:
    """Read every component from `directory`: a bundle (orbax layout), or a folder of torch-layout checkpoints
    (see the module docstring; a bundle manifest with layout "torch-safetensors" describes such a folder). For the
    torch layout the architecture is the checkpoints': where the given config (or the directory's `config.yaml`,
    else the paper preset) describes the same network it is kept as written, otherwise its section is replaced
    by the sizes read off the checkpoint. `mesh`: the params replicated on it (`Style2TalkerModels.on_mesh`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: checkpoint directory not found; pass the folder holding the "
                             f"{', '.join(KINDS)} checkpoints")
    if bundle.claims_bundle(directory):  # else a folder of torch-layout files written before the bundle format
        try:
            manifest = bundle.read_manifest(directory, "style2talker")
        except bundle.BundleError as e:
            raise ModelLoadError(str(e)) from None
        if manifest["layout"] == "orbax":
            return _load_bundle(directory, cfg, mesh)
    if cfg is None:
        cfg_path = directory / CONFIG_FILE
        cfg = config_lib.load(cfg_path if cfg_path.is_file() else "style2talker_paper", cls=Style2TalkerConfig)
    paths = {c: find_checkpoint(directory, c) for c in KINDS}
    params: dict[str, Any] = {}
    loaded: dict[str, nn.Module] = {}
    for component, kind in KINDS.items():
        try:
            loaded[component], params[component] = interop.from_torch(kind, paths[component],
                                                                      _kind_config(component, cfg))
        except (interop.CheckpointError, ValueError, TypeError) as e:
            raise ModelLoadError(f"{paths[component]}: cannot be read as {component} ({kind}): {e}") from None
    configured = build_modules(cfg)
    # settings the weights cannot show (how the motion generator's inputs are prepared) come from the config
    loaded["style_a"] = loaded["style_a"].clone(
        **{f: getattr(configured["style_a"], f) for f in STYLE_A_CONFIG_ONLY})
    for component, module in loaded.items():
        if _canonical(module).clone(dtype=jnp.float32) != _canonical(configured[component]).clone(dtype=jnp.float32):
            cfg = _section_from_module(component, module, cfg)
    try:
        cfg.validate()
    except config_lib.ConfigError as e:
        raise ModelLoadError(f"{directory}: the checkpoints do not fit together: {e}") from None
    modules = build_modules(cfg)
    bank, names = None, ()
    if (directory / STYLE_BANK_FILE).is_file():
        bank, names = load_style_bank(directory / STYLE_BANK_FILE, cfg.style_a.n_latent, cfg.style_a.style_dim)
    models = Style2TalkerModels(cfg, modules, params, bank, names, source=f"checkpoints in {directory}",
                                uses_parsing=_trained_with_parsing(directory))
    return models if mesh is None else models.on_mesh(mesh)


def with_text_encoder(models: Style2TalkerModels, source: str | os.PathLike) -> Style2TalkerModels:
    """`models` with the CLIP text tower replaced by `source`: a weights file, a folder in Hugging Face layout
    (transformers `CLIPTextModel[WithProjection].save_pretrained`: config.json + model.safetensors or a
    weights-only pytorch_model.bin), or a model id in the local Hugging Face cache. Its pooled feature must have
    the width Style-E was trained with."""
    import json

    from jaxtalk.interop.hf_cache import resolve_pretrained

    path = resolve_pretrained(source, "--text-encoder")
    config: Any = models.config.clip
    if path.is_dir():
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else config
        files = [path / f"{stem}{suffix}" for stem in ("model", "pytorch_model") for suffix in SUFFIXES
                 if (path / f"{stem}{suffix}").is_file()]
        if not files:
            raise ModelLoadError(f"--text-encoder {path}: no model / pytorch_model weights file in the folder")
        path = files[0]
    try:
        module, params = interop.from_torch("clip_text", path, config)
    except (interop.CheckpointError, ValueError, TypeError) as e:
        raise ModelLoadError(f"--text-encoder {path}: cannot be read as a CLIP text tower: {e}") from None
    cfg = _section_from_module("clip_text", module, models.config)
    try:
        cfg.validate()
    except config_lib.ConfigError as e:
        raise ModelLoadError(f"--text-encoder {source}: does not fit these weights: {e}") from None
    return dataclasses.replace(models, config=cfg, modules={**models.modules, "clip_text": build_modules(cfg)[
        "clip_text"]}, params={**models.params, "clip_text": params},
        source=f"{models.source}; text encoder {source}")


def _trained_with_parsing(directory: Path) -> bool:
    """False when the folder's manifest.json (written by train/style2talker.py) says the face-parsing input was
    replaced by zeros in training; original / converted checkpoints (no manifest) were trained with BiSeNet maps."""
    import json

    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return True
    return manifest.get("replacements", {}).get("face parsing (BiSeNet)") != "zeros"


def save_checkpoints(models: Style2TalkerModels, directory: str | os.PathLike) -> dict[str, Path]:
    """Write every component as `<component>.safetensors` in its kind's canonical torch layout, the style bank
    as `exstyle_code.npz` and the config as `config.yaml` (each file atomic). `load_models` reads it back."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for component, kind in KINDS.items():
        state = {k: np.ascontiguousarray(v) for k, v in interop.to_torch(kind, models.params[component]).items()}
        path = directory / f"{component}.safetensors"
        with atomic_path(path) as tmp:
            save_file(state, str(tmp))
        written[component] = path
    if models.style_bank is not None:
        path = directory / STYLE_BANK_FILE
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **dict(zip(models.style_names, models.style_bank)))
        written["style_bank"] = path
    with atomic_path(directory / CONFIG_FILE) as tmp:
        config_lib.save(models.config, tmp)
    written["config"] = directory / CONFIG_FILE
    return written


