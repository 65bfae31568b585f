"""`SVPModels`: the SVP / V-Express components (Flax modules + params) bundled for sampling.

    models = build_models(cfg, seed=0, mesh=mesh)          # random init, each param created on its shards
    models.on_mesh(mesh)                                   # the same weights, placed with their logical shardings

Every way weights get in from files is in `jaxtalk.svp.loading` (load_models, from_vexpress, save_models, ...).

Components (param tree keys): `unet` (SVPUNet), `reference_net` (the 2D UNet that writes the reference bank),
`vae`, `kps_guider`, `audio_projection`, `audio_encoder` (wav2vec2 or Whisper, per `config.audio.encoder`) and,
when style is enabled, `style_extractor`. `models.source` says where the weights came from (random or which files).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from jaxtalk import parallel
from jaxtalk._moved import forward
from jaxtalk.backbones.sd_vae import AutoencoderKL
from jaxtalk.backbones.wav2vec2 import Wav2Vec2Model, normalize_waveform
from jaxtalk.backbones.whisper import WhisperEncoder
from jaxtalk.compile_cache import CompileCache
from jaxtalk.svp.audio_projection import interpolate_linear
from jaxtalk.svp.config import SVPConfig
from jaxtalk.svp.style_extractor import ProbabilisticStyleExtractor
from jaxtalk.svp.video_unet import SVPUNet

COMPONENTS = ("unet", "reference_net", "vae", "kps_guider", "audio_projection", "audio_encoder", "style_extractor")
VEXPRESS_FILES = ("denoising_unet", "motion_module", "reference_net", "v_kps_guider", "audio_projection")
_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
AUDIO_FPS = 50


class ModelLoadError(ValueError):
    """A checkpoint directory that cannot be loaded into the configured models; the message says which file."""


@dataclasses.dataclass(frozen=True)
class StyleGaussian:
    """A style prior N(mu, var): mu and var (K, d_s) float32."""

    mu: np.ndarray
    var: np.ndarray


def _dtype(name: str) -> Any:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def reference_unet_config(cfg: SVPConfig) -> Any:
    """The ReferenceNet's 2D UNet config: the denoising UNet's, without `conv_norm_out` (V-Express)."""
    return dataclasses.replace(cfg.unet.unet, use_conv_norm_out=False)


def build_modules(cfg: SVPConfig) -> dict[str, nn.Module]:
    """The configured Flax modules (no params)."""
    from jaxtalk.svp.reference_net import ReferenceNet

    kw = dict(dtype=_dtype(cfg.dtype), param_dtype=jnp.float32)
    a = cfg.audio
    modules: dict[str, nn.Module] = {
        "unet": SVPUNet(cfg.unet, attention_implementation=cfg.attention, query_chunk_size=cfg.attention_chunk, **kw),
        "reference_net": ReferenceNet(reference_unet_config(cfg), attention_implementation=cfg.attention,
                                      query_chunk_size=cfg.attention_chunk, **kw),
        "vae": AutoencoderKL(cfg.vae, implementation=cfg.attention, query_chunk_size=cfg.attention_chunk, **kw),
        "kps_guider": cfg.kps_guider.module(**kw),
        "audio_projection": cfg.audio_projection.module(**kw),
        "audio_encoder": Wav2Vec2Model(a.wav2vec2) if a.encoder == "wav2vec2" else WhisperEncoder(a.whisper),
    }
    if cfg.style.enabled:
        modules["style_extractor"] = ProbabilisticStyleExtractor(cfg.style.extractor, cfg.attention)
    return modules


def init_functions(cfg: SVPConfig, modules: Mapping[str, nn.Module]) -> dict[str, Callable[[jax.Array], Any]]:
    """`rng -> boxed variables` per component, with the smallest inputs that create every param."""
    f = cfg.vae_scale_factor
    u = cfg.unet.unet
    s = 2 ** (len(u.block_out_channels) - 1)
    ap = cfg.audio_projection
    ex = cfg.style.extractor
    fns = {
        "unet": lambda r: modules["unet"].init(r, **modules["unet"].init_inputs()),
        "reference_net": lambda r: modules["reference_net"].init(
            r, jnp.zeros((1, s, s, u.in_channels)), jnp.zeros((1,)), jnp.zeros((1, 1, u.cross_attention_dim))),
        "vae": lambda r: modules["vae"].init(r, jnp.zeros((1, f, f, cfg.vae.in_channels))),
        "kps_guider": lambda r: modules["kps_guider"].init(r, jnp.zeros((1, 1, f, f, cfg.kps_guider.conditioning_channels))),
        "audio_projection": lambda r: modules["audio_projection"].init(r, jnp.zeros((1, ap.window, ap.embedding_dim))),
        "audio_encoder": lambda r: modules["audio_encoder"].init_params(r),
    }
    if "style_extractor" in modules:
        fns["style_extractor"] = lambda r: modules["style_extractor"].init(
            r, jnp.zeros((1, 2, ex.exp_dim)), jnp.zeros((1, 2, ex.audio_dim)))
    return fns


@dataclasses.dataclass
class SVPModels:
    """Modules, params (`{component: params}`), their shardings when built on a mesh, and provenance."""

    config: SVPConfig
    modules: dict[str, nn.Module]
    params: dict[str, Any]
    mesh: Mesh | None = None
    shardings: dict[str, Any] | None = None
    source: str = "random init"

    # The components by name (None: not in this bundle, e.g. no style extractor in a V-Express bundle).
    @property
    def unet(self) -> nn.Module | None:
        return self.modules.get("unet")

    @property
    def reference_net(self) -> nn.Module | None:
        return self.modules.get("reference_net")

    @property
    def vae(self) -> nn.Module | None:
        return self.modules.get("vae")

    @property
    def kps_guider(self) -> nn.Module | None:
        return self.modules.get("kps_guider")

    @property
    def audio_projection(self) -> nn.Module | None:
        return self.modules.get("audio_projection")

    @property
    def audio_encoder(self) -> nn.Module | None:
        return self.modules.get("audio_encoder")

    @property
    def style_extractor(self) -> nn.Module | None:
        return self.modules.get("style_extractor")

    @property
    def vae_scale_factor(self) -> int:
        return self.config.vae_scale_factor

    @property
    def reference_context_dim(self) -> int:
        return self.config.unet.unet.cross_attention_dim

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))

    def on_mesh(self, mesh: Mesh) -> SVPModels:
        """The same weights placed on `mesh` with their logical (fsdp / tensor) shardings."""
        fns = init_functions(self.config, self.modules)
        placed = {name: _place(jax.device_get(self.params[name]), mesh, self.config, name, fns[name])
                  for name in self.params}
        return dataclasses.replace(self, params={k: v[0] for k, v in placed.items()}, mesh=mesh,
                                   shardings={k: v[1] for k, v in placed.items()})

    def _jit(self, key: Any, fn: Callable) -> Callable:
        """`jax.jit(fn)` shared by every bundle with the same modules (fn takes the params as an argument)."""
        full = (_model_key(self.config), key)
        if full not in _JITTED:
            _JITTED[full] = jax.jit(fn)
        return _JITTED[full]

    def audio_states(self, audio: np.ndarray) -> np.ndarray:
        """16 kHz mono audio -> encoder features at 50 Hz: (T, D) for wav2vec2, (T, L+1, D) for Whisper."""
        audio = np.asarray(audio, np.float32)
        a = self.config.audio
        enc, params = self.modules["audio_encoder"], self.params["audio_encoder"]
        if a.encoder == "wav2vec2":
            x = normalize_waveform(audio) if a.normalize else audio
            fn = self._jit("wav2vec2", lambda p, x: enc.apply({"params": p}, x, output="last_hidden_state"))
            return np.asarray(fn(params, x[None]), np.float32)[0]
        from jaxtalk.backbones.audio_features import whisper_audio_states

        return whisper_audio_states(enc, params, audio, final_layer_norm=a.whisper_final_layer_norm)

    def audio_features(self, audio: np.ndarray) -> np.ndarray:
        """(T, D) features for the audio projection (Whisper: the L+1 states concatenated per 20 ms frame)."""
        states = self.audio_states(audio)
        return states.reshape(states.shape[0], -1)

    def style_prior(self, expression: np.ndarray, audio: np.ndarray, fps: float) -> StyleGaussian:
        """The style extractor's Gaussian for a style clip: 3DMM expression (N, 64) and its audio at `fps`.

        The audio's Whisper states over the clip's N / fps seconds are resampled linearly to one vector per
        frame; clips longer than the extractor's position table are cut to their middle `pos_len` frames.
        """
        if self.modules.get("style_extractor") is None:
            raise ValueError("this config has style disabled (style.enabled=false); no style extractor")
        ex = self.config.style.extractor
        expression = np.asarray(expression, np.float32)
        if expression.ndim != 2 or expression.shape[1] != ex.exp_dim or expression.shape[0] < 1:
            raise ValueError(f"style clip expression must be (frames, {ex.exp_dim}), got {expression.shape}")
        n = expression.shape[0]
        features = self.audio_features(audio)
        used = max(1, min(features.shape[0], int(round(n * AUDIO_FPS / fps))))
        per_frame = np.asarray(interpolate_linear(jnp.asarray(features[:used]), n))
        if n > ex.pos_len:
            start = (n - ex.pos_len) // 2
            expression, per_frame = expression[start:start + ex.pos_len], per_frame[start:start + ex.pos_len]
        module = self.modules["style_extractor"]
        fn = self._jit(("style", expression.shape), lambda p, e, a: module.apply({"params": p}, e, a))
        prior = fn(self.params["style_extractor"], expression[None], per_frame[None])
        return StyleGaussian(np.asarray(prior.mu[0], np.float32), np.asarray(prior.var[0], np.float32))


# ------------------------------------------------------------------------------------------------ construction

def _boxed_shapes(cfg: SVPConfig, name: str, init_fn: Callable) -> Any:
    """`jax.eval_shape` of a component's init (boxed with its logical names), cached per model config."""
    key = (_model_key(cfg), name)
    if key not in _SHAPES:
        _SHAPES[key] = jax.eval_shape(init_fn, jax.random.key(0))
    return _SHAPES[key]


