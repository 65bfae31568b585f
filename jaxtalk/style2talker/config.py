"""`Style2TalkerConfig`: the root config of a Style2Talker system (`system: style2talker` in YAML).

Presets in `jaxtalk/presets/`: `style2talker_tiny` (random weights for tests and the CPU demo: 64 px output, every width
tiny) and `style2talker_paper` (the published sizes: CLIP ViT-B/32 text tower, 8-block Style-E, SadTalker
audio2exp, IR-SE50 pSp, VToonify-D/DualStyleGAN at 256 in / 1024 out, PIRender motion generator, 256-wide
refinement).

Sections: `clip` (the CLIP text tower, `CLIPTextConfig`), `style_e` (the denoiser, `StyleEConfig`), `sampler`
(`StyleESamplerConfig`: the released 5-step ancestral "ddim5" by default), `audio2exp`, `psp`, `style_a`
(the `AudioDrivenVToonify` fields) and `inference` (style degree, batch size, crop defaults, seed, ...).
`validate` checks that the parts fit together and names the keys to change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from jaxtalk import config as cfg
from jaxtalk.backbones.clip_text import CLIPTextConfig
from jaxtalk.config import ConfigError
from jaxtalk.style2talker.audio2exp import EXP_DIM
from jaxtalk.style2talker.style_e import StyleEConfig, StyleESamplerConfig

POSE_DIM = 6  # angles (pitch, yaw, roll) + translation (x, y, z), Deep3DFaceRecon coeff[224:227] and [254:257]
CROP_DIM = 3  # (ratio, t0, t1): Deep3DFaceRecon trans_params[2:]


@dataclasses.dataclass(frozen=True)
class Audio2ExpConfig:
    """SadTalker audio2exp (`SimpleWrapperV2`): conv widths times `width_scale` (1.0 published)."""

    width_scale: float = cfg.field(1.0, min=0.01, max=1.0)

    def module_kwargs(self) -> dict[str, Any]:
        return {"width_scale": self.width_scale}


@dataclasses.dataclass(frozen=True)
class PSPConfig:
    """pSp GradualStyleEncoder (IR-SE) giving the identity's Z+ code. Its style width and number of styles are
    the Style-A generator's (`style_a.style_dim`, n_latent of `style_a.out_size`)."""

    input_size: int = cfg.field(256, min=32, doc="the (aligned) identity crop is resized to this")
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    units: tuple[int, int, int, int] = (3, 4, 14, 3)
    se_reduction: int = cfg.field(16, min=1)
    latent_avg: bool = cfg.field(True, doc="the checkpoint's latent_avg is added to the codes (pSp checkpoints)")


