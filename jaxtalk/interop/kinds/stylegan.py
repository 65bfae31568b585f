"""StyleGAN2 (rosinality layout) and DualStyleGAN checkpoints.

Kinds
  `stylegan2`    rosinality `Generator` state dict: `style.{1..n_mlp}.*`, `input.input`, `conv1.*`, `to_rgb1.*`,
                 `convs.{j}.*`, `to_rgbs.{k}.*`, `noises.noise_{i}`. Training checkpoints
                 `{'g_ema': ..., 'g': ..., 'd': ..., 'g_optim': ...}` are accepted: the EMA generator `g_ema`
                 is the one that is imported (it is what every sampling script uses).
  `dualstylegan` DualStyleGAN state dict: `generator.*` (a `stylegan2` generator), `style.*` (T_s), `res.{i}.*`
                 (ModRes blocks and T_c linears); `g_ema` is selected likewise.

config: the constructor kwargs of the original class — stylegan2: size, style_dim, n_mlp, channel_multiplier
(+ blur_kernel, lr_mlp); dualstylegan adds res_index (`twoRes` is accepted and unused, as in the original) —
plus `channels` ({res: ch} or a list for 4..size) or `channel_scale` for scaled tables. None: inferred from
the tensor shapes (the channel table is read off the weights; lr_mlp 0.01, the original default).

Layout rules (shared by every kind built from these layers: see `STYLEGAN_LEAF_OVERRIDES`, `stylegan_torch_key`):
the modulated-conv `weight` (1, out, in, k, k) <-> `kernel` (1, k, k, in, out); 4-D biases and buffers in
NCHW (ToRGB bias (1,3,1,1), `input.input`, `noises.noise_i`) <-> NHWC; FIR buffers `*.kernel` <-> the
non-trainable `fir_kernel` params.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.interop import keys as keymap
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import ConversionError, Kind, register
from jaxtalk.nn.upfirdn2d import make_kernel
from jaxtalk.style2talker.dualstylegan import DualStyleGAN
from jaxtalk.style2talker.stylegan2 import Generator, StyleGAN2Config, resolve_channels


def stylegan_torch_key(path: tuple[str, ...], collection: str = "params") -> str:
    """Generic key rule, with the FIR buffers (`fir_kernel` params) named `kernel` as in torch."""
    key = keymap.default_torch_key(path)
    return key[: -len("fir_kernel")] + "kernel" if path[-1] == "fir_kernel" else key


def _conv_weight_to_flax(x: np.ndarray) -> np.ndarray:
    if x.ndim == 5:  # modulated conv (1, out, in, k, k) -> (1, k, k, in, out)
        return np.ascontiguousarray(np.transpose(x, (0, 3, 4, 2, 1)))
    return keymap.kernel_from_torch("kernel", x)


def _conv_weight_to_torch(x: np.ndarray) -> np.ndarray:
    if x.ndim == 5:
        return np.ascontiguousarray(np.transpose(x, (0, 4, 3, 1, 2)))
    return keymap.kernel_to_torch("kernel", x)


def _nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1))) if x.ndim == 4 else x


def _nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))) if x.ndim == 4 else x


STYLEGAN_LEAF_OVERRIDES = (
    (r"(?:.*\.)?conv\.weight", _conv_weight_to_flax, _conv_weight_to_torch),
    (r"(?:.*\.)?bias", _nchw_to_nhwc, _nhwc_to_nchw),
    (r"(?:.*\.)?(?:input\.input|noises\.noise_\d+)", _nchw_to_nhwc, _nhwc_to_nchw),
)

_GEN_KEYS = {"size", "style_dim", "n_mlp", "channel_multiplier", "blur_kernel", "lr_mlp", "channels", "channel_scale"}


def _count(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def _infer_generator(state: StateDict, prefix: str) -> dict[str, Any]:
    """Constructor kwargs read off the tensor shapes (prefix '' or 'generator.')."""
    p = re.escape(prefix)
    need = [f"{prefix}style.1.weight", f"{prefix}input.input"]
    absent = [k for k in need if k not in state]
    if absent:
        raise ConversionError(f"cannot infer the StyleGAN2 config: {', '.join(absent)} not in the checkpoint; "
                              "pass config={'size': ..., 'style_dim': ..., 'n_mlp': ...}")
    n_levels = _count(state, p + r"to_rgbs\.(\d+)\.bias")
    channels = [int(state[f"{prefix}input.input"].shape[1])]
    channels += [int(state[f"{prefix}convs.{2 * k}.conv.weight"].shape[1]) for k in range(n_levels)]
    cfg: dict[str, Any] = {
        "size": 4 * 2**n_levels,
        "style_dim": int(state[f"{prefix}style.1.weight"].shape[1]),
        "n_mlp": _count(state, p + r"style\.(\d+)\.weight"),
        "channels": tuple(channels),
    }
    blur = state.get(f"{prefix}convs.0.conv.blur.kernel")
    if blur is not None and not np.allclose(blur, make_kernel(blur.sum(0), 2)):
        raise ConversionError(f"{prefix}convs.0.conv.blur.kernel is not a separable FIR kernel; pass config")
    if blur is not None and not np.allclose(blur, make_kernel((1, 3, 3, 1), 2)):
        cfg["blur_kernel"] = tuple(float(t) for t in blur.sum(0))
    return cfg


def _check_keys(config: Mapping[str, Any], allowed: set[str], kind: str) -> dict[str, Any]:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{kind} config: unknown keys {unknown}; allowed: {sorted(allowed)}")
    cfg = dict(config)
    for key in ("channels", "blur_kernel"):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    if isinstance(cfg.get("channels"), Mapping):
        if "size" not in cfg:
            raise ValueError(f"{kind} config: a channels mapping needs 'size'")
        cfg["channels"] = resolve_channels(cfg["size"], channels=cfg["channels"])
    return cfg


def _build_stylegan2(config: Any, state: StateDict) -> tuple[Generator, dict[str, Any]]:
    cfg = _infer_generator(state, "") if config is None else _check_keys(config, _GEN_KEYS, "stylegan2")
    return Generator(**cfg), cfg


def _build_dualstylegan(config: Any, state: StateDict) -> tuple[DualStyleGAN, dict[str, Any]]:
    if config is None:
        cfg = _infer_generator(state, "generator.")
        cfg["res_index"] = _count(state, r"res\.(\d+)\.conv\.0\.weight") - 1
    else:
        cfg = _check_keys(config, _GEN_KEYS | {"res_index", "twoRes"}, "dualstylegan")
        cfg.pop("twoRes", None)
    generator = {k: v for k, v in cfg.items() if k != "res_index"}
    return DualStyleGAN(StyleGAN2Config(**generator), cfg.get("res_index", 6)), cfg


def _init_stylegan2(module: Generator, rng: jax.Array):
    return module.init(rng, jnp.zeros((1, module.style_dim)), noise="zero")


def _init_dualstylegan(module: DualStyleGAN, rng: jax.Array):
    z = jnp.zeros((1, module.style_dim))
    return module.init(rng, z, jnp.zeros((1, module.n_latent, module.style_dim)), noise="zero")


_COMMON = dict(containers=("g_ema", "state_dict"), key_fn=stylegan_torch_key, leaf_overrides=STYLEGAN_LEAF_OVERRIDES)

register(Kind(
    name="stylegan2",
    summary=("rosinality StyleGAN2 Generator (g_ema of training checkpoints). apply({'params': p}, styles, "
             "input_is_latent=, truncation=, truncation_latent=, noise=[(B,H,W,1)...]|'random'|'const'|'zero', "
             "return_latents=) -> image (B,size,size,3) [, W+ (B,n_latent,D)]; styles z/W (B,D), W+ (B,n_latent,D) "
             "or [s1, s2] for mixing (rng 'mixing' when inject_index is None); random noise uses rng 'noise'."),
    build=_build_stylegan2,
    init=_init_stylegan2,
    **_COMMON,
))

register(Kind(
    name="dualstylegan",
    summary=("DualStyleGAN (g_ema). apply({'params': p}, styles, exstyles (B,D)|(B,n_latent,D), input_is_latent=, "
             "interp_weights=[w_i]*n_latent, use_res=, fuse_index=, noise=...) -> image (B,size,size,3); methods "
             "'resstyles' (T_s per W+ row) and 'adastyles' (T_c rows > res_index)."),
    build=_build_dualstylegan,
    init=_init_dualstylegan,
    **_COMMON,
))