def _place(variables: Any, mesh: Mesh | None, cfg: SVPConfig, name: str, init_fn: Callable) -> tuple[Any, Any]:
    """Host params -> (params, shardings): put on the component's logical shardings when a mesh is given."""
    if mesh is None:
        return variables, None
    with nn.logical_axis_rules(parallel.LOGICAL_RULES):
        shardings = parallel.logical_to_shardings(_boxed_shapes(cfg, name, init_fn), mesh)["params"]
    return parallel.shard_params(variables, shardings), shardings


# Jitted random inits, one per (model config, component), and other jitted helpers, reused in the process.
_INITS = CompileCache("svp.models.inits", maxsize=64)
_JITTED = CompileCache("svp.models.jitted", maxsize=64)
_SHAPES = CompileCache("svp.models.shapes", maxsize=64)
INIT_PRNG = "unsafe_rbg"


def _init_key(seed: int) -> jax.Array:
    """Random init draws from the `unsafe_rbg` generator: its init programs compile several times faster on CPU
    than threefry's (hundreds of small random kernels). Values depend on the seed (and, under a mesh, may depend
    on the layout); checkpoints are what make weights reproducible."""
    return jax.random.key(seed, impl=INIT_PRNG)


def _reference_from_unet(unet_params: Any, cfg: SVPConfig, reference_fn: Callable) -> Any | None:
    """The ReferenceNet's params taken from the denoising UNet's 2D weights (same names and shapes), or None if
    the two trees do not line up. Works on arrays and on ShapeDtypeStructs."""
    boxed = _boxed_shapes(cfg, "reference_net", reference_fn)
    wanted = traverse_util.flatten_dict(nn.meta.unbox(boxed)["params"])
    source = traverse_util.flatten_dict(unet_params)
    if any(k not in source or source[k].shape != v.shape for k, v in wanted.items()):
        return None
    return traverse_util.unflatten_dict({k: source[k] for k in wanted})


