"""Style2Talker Style-A checkpoint kinds: PIRender motion generator parts, StyleHEAT calibration net, pSp
encoder, VToonify and the full `Audio_Driven_VToonify`.

`config` is the original class's constructor kwargs where it has them, or None to infer every size from the
state-dict shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxtalk.interop.kinds.stylegan import STYLEGAN_LEAF_OVERRIDES, _infer_generator
from jaxtalk.interop.reading import StateDict
from jaxtalk.interop.registry import ConversionError, Kind, register
from jaxtalk.style2talker.motion_generator import MappingNet, MotionGenerator, WarpingNet
from jaxtalk.style2talker.psp import GradualStyleEncoder
from jaxtalk.style2talker.refinement import CalibrationNet, calibration_channels
from jaxtalk.style2talker.style_a import WARP_RES, AudioDrivenVToonify
from jaxtalk.style2talker.vtoonify import PARSING_CHANNELS, VToonify

_INDEXED = re.compile(r"^(.+)_(\d+)$")
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "fir_kernel": "kernel"}
_STAT_NAMES = {"mean": "running_mean", "var": "running_var"}
# torch attribute names that genuinely end in `_<digit>` (PIRender ADAIN blocks)
KEEP = frozenset({"conv_0", "conv_1", "norm_0", "norm_1"})


def _split(segment: str, keep: frozenset[str]) -> list[str]:
    if segment in keep:
        return [segment]
    m = _INDEXED.match(segment)
    return [*_split(m.group(1), keep), m.group(2)] if m else [segment]


def torch_key(path: tuple[str, ...], collection: str = "params", keep: frozenset[str] = KEEP) -> str:
    """Flax path -> torch key. Like the generic rule, but list indices may follow a digit (`encoder0_1` ->
    `encoder0.1`) and nest (`encoder_0_2` -> `encoder.0.2`); batch statistics map to running_mean/var."""
    leaf = (_STAT_NAMES if collection == "batch_stats" else _LEAF_NAMES).get(path[-1], path[-1])
    return ".".join([p for seg in path[:-1] for p in _split(seg, keep)] + [leaf])


def _shape(state: StateDict, key: str, what: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"cannot infer the {what} configuration: key {key!r} is missing from the checkpoint "
                              "(pass `config` explicitly, or check the checkpoint is the right kind)")
    return tuple(state[key].shape)


def _count(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def _check_kwargs(given: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConversionError(f"{what} config: unknown keys {unknown}; allowed: {sorted(allowed)}")


# ----------------------------------------------------------------------------------------------------------
# PIRender MappingNet / WarpingNet / Motion_Generator

_MAPPING_KW = {"coeff_nc", "descriptor_nc", "layer"}
_WARPING_KW = {"image_nc", "descriptor_nc", "base_nc", "max_nc", "encoder_layer", "decoder_layer", "use_spect"}


def mapping_config(state: StateDict, prefix: str = "", config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """MappingNet kwargs (coeff_nc, descriptor_nc, layer) from `config` or the state shapes."""
    if config is not None:
        _check_kwargs(config, _MAPPING_KW, "MappingNet")
        return {"coeff_nc": config.get("coeff_nc", 73), "descriptor_nc": config.get("descriptor_nc", 256),
                "layer": config.get("layer", 3)}
    out_nc, in_nc, _ = _shape(state, f"{prefix}first.0.weight", "MappingNet")
    return {"coeff_nc": in_nc, "descriptor_nc": out_nc, "layer": _count(state, rf"{re.escape(prefix)}encoder(\d+)\.1\.weight")}


def warping_config(state: StateDict, prefix: str = "", config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """WarpingNet kwargs from `config` (the original constructor's) or the state shapes."""
    if config is not None:
        _check_kwargs(config, _WARPING_KW, "WarpingNet")
        if config.get("use_spect", False):
            raise ConversionError("WarpingNet with use_spect=True (spectral norm) is not supported; Style2Talker, "
                                  "StyleHEAT and PIRender all use use_spect=False")
        defaults = {"image_nc": 3, "descriptor_nc": 256, "base_nc": 32, "max_nc": 256, "encoder_layer": 5,
                    "decoder_layer": 3}
        return {k: config.get(k, v) for k, v in defaults.items()}
    hg = f"{prefix}hourglass."
    base_nc, image_nc, _, _ = _shape(state, f"{hg}encoder.input_layer.weight", "WarpingNet")
    enc = _count(state, rf"{re.escape(hg)}encoder\.encoder(\d+)\.conv_0\.weight")
    dec = _count(state, rf"{re.escape(hg)}decoder\.decoder(\d+)\.conv_0\.weight")
    max_nc = max(_shape(state, f"{hg}encoder.encoder{i}.conv_0.weight", "WarpingNet")[0] for i in range(enc))
    descriptor_nc = _shape(state, f"{hg}encoder.encoder0.norm_0.mlp_shared.0.weight", "WarpingNet")[1]
    return {"image_nc": image_nc, "descriptor_nc": descriptor_nc, "base_nc": base_nc, "max_nc": max_nc,
            "encoder_layer": enc, "decoder_layer": dec}


def motion_generator_fields(state: StateDict, prefix: str = "", config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """`MotionGenerator` fields; `config` as PIRender's yaml: {'mapping_net': {...}, 'warping_net': {...}}."""
    config = dict(config or {})
    _check_kwargs(config, {"mapping_net", "warping_net"}, "Motion_Generator")
    m = mapping_config(state, f"{prefix}mapping_net.", config.get("mapping_net"))
    w = warping_config(state, f"{prefix}warping_net.", config.get("warping_net"))
    if m["descriptor_nc"] != w["descriptor_nc"]:
        raise ConversionError(f"mapping_net descriptor_nc {m['descriptor_nc']} != warping_net descriptor_nc "
                              f"{w['descriptor_nc']}")
    return {"coeff_nc": m["coeff_nc"], "descriptor_nc": m["descriptor_nc"], "mapping_layers": m["layer"],
            "image_nc": w["image_nc"], "base_nc": w["base_nc"], "max_nc": w["max_nc"],
            "encoder_layer": w["encoder_layer"], "decoder_layer": w["decoder_layer"]}


def _pirender_to_canonical(state: StateDict) -> tuple[StateDict, str]:
    """PIRender's own checkpoints spell the module `warpping_net`; Style2Talker / StyleHEAT use `warping_net`."""
    if any(k.startswith("warpping_net.") for k in state):
        return {("warping_net." + k[len("warpping_net."):] if k.startswith("warpping_net.") else k): v
                for k, v in state.items()}, "pirender"
    return state, "style2talker"


def _pirender_from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout == "style2talker":
        return state
    if layout != "pirender":
        raise ValueError(f"pirender layout {layout!r}: use 'style2talker' (warping_net) or 'pirender' (warpping_net)")
    return {("warpping_net." + k[len("warping_net."):] if k.startswith("warping_net.") else k): v
            for k, v in state.items()}


def _image_init(module, rng, size: int, channels: int, extra):
    return module.init(rng, jnp.zeros((1, size, size, channels)), extra)


register(Kind(
    name="pirender_mapping_net",
    summary="PIRender/Style2Talker MappingNet. apply(v, coeffs[B,T=27,73]) -> descriptor [B,D] (D=256 published).",
    build=lambda config, state: (MappingNet(**(m := mapping_config(state, "", config))), m),
    init=lambda module, rng: module.init(rng, jnp.zeros((1, 7 + 6 * module.layer, module.coeff_nc))),
    key_fn=torch_key,
))

register(Kind(
    name="pirender_warping_net",
    summary="PIRender WarpingNet (ADAIN hourglass + flow_out). apply(v, image[B,H,W,3], descriptor[B,D]) -> "
            "{'flow_field' [B,H/4,W/4,2] pixel units of that grid, x first; 'warp_image' [B,H,W,3]}.",
    build=lambda config, state: (WarpingNet(**(w := warping_config(state, "", config))), w),
    init=lambda module, rng: _image_init(module, rng, 2**module.encoder_layer, module.image_nc,
                                         jnp.zeros((1, module.descriptor_nc))),
    key_fn=torch_key,
))

register(Kind(
    name="pirender",
    summary="Style2Talker/StyleHEAT Motion_Generator (MappingNet + WarpingNet; PIRender's `warpping_net` spelling "
            "is accepted, layout='pirender'). apply(v, image[B,256,256,3], coeffs[B,27,73]) -> {'flow_field' "
            "[B,64,64,2], 'warp_image' [B,256,256,3], 'descriptor' [B,256]}.",
    build=lambda config, state: (MotionGenerator(**(f := motion_generator_fields(state, "", config))), f),
    init=lambda module, rng: module.init(rng, jnp.zeros((1, 2**module.encoder_layer, 2**module.encoder_layer,
                                                         module.image_nc)),
                                         jnp.zeros((1, 7 + 6 * module.mapping_layers, module.coeff_nc))),
    containers=("net_G_ema", "net_G", "state_dict"),
    key_fn=torch_key,
    to_canonical=_pirender_to_canonical,
    from_canonical=_pirender_from_canonical,
))


# ----------------------------------------------------------------------------------------------------------
# StyleHEAT CalibrationNet (style2talker `Refinement`)

_CALIBRATION_KW = {"out_size", "input_channel", "num_style_feat", "channel_multiplier", "resample_kernel", "narrow"}


def calibration_fields(state: StateDict, prefix: str = "", config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`CalibrationNet` fields from the original constructor kwargs, or from the state shapes (which also covers
    width-reduced variants whose `linear_3dmm` is not the hard-coded 256 -> 256 -> 256)."""
    if config is not None:
        _check_kwargs(config, _CALIBRATION_KW, "CalibrationNet")
        if tuple(config.get("resample_kernel", (1, 3, 3, 1))) != (1, 3, 3, 1):
            raise ConversionError("CalibrationNet: only resample_kernel=(1, 3, 3, 1) is supported")
        out_size = config["out_size"]
        return {"out_size": out_size, "input_channel": config["input_channel"],
                "channels": calibration_channels(out_size, config.get("narrow", 1), config.get("channel_multiplier", 1)),
                "descriptor_nc": 256, "hidden_nc": 256}
    levels = _count(state, rf"{re.escape(prefix)}conv_body_down\.(\d+)\.conv1\.0\.weight")
    first_c, input_channel, _, _ = _shape(state, f"{prefix}conv_body_first.0.weight", "CalibrationNet")
    c4 = _shape(state, f"{prefix}final_conv.0.weight", "CalibrationNet")[0]
    up = [_shape(state, f"{prefix}conv_body_up.{j}.conv2.weight", "CalibrationNet")[0] for j in range(levels)]
    hidden_nc, descriptor_nc = _shape(state, f"{prefix}linear_3dmm.0.weight", "CalibrationNet")
    channels = (c4, *up)
    if channels[-1] != first_c:
        raise ConversionError(f"CalibrationNet: conv_body_first width {first_c} != top-level width {channels[-1]}")
    return {"out_size": 2 ** (levels + 2), "input_channel": input_channel, "channels": channels,
            "descriptor_nc": descriptor_nc, "hidden_nc": hidden_nc}


register(Kind(
    name="calibration_net",
    summary="StyleHEAT CalibrationNet = style2talker Refinement. apply(v, feature[B,64,64,512], descriptor[B,256]) "
            "-> [scale_8, shift_8, ..., scale_64, shift_64], each [B,r,r,512].",
    build=lambda config, state: (CalibrationNet(**(c := calibration_fields(state, "", config))), c),
    init=lambda module, rng: module.init(rng, jnp.zeros((1, module.out_size, module.out_size, module.input_channel)),
                                         jnp.zeros((1, module.descriptor_nc))),
    key_fn=torch_key,
))


# ----------------------------------------------------------------------------------------------------------
# pSp GradualStyleEncoder

_PSP_KW = {"num_layers", "mode", "input_nc", "n_styles", "output_size", "input_size"}
_PSP_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


def psp_fields(state: StateDict, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`GradualStyleEncoder` fields. `config`: GradualStyleEncoder(num_layers, mode) + pSp opts (input_nc,
    n_styles or output_size) + `input_size` (default 256); None infers the stages from the state shapes."""
    config = dict(config or {})
    _check_kwargs(config, _PSP_KW, "GradualStyleEncoder")
    if config.get("mode", "ir_se") != "ir_se":
        raise ConversionError(f"GradualStyleEncoder mode {config['mode']!r}: only 'ir_se' is supported")
    latent_avg = tuple(state["latent_avg"].shape) if "latent_avg" in state else None
    if "num_layers" in config:
        if config["num_layers"] not in _PSP_UNITS:
            raise ConversionError(f"GradualStyleEncoder num_layers must be one of {sorted(_PSP_UNITS)}")
        n_styles = config.get("n_styles") or (int(math.log2(config.get("output_size", 1024))) * 2 - 2)
        return {"input_nc": config.get("input_nc", 3), "input_size": config.get("input_size", 256),
                "units": _PSP_UNITS[config["num_layers"]], "n_styles": n_styles, "latent_avg_shape": latent_avg}
    depth0, input_nc, _, _ = _shape(state, "input_layer.0.weight", "GradualStyleEncoder")
    n_units = _count(state, r"body\.(\d+)\.res_layer\.1\.weight")
    depths = [_shape(state, f"body.{i}.res_layer.1.weight", "GradualStyleEncoder")[0] for i in range(n_units)]
    starts = [0] + [i for i in range(n_units) if f"body.{i}.shortcut_layer.0.weight" in state]
    if len(starts) != 4:
        raise ConversionError(f"GradualStyleEncoder: expected 4 stages (3 projecting shortcuts), found stage starts "
                              f"{starts}; pass `config` with num_layers")
    units = tuple(b - a for a, b in zip(starts, [*starts[1:], n_units]))
    widths = tuple(depths[a] for a in starts)
    se_out = _shape(state, "body.0.res_layer.5.fc1.weight", "GradualStyleEncoder")[0]
    return {"input_nc": input_nc, "input_size": config.get("input_size", 256), "widths": widths, "units": units,
            "style_dim": widths[3], "n_styles": _count(state, r"styles\.(\d+)\.linear\.weight"),
            "se_reduction": depth0 // se_out, "latent_avg_shape": latent_avg}


def _psp_to_canonical(state: StateDict) -> tuple[StateDict, str]:
    """A full pSp checkpoint {'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg', 'opts'} -> the encoder keys
    plus `latent_avg`. The StyleGAN `decoder.*` is not part of the encoder and is skipped, as
    `load_psp_standalone` does; anything else must match."""
    if any(k.startswith("state_dict.encoder.") for k in state):
        out = {k[len("state_dict.encoder."):]: v for k, v in state.items() if k.startswith("state_dict.encoder.")}
        rest = {k: v for k, v in state.items()
                if not k.startswith(("state_dict.encoder.", "state_dict.decoder."))}
        out.update(rest)
        return out, "psp_checkpoint"
    if "state_dict.input_layer.0.weight" in state:
        return {(k[len("state_dict."):] if k.startswith("state_dict.") else k): v for k, v in state.items()}, "psp"
    return state, "psp"


def _psp_from_canonical(state: StateDict, layout: str) -> StateDict:
    if layout == "psp":
        return state
    if layout != "psp_checkpoint":
        raise ValueError(f"psp_encoder layout {layout!r}: use 'psp' (bare encoder) or 'psp_checkpoint'")
    return {(k if k == "latent_avg" else f"state_dict.encoder.{k}"): v for k, v in state.items()}


register(Kind(
    name="psp_encoder",
    summary="pSp GradualStyleEncoder(50,'ir_se') (VToonify/Style2Talker encoder.pt: Z+ codes; checkpoint "
            "`latent_avg` is added when present). apply(v, image[B,256,256,3] in [-1,1]) -> codes [B,18,512]. "
            "Returns {'params', 'batch_stats'}; the pSp decoder.* in a full checkpoint is skipped.",
    build=lambda config, state: (GradualStyleEncoder(**(f := psp_fields(state, config))), f),
    init=lambda module, rng: module.init(rng, jnp.zeros((1, module.input_size, module.input_size, module.input_nc))),
    containers=(),
    strip_prefixes=("module.",),
    ignore=(r".*num_batches_tracked",),
    to_canonical=_psp_to_canonical,
    from_canonical=_psp_from_canonical,
    key_fn=torch_key,
))


# ----------------------------------------------------------------------------------------------------------
# VToonify-D and Style-A (Audio_Driven_VToonify)

_VTOONIFY_KW = {"in_size", "out_size", "img_channels", "style_channels", "num_mlps", "channel_multiplier",
                "num_res_layers", "backbone", "channels", "channel_scale"}


def vtoonify_fields(state: StateDict, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`VToonify` fields: the original constructor kwargs (+ `channels` / `channel_scale` for scaled tables),
    or None to read everything off the shapes."""
    if config is not None:
        _check_kwargs(config, _VTOONIFY_KW, "VToonify")
        if config.get("backbone", "dualstylegan") != "dualstylegan":
            raise ConversionError("VToonify: only backbone='dualstylegan' (VToonify-D, used by Style2Talker) is supported")
        fields = {"in_size": config.get("in_size", 256), "out_size": config.get("out_size", 1024),
                  "img_channels": config.get("img_channels", 3), "style_dim": config.get("style_channels", 512),
                  "n_mlp": config.get("num_mlps", 8), "channel_multiplier": config.get("channel_multiplier", 2),
                  "num_res_layers": config.get("num_res_layers", 6), "channel_scale": config.get("channel_scale", 1.0)}
        if config.get("channels") is not None:
            fields["channels"] = tuple(config["channels"])
        return fields
    gen = _infer_generator(state, "generator.generator.")
    if "blur_kernel" in gen:
        raise ConversionError("VToonify: only the [1, 3, 3, 1] blur kernel is supported")
    if _count(state, r"generator\.res\.(\d+)\.conv\.0\.weight") != 7:
        raise ConversionError("VToonify: expected DualStyleGAN with res_index 6 (ModRes blocks generator.res.0..6)")
    n_conv = _count(state, r"encoder\.(\d+)\.0\.weight")
    stem, in_ch, _, _ = _shape(state, "encoder.0.0.weight", "VToonify")
    return {"in_size": 2 ** (n_conv + 4), "out_size": gen["size"], "img_channels": in_ch - PARSING_CHANNELS,
            "style_dim": gen["style_dim"], "n_mlp": gen["n_mlp"], "channels": gen["channels"],
            "num_res_layers": _count(state, rf"encoder\.{n_conv}\.(\d+)\.conv\.weight"), "stem_channels": stem}


def style_a_fields(state: StateDict, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`AudioDrivenVToonify` fields. With `config` (Audio_Driven_VToonify's kwargs, same as VToonify's) the
    motion generator and refinement take their hard-coded published sizes; None infers all from the shapes."""
    fields = vtoonify_fields(state, config)
    if config is not None:
        return fields
    m = motion_generator_fields(state, "motion_generator.")
    r = calibration_fields(state, "refinement.")
    if r["out_size"] != WARP_RES or len(set(r["channels"])) != 1 or r["hidden_nc"] != r["channels"][0]:
        raise ConversionError(f"Style-A refinement must be a {WARP_RES}-px CalibrationNet of one width with "
                              f"linear_3dmm D -> C -> C, got {r}")
    if r["descriptor_nc"] != m["descriptor_nc"]:
        raise ConversionError(f"refinement descriptor width {r['descriptor_nc']} != motion generator's "
                              f"{m['descriptor_nc']}")
    if m["image_nc"] != fields["img_channels"]:
        raise ConversionError(f"motion generator image channels {m['image_nc']} != {fields['img_channels']}")
    return {**fields, "coeff_nc": m["coeff_nc"], "descriptor_nc": m["descriptor_nc"],
            "mapping_layers": m["mapping_layers"], "motion_base_nc": m["base_nc"], "motion_max_nc": m["max_nc"],
            "motion_encoder_layers": m["encoder_layer"], "motion_decoder_layers": m["decoder_layer"],
            "refine_channels": r["channels"][0]}


def _vtoonify_inputs(module: VToonify) -> tuple[jnp.ndarray, jnp.ndarray]:
    n_latent = 2 * (module.out_size.bit_length() - 1) - 2
    return (jnp.zeros((1, module.in_size, module.in_size, module.img_channels)),
            jnp.zeros((1, n_latent, module.style_dim)))


def _init_style_a(module: AudioDrivenVToonify, rng):
    size = 2**module.motion_encoder_layers
    return module.init(rng, *_vtoonify_inputs(module), jnp.zeros((1, size, size, module.img_channels)),
                       jnp.zeros((1, 7 + 6 * module.mapping_layers, module.coeff_nc)))


_STYLEGAN_LAYOUT = dict(key_fn=torch_key, leaf_overrides=STYLEGAN_LEAF_OVERRIDES, strip_prefixes=("module.",))

register(Kind(
    name="vtoonify",
    summary="VToonify-D (g_ema of vtoonify_d_*.pt). apply(v, x[B,256,256,3 (+parsing=[B,256,256,19] logits) "
            "or 22], style W+[B,18,512], d_s=0.5, return_mask=, return_feat=) -> image [B,1024,1024,3]; "
            "method='zplus2wplus' maps pSp Z+ codes to W+.",
    build=lambda config, state: (VToonify(**(f := vtoonify_fields(state, config))), f),
    init=lambda module, rng: module.init(rng, *_vtoonify_inputs(module)),
    containers=("g_ema", "g", "state_dict"),
    **_STYLEGAN_LAYOUT,
))

register(Kind(
    name="style2talker_style_a",
    summary="Style2Talker Style-A Audio_Driven_VToonify (checkpoint 'g'). apply(v, x[B,256,256,3] (+parsing=), "
            "style W+[B,18,512], input_image[B,256,256,3], driven_3dmm[B,27,73], d_s=0.5, flow=None, "
            "return_aux=False) -> image [B,1024,1024,3]; method='zplus2wplus'.",
    build=lambda config, state: (AudioDrivenVToonify(**(f := style_a_fields(state, config))), f),
    init=_init_style_a,
    containers=("g", "g_ema", "state_dict"),
    **_STYLEGAN_LAYOUT,
))
