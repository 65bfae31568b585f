"""`Style2TalkerModels`: the Style2Talker components (Flax modules + params) bundled for generation. Getting
weights in is `jaxtalk.style2talker.loading`:

    models = random_models(cfg, seed=0)                 # random weights at a config (tiny preset: tests, demo)
    models = load_models("ckpt/style2talker")           # PyTorch checkpoints, one file per component
    save_checkpoints(models, "ckpt/style2talker")       # the inverse (safetensors in the original layouts)

Components (each read strictly through its interop kind): `clip_text` (`clip_text`, CLIP ViT-B/32 text tower),
`style_e` (`style2talker_style_e`), `audio2exp` (`sadtalker_audio2exp`, variables with batch statistics), `psp`
(`psp_encoder`, the identity's Z+ code; variables with batch statistics) and `style_a` (`style2talker_style_a`,
Audio_Driven_VToonify). Plus an optional art-style bank: Z+ codes (K, n_latent, D) as the original's
`exstyle_code.npy` holds them (`models.style_bank`, names in `models.style_names`).

Checkpoint directory: `<component>.{safetensors,pt,pth,bin,ckpt}` (the original file names are accepted too:
`ViT-B-32` / `clip`, `checkpoint` (Style-E), `auido2exp_00300-model` / `audio2exp`, `encoder` (pSp),
`Audio_driven_vtoonofy` / `vtoonify`), an optional `config.yaml` (a jaxtalk style2talker config; the model
sections are then checked against, or taken from, the checkpoint shapes) and an optional `exstyle_code.npz`
(name -> Z+ code (1 or none, n_latent, D)). The original `exstyle_code.npy` is a pickled dict, which jaxtalk does
not unpickle: re-save it with `np.savez("exstyle_code.npz", **np.load("exstyle_code.npy", allow_pickle=True).item())`
in an environment you trust.

Random weights are drawn on the host (numpy) in the torch layouts with per-layer rules that follow the original
initialisers (equalized-LR weights N(0, 1), modulation biases 1, AdaIN biases [1, 0], identity colour transforms,
exact FIR kernels and sinusoidal tables, BatchNorm at identity statistics, other weights N(0, 1/fan_in)) and then
imported through the same strict interop path as real checkpoints. A jitted Flax init of the ~600 Style-A leaves
takes minutes to compile on XLA:CPU; this takes seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk._moved import forward
from jaxtalk.backbones.clip_text import CLIPTextEncoder
from jaxtalk.style2talker.audio2exp import SimpleWrapperV2
from jaxtalk.style2talker.config import Style2TalkerConfig
from jaxtalk.style2talker.psp import GradualStyleEncoder
from jaxtalk.style2talker.style_a import AudioDrivenVToonify
from jaxtalk.style2talker.style_e import StyleE

KINDS: dict[str, str] = {
    "clip_text": "clip_text",
    "style_e": "style2talker_style_e",
    "audio2exp": "sadtalker_audio2exp",
    "psp": "psp_encoder",
    "style_a": "style2talker_style_a",
}
FILE_STEMS: dict[str, tuple[str, ...]] = {
    "clip_text": ("clip_text", "clip", "ViT-B-32"),
    "style_e": ("style_e", "checkpoint"),
    "audio2exp": ("audio2exp", "auido2exp_00300-model"),
    "psp": ("psp", "encoder"),
    "style_a": ("style_a", "Audio_driven_vtoonofy", "vtoonify"),
}
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
STYLE_BANK_FILE = "exstyle_code.npz"
CONFIG_FILE = "config.yaml"
RANDOM_BANK_SIZE = 4


class ModelLoadError(ValueError):
    """A checkpoint directory that cannot be loaded into the configured models; the message says which file."""


def _dtype(name: str) -> Any:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def build_modules(cfg: Style2TalkerConfig) -> dict[str, nn.Module]:
    """The configured Flax modules (no params)."""
    kw = dict(dtype=_dtype(cfg.dtype), param_dtype=jnp.float32)
    a, p = cfg.style_a, cfg.psp
    return {
        "clip_text": CLIPTextEncoder(cfg.clip, **kw),
        "style_e": StyleE(cfg.style_e, **kw),
        "audio2exp": SimpleWrapperV2(width_scale=cfg.audio2exp.width_scale, **kw),
        "psp": GradualStyleEncoder(
            input_size=p.input_size, widths=tuple(p.widths), units=tuple(p.units), style_dim=a.style_dim,
            n_styles=a.n_latent, se_reduction=p.se_reduction,
            latent_avg_shape=(a.n_latent, a.style_dim) if p.latent_avg else None, **kw),
        "style_a": AudioDrivenVToonify(**a.module_kwargs(), **kw),
    }


@dataclasses.dataclass
class Style2TalkerModels:
    """Modules, params per component, the art-style bank (Z+ codes) and where the weights came from."""

    config: Style2TalkerConfig
    modules: dict[str, nn.Module]
    params: dict[str, Any]
    style_bank: np.ndarray | None = None
    style_names: tuple[str, ...] = ()
    source: str = "random init"
    uses_parsing: bool = True  # False for weights trained with zeros in the content encoder's parsing channels

    # The components by name, as `SVPModels` names its own (a typo is an AttributeError).
    @property
    def clip_text(self) -> nn.Module:
        return self.modules["clip_text"]

    @property
    def style_e(self) -> nn.Module:
        return self.modules["style_e"]

    @property
    def audio2exp(self) -> nn.Module:
        return self.modules["audio2exp"]

    @property
    def psp(self) -> nn.Module:
        return self.modules["psp"]

    @property
    def style_a(self) -> nn.Module:
        return self.modules["style_a"]

    @property
    def random_weights(self) -> bool:
        return self.source.startswith("random")

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))


def exstyle_from_bank(models: Style2TalkerModels, index: int) -> np.ndarray:
    """Z+ code (n_latent, D) number `index` of the model's style bank."""
    if models.style_bank is None:
        raise ValueError(f"these models have no style bank ({STYLE_BANK_FILE}); pass an art style code file "
                         "(a W+ array (n_latent, D) in .npy) instead of an index")
    k = models.style_bank.shape[0]
    if not 0 <= index < k:
        raise ValueError(f"style index {index} is out of range: the style bank holds {k} styles (0..{k - 1}: "
                         f"{', '.join(models.style_names[:8])}{', ...' if k > 8 else ''})")
    return models.style_bank[index]


# Every way weights get in (random init through the interop kinds, original checkpoint folders, the art-style bank)
# and the checkpoint writer live in `jaxtalk.style2talker.loading`, the only Style2Talker module that imports
# `interop`; these names stay importable from here for code written before the move.
_LOADING_NAMES = ("random_value", "torch_shapes", "random_state", "random_models", "find_checkpoint",
                  "load_style_bank", "load_models", "save_checkpoints", "save_models")

__getattr__ = forward(__name__, "jaxtalk.style2talker.loading", _LOADING_NAMES)