def build_models(cfg: SVPConfig, *, seed: int = 0, mesh: Mesh | None = None) -> SVPModels:
    """Random init of every component (directly into its shardings when `mesh` is given).

    The ReferenceNet starts as a copy of the denoising UNet's 2D weights, as in V-Express / SVP training where
    both start from the same SD1.5 UNet (and it halves the init work).
    """
    modules = build_modules(cfg)
    fns = init_functions(cfg, modules)
    base = _init_key(seed)
    rngs = {name: jax.random.fold_in(base, i) for i, name in enumerate(fns)}
    unet_shapes = nn.meta.unbox(_boxed_shapes(cfg, "unet", fns["unet"]))["params"]
    copy_reference = _reference_from_unet(unet_shapes, cfg, fns["reference_net"]) is not None
    names = [n for n in fns if not (copy_reference and n == "reference_net")]
    params: dict[str, Any] = {}
    shardings: dict[str, Any] = {}
    if mesh is not None:
        for name in names:
            variables, sh = parallel.init_sharded(fns[name], rngs[name], mesh)
            params[name], shardings[name] = variables["params"], sh["params"]
    else:
        params = _random_init(cfg, fns, names, seed)
    if copy_reference:
        ref = jax.tree.map(lambda x: jnp.array(x, copy=True), _reference_from_unet(params["unet"], cfg,
                                                                                   fns["reference_net"]))
        params["reference_net"] = ref
        if mesh is not None:
            shardings["reference_net"] = jax.tree.map(lambda x: x.sharding, ref)
    return SVPModels(cfg, modules, {k: params[k] for k in fns}, mesh,
                     {k: shardings[k] for k in fns} if mesh is not None else None,
                     source=f"random init (seed {seed})")


