"""`Style2TalkerModels`: the Style2Talker components (Flax modules + params) bundled for generation. Getting
weights in is `jaxtalk.style2talker.loading`:

    models = random_models(cfg, seed=0, mesh=mesh)      # random weights at a config (tiny preset: tests, demo)
    models.on_mesh(mesh)                                # the same weights, replicated on every device of the mesh
    models = load_models("ckpt/style2talker")           # a bundle, or PyTorch checkpoints one file per component
    save_checkpoints(models, "ckpt/style2talker")       # the original layouts (safetensors per component)

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
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtalk._moved import forward
from jaxtalk.backbones.clip_text import CLIPTextEncoder
from jaxtalk.compile_cache import CompileCache
from jaxtalk.style2talker.audio2exp import MEL_STEP_SIZE, NUM_MELS, SimpleWrapperV2
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


def init_functions(cfg: Style2TalkerConfig, modules: Mapping[str, nn.Module]) -> dict[str, Callable[[jax.Array], Any]]:
    """`rng -> variables` per component, with the smallest inputs that create every param (the inputs the
    components' interop kinds init with)."""
    e, p, a = cfg.style_e, modules["psp"], modules["style_a"]
    window = lambda d: jnp.zeros((1, e.window, d))
    motion = 2 ** a.motion_encoder_layers
    return {
        "clip_text": lambda r: modules["clip_text"].init(r, jnp.zeros((1, cfg.clip.max_length), jnp.int32)),
        "style_e": lambda r: modules["style_e"].init(r, window(e.nfeats), jnp.zeros((1,), jnp.int32),
                                                     window(e.sparse_dim), window(e.text_dim)),
        "audio2exp": lambda r: modules["audio2exp"].init(r, jnp.zeros((1, NUM_MELS, MEL_STEP_SIZE)),
                                                         jnp.zeros((1, 64)), jnp.zeros((1,))),
        "psp": lambda r: p.init(r, jnp.zeros((1, p.input_size, p.input_size, p.input_nc))),
        "style_a": lambda r: a.init(
            r, jnp.zeros((1, a.in_size, a.in_size, a.img_channels)),
            jnp.zeros((1, cfg.style_a.n_latent, a.style_dim)), jnp.zeros((1, motion, motion, a.img_channels)),
            jnp.zeros((1, 7 + 6 * a.mapping_layers, a.coeff_nc))),
    }


@dataclasses.dataclass
class Style2TalkerModels:
    """Modules, params per component, the art-style bank (Z+ codes), where the weights came from, and (after
    `on_mesh`) the mesh the params are replicated on with their shardings."""

    config: Style2TalkerConfig
    modules: dict[str, nn.Module]
    params: dict[str, Any]
    style_bank: np.ndarray | None = None
    style_names: tuple[str, ...] = ()
    source: str = "random init"
    uses_parsing: bool = True  # False for weights trained with zeros in the content encoder's parsing channels
    mesh: Mesh | None = None
    shardings: dict[str, Any] | None = None

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

    def on_mesh(self, mesh: Mesh) -> Style2TalkerModels:
        """The same weights placed on `mesh`, replicated on every device. Style2Talker's components are small
        (Style-A, the largest, is ~0.1 B params at the paper size), so unlike SVP's fsdp / tensor shardings they
        are not split: the pipeline splits the frame batches over the mesh instead."""
        placed = {name: _place(self.params[name], mesh) for name in self.params}
        return dataclasses.replace(self, params={k: v[0] for k, v in placed.items()}, mesh=mesh,
                                   shardings={k: v[1] for k, v in placed.items()})


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


# ------------------------------------------------------------------------------------------------ construction


def _place(variables: Any, mesh: Mesh | None) -> tuple[Any, Any]:
    """Host params -> (params, shardings): replicated on `mesh` when one is given."""
    if mesh is None:
        return variables, None
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = jax.tree.map(lambda _: replicated, variables)
    return jax.device_put(variables, shardings), shardings


# `jax.eval_shape` of each component's init, per (component, module): tracing Style-A's init takes seconds.
_SHAPES = CompileCache("style2talker.models.shapes", maxsize=32)


def _variable_shapes(name: str, module: nn.Module, init_fn: Callable) -> Any:
    """A component's variables as ShapeDtypeStructs: its 'params' collection, or every collection when it has
    more (audio2exp and pSp keep BatchNorm statistics), as the interop kinds return them."""
    key = (name, module)
    if key not in _SHAPES:
        variables = nn.meta.unbox(dict(jax.eval_shape(init_fn, jax.random.key(0))))
        _SHAPES[key] = variables["params"] if set(variables) == {"params"} else variables
    return _SHAPES[key]


def abstract_params(cfg: Style2TalkerConfig, modules: Mapping[str, nn.Module] | None = None,
                    mesh: Mesh | None = None) -> dict[str, Any]:
    """ShapeDtypeStructs of every component's params, without drawing weights (replicated shardings when a mesh
    is given, as `Style2TalkerModels.on_mesh` places them)."""
    modules = build_modules(cfg) if modules is None else modules
    replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    out = {}
    for name, fn in init_functions(cfg, modules).items():
        shapes = _variable_shapes(name, modules[name], fn)
        out[name] = shapes if mesh is None else jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
    return out


# Every way weights get in (random init through the interop kinds, original checkpoint folders, the art-style bank)
# and the checkpoint writer live in `jaxtalk.style2talker.loading`, the only Style2Talker module that imports
# `interop`; these names stay importable from here for code written before the move.
_LOADING_NAMES = ("random_value", "torch_shapes", "random_state", "random_models", "find_checkpoint",
                  "load_style_bank", "load_models", "save_checkpoints", "save_models")

__getattr__ = forward(__name__, "jaxtalk.style2talker.loading", _LOADING_NAMES)