@dataclasses.dataclass(frozen=True)
class StyleAConfig:
    """`AudioDrivenVToonify` (VToonify-D + PIRender motion generator + refinement); published defaults."""

    in_size: int = cfg.field(256, min=32)
    out_size: int = cfg.field(1024, min=64)
    style_dim: int = cfg.field(512, min=1)
    n_mlp: int = cfg.field(8, min=1)
    channel_multiplier: int = cfg.field(2, min=1)
    channels: tuple[int, ...] | None = None
    channel_scale: float = cfg.field(1.0, min=0.0)
    num_res_layers: int = cfg.field(6, min=0)
    stem_channels: int = cfg.field(32, min=1)
    coeff_nc: int = cfg.field(73, min=1)
    descriptor_nc: int = cfg.field(256, min=1)
    mapping_layers: int = cfg.field(3, min=1)
    motion_base_nc: int = cfg.field(32, min=1)
    motion_max_nc: int = cfg.field(256, min=1)
    motion_encoder_layers: int = cfg.field(5, min=1)
    motion_decoder_layers: int = cfg.field(3, min=1)
    refine_channels: int | None = None
    motion_size: int | None = cfg.field(
        None, min=32, doc="side the identity image is resized to for the motion generator (None: in_size, as the "
        "original, where in_size 256 gives the 64x64 flow of the warped feature)")
    warp_skip: bool = cfg.field(
        False, doc="also warp the content encoder's 32-px RGB skip with the flow (off: the original, whose skip is "
        "a few pixels of a 1024 frame; at out_size 64 the unwarped skip carries the reference's mouth)")
    driving_mean: tuple[float, ...] | None = cfg.field(
        None, doc="per-dimension mean of the 73-d driving coefficients, subtracted before the motion generator "
        "(None: raw coefficients, as the original)")
    driving_std: tuple[float, ...] | None = cfg.field(
        None, doc="per-dimension scale the centred coefficients are divided by (with driving_mean)")

    @property
    def n_latent(self) -> int:
        return 2 * int(math.log2(self.out_size)) - 2

    @property
    def motion_input_size(self) -> int:
        """Side of the identity image the motion generator reads."""
        return self.motion_size if self.motion_size is not None else self.in_size

    def module_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How a video is generated (the original `inference.py` defaults where it has them)."""

    fps: float = cfg.field(25.0, min=1.0, max=120.0, doc="video rate; SadTalker's mel windows assume 25")
    style_degree: float = cfg.field(0.5, min=0.0, max=1.0, doc="VToonify-D style degree d_s")
    color_transfer: bool = cfg.field(False, doc="take all 18 W+ rows from the art style (colour too)")
    style_index: int = cfg.field(0, min=0, doc="art style used from the model's style bank when none is given")
    style_space: Literal["wplus", "zplus"] = cfg.field(
        "wplus", doc="space of user-given art style files (the bank holds Z+ codes, as exstyle_code.npy)")
    batch_size: int = cfg.field(4, min=1, doc="Style-A frames per compiled batch (the last batch is padded)")
    blink: Literal["random", "none"] = cfg.field("random", doc="audio2exp eye-blink ratio: random pulses or zeros")
    crop: tuple[float, float, float] = cfg.field(
        (1.0, 128.0, 128.0), doc="default (ratio, t0, t1) crop params: a face centred in a 256 px crop")
    radius: int = cfg.field(13, min=1, doc="coefficient window radius (27 frames per window)")
    seed: int = cfg.field(0, min=0)


@cfg.register_root("style2talker")
@dataclasses.dataclass(frozen=True)
class Style2TalkerConfig:
    """A Style2Talker system: model sizes, Style-E sampling and inference settings."""

    clip: CLIPTextConfig = cfg.field(default_factory=CLIPTextConfig)
    style_e: StyleEConfig = cfg.field(default_factory=StyleEConfig)
    sampler: StyleESamplerConfig = cfg.field(default_factory=StyleESamplerConfig)
    audio2exp: Audio2ExpConfig = cfg.field(default_factory=Audio2ExpConfig)
    psp: PSPConfig = cfg.field(default_factory=PSPConfig)
    style_a: StyleAConfig = cfg.field(default_factory=StyleAConfig)
    inference: InferenceConfig = cfg.field(default_factory=InferenceConfig)
    dtype: Literal["float32", "bfloat16"] = cfg.field("float32", doc="compute dtype (params stay float32)")

    @property
    def window_frames(self) -> int:
        return 2 * self.inference.radius + 1

    def validate(self) -> None:
        c, e, a, p, i = self.clip, self.style_e, self.style_a, self.psp, self.inference
        problems = []
        if c.projection_dim is None or c.projection_dim != e.text_dim:
            problems.append(f"clip.projection_dim={c.projection_dim} must equal style_e.text_dim={e.text_dim} "
                            "(Style-E reads the projected encode_text feature)")
        if c.max_length < 2:
            problems.append(f"clip.max_length={c.max_length} must hold the start and end tokens")
        if e.sparse_dim != EXP_DIM or e.nfeats != EXP_DIM:
            problems.append(f"style_e.sparse_dim={e.sparse_dim} and style_e.nfeats={e.nfeats} must be {EXP_DIM} "
                            "(audio2exp's expression coefficients)")
        if a.coeff_nc != e.nfeats + POSE_DIM + CROP_DIM:
            problems.append(f"style_a.coeff_nc={a.coeff_nc} must be style_e.nfeats + {POSE_DIM + CROP_DIM} = "
                            f"{e.nfeats + POSE_DIM + CROP_DIM} (exp, angles, translation, crop)")
        for name, size in (("style_a.in_size", a.in_size), ("style_a.out_size", a.out_size),
                           ("psp.input_size", p.input_size)):
            if 2 ** int(math.log2(size)) != size:
                problems.append(f"{name}={size} must be a power of two")
        if a.in_size > a.out_size:
            problems.append(f"style_a.in_size={a.in_size} must not exceed style_a.out_size={a.out_size}")
        if a.in_size % 2**a.motion_encoder_layers:
            problems.append(f"style_a.in_size={a.in_size} must be a multiple of 2**motion_encoder_layers="
                            f"{2**a.motion_encoder_layers} (the motion generator sees the identity at in_size)")
        if (a.driving_mean is None) != (a.driving_std is None):
            problems.append("style_a.driving_mean and style_a.driving_std must be given together (or neither)")
        elif a.driving_mean is not None:
            if len(a.driving_mean) != a.coeff_nc or len(a.driving_std) != a.coeff_nc:
                problems.append(f"style_a.driving_mean / driving_std need {a.coeff_nc} values each, got "
                                f"{len(a.driving_mean)} / {len(a.driving_std)}")
            elif not all(math.isfinite(v) for v in a.driving_mean) or not all(v > 0 for v in a.driving_std):
                problems.append("style_a.driving_mean must be finite and style_a.driving_std positive")
        if a.motion_decoder_layers > a.motion_encoder_layers:
            problems.append("style_a.motion_decoder_layers must not exceed style_a.motion_encoder_layers")
        if p.widths[3] != a.style_dim:
            problems.append(f"psp.widths[3]={p.widths[3]} must equal style_a.style_dim={a.style_dim}")
        if p.input_size < 32:
            problems.append(f"psp.input_size={p.input_size} must be at least 32 (four stride-2 stages)")
        if any(w // p.se_reduction < 1 for w in p.widths):
            problems.append(f"psp.se_reduction={p.se_reduction} leaves no squeeze channels for widths {p.widths}")
        if self.window_frames < 7 + 6 * a.mapping_layers:
            problems.append(f"inference.radius={i.radius} gives {self.window_frames}-frame windows; the mapping net "
                            f"needs at least {7 + 6 * a.mapping_layers} (radius >= {(6 + 6 * a.mapping_layers) // 2})")
        if problems:
            raise ConfigError("style2talker config: " + "; ".join(problems))