def _random_init(cfg: SVPConfig, fns: Mapping[str, Callable], names: Sequence[str], seed: int) -> dict[str, Any]:
    """Host random init of some components; each init program is compiled once per process (side by side)."""
    base = _init_key(seed)
    rngs = {name: jax.random.fold_in(base, i) for i, name in enumerate(fns)}
    key = _model_key(cfg)
    todo = [name for name in names if (key, name) not in _INITS]
    if todo:  # trace here, compile side by side (XLA compiles outside the GIL)
        lowered = {name: jax.jit(lambda r, fn=fns[name]: nn.meta.unbox(fn(r))["params"]).lower(rngs[name])
                   for name in todo}
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            compiled = dict(zip(todo, pool.map(lambda low: low.compile(), lowered.values())))
        _INITS.update({(key, name): c for name, c in compiled.items()})
    return {name: _INITS[key, name](rngs[name]) for name in names}


def _model_key(cfg: SVPConfig) -> tuple:
    """The config sections that define the modules (not seeds, sampling or output settings)."""
    style = cfg.style.extractor if cfg.style.enabled else None
    return (cfg.unet, cfg.vae, cfg.kps_guider, cfg.audio_projection, cfg.audio, style, cfg.dtype, cfg.attention,
            cfg.attention_chunk)


def abstract_params(cfg: SVPConfig, modules: Mapping[str, nn.Module] | None = None,
                    mesh: Mesh | None = None) -> dict[str, Any]:
    """ShapeDtypeStructs of every component's params (with shardings when a mesh is given)."""
    modules = build_modules(cfg) if modules is None else modules
    out = {}
    for name, fn in init_functions(cfg, modules).items():
        with nn.logical_axis_rules(parallel.LOGICAL_RULES):
            boxed = _boxed_shapes(cfg, name, fn)
            shardings = parallel.logical_to_shardings(boxed, mesh)["params"] if mesh is not None else None
        shapes = nn.meta.unbox(boxed)["params"]
        if shardings is None:
            out[name] = shapes
        else:
            out[name] = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                     shapes, shardings)
    return out


# Loading (converted / trained bundles, V-Express folders, per-kind parts) lives in `jaxtalk.svp.loading`, the only
# SVP module that imports `interop`; these names stay importable from here for code written before the move.
_LOADING_NAMES = ("save_models", "is_converted_checkpoint", "load_models", "KIND_COMPONENTS", "load_converted_parts",
                  "is_converted_parts", "is_vexpress_folder", "from_vexpress")

__getattr__ = forward(__name__, "jaxtalk.svp.loading", _LOADING_NAMES)
