"""`SVPConfig`: the root config of an SVP / V-Express system (`system: svp` in YAML).

Presets in `jaxtalk/presets/`: `svp_tiny` (CPU tests and the demo), `svp_vexpress` (V-Express: SD1.5 sizes, wav2vec2
audio, V-Kps, DDIM v-prediction zero-SNR trailing, no style), `svp_paper` (SVP: Whisper-Tiny audio, Head-Kps,
the probabilistic style prior, Euler 25 steps).

Sections: `unet` (the denoising video UNet, `SVPUNetConfig`; the ReferenceNet is the same 2D UNet without
`conv_norm_out`), `vae`, `kps_guider`, `audio_projection`, `audio` (encoder choice and sizes), `style`, `sampler`,
`guidance`, `context` (windows), `video`, `mesh`. `validate` checks that the parts fit together (widths, strides,
channel counts) and names the keys to change.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxtalk import config as cfg
from jaxtalk.backbones.audio_features import AudioEncoderConfig
from jaxtalk.backbones.sd_vae import SD_VAE_CONFIG, VAEConfig
from jaxtalk.config import ConfigError, MeshConfig
from jaxtalk.svp.audio_projection import AudioProjectionConfig
from jaxtalk.svp.kps_guider import KpsGuiderConfig
from jaxtalk.svp.style_extractor import StyleExtractorConfig
from jaxtalk.svp.video_unet import SVPUNetConfig


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """SVP's intrinsic style: the extractor's sizes and how style tokens are drawn from the prior."""

    enabled: bool = True
    extractor: StyleExtractorConfig = cfg.field(default_factory=StyleExtractorConfig)
    sample: bool = cfg.field(True, doc="tokens = mu + sigma * eps (seeded) rather than mu")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Noise schedule and sampler (the fields of diffusers' scheduler configs that matter here)."""

    kind: Literal["euler", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc"] = cfg.field(
        "euler", doc="euler / ddim, or a multistep solver for fewer steps: dpmsolver++ (2M), sde-dpmsolver++, unipc")
    steps: int = cfg.field(25, min=1, max=1000)
    solver_order: int = cfg.field(2, min=1, max=2, doc="multistep solvers: 1 or 2 (2M)")
    num_train_timesteps: int = cfg.field(1000, min=2)
    beta_start: float = cfg.field(0.00085, min=0.0, max=1.0)
    beta_end: float = cfg.field(0.012, min=0.0, max=1.0)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "cosine"] = "scaled_linear"
    rescale_zero_terminal_snr: bool = False
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "linspace"
    steps_offset: int = cfg.field(0, min=0)
    set_alpha_to_one: bool = cfg.field(True, doc="DDIM: the last step goes to alpha_bar = 1")
    eta: float = cfg.field(0.0, min=0.0, max=1.0, doc="DDIM stochasticity (0 = deterministic)")

    def validate(self) -> None:
        if self.steps > self.num_train_timesteps:
            raise ConfigError(f"sampler.steps={self.steps} exceeds num_train_timesteps={self.num_train_timesteps}")
        if self.kind != "ddim" and self.eta:
            raise ConfigError("sampler.eta applies to kind=ddim only")


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """Classifier-free guidance and the attention weights (V-Express `reference_attention_weight`, ...)."""

    scale: float = cfg.field(3.5, min=0.0, doc="eps = u + scale (c - u); 1 skips the unconditional branch")
    reference_weight: float = cfg.field(1.0, min=0.0)
    audio_weight: float = cfg.field(1.0, min=0.0)
    style_weight: float = cfg.field(1.0, min=0.0)
    uncond_style: Literal["zero", "keep"] = cfg.field("zero", doc="style tokens of the unconditional branch")
    force_cfg: bool = cfg.field(False, doc="run the [uncond, cond] batch even at scale 1 (for checks)")


@dataclasses.dataclass(frozen=True)
class ContextConfig:
    """V-Express context windows: the UNet sees `frames` frames at a time, windows overlap by `overlap`."""

    frames: int = cfg.field(24, min=1)
    overlap: int = cfg.field(4, min=0)
    cut_to_windows: bool = cfg.field(True, doc="cut the clip to L = (n-1)(W-o)+W frames, fps = L / duration")

    def validate(self) -> None:
        if self.overlap >= self.frames:
            raise ConfigError(f"context.overlap={self.overlap} must be smaller than context.frames={self.frames}")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    """Output frames: size, rate, keypoint drawing, post-filter, decode chunking."""

    height: int = cfg.field(512, min=8)
    width: int = cfg.field(512, min=8)
    fps: float = cfg.field(25.0, min=1.0, max=120.0)
    kps_mode: Literal["head", "v"] = cfg.field("head", doc="Head-Kps (SVP, 8 points) or V-Kps (V-Express, 3)")
    median_filter: bool = cfg.field(False, doc="V-Express's 3x3x3 median filter after decoding")
    decode_chunk: int = cfg.field(8, min=1, doc="frames per VAE decode call")


@cfg.register_root("svp")
@dataclasses.dataclass(frozen=True)
class SVPConfig:
    """An SVP / V-Express system: model sizes, sampling and output settings."""

    unet: SVPUNetConfig = cfg.field(default_factory=SVPUNetConfig.svp)
    vae: VAEConfig = cfg.field(default_factory=lambda: VAEConfig.from_diffusers(SD_VAE_CONFIG))
    kps_guider: KpsGuiderConfig = cfg.field(default_factory=KpsGuiderConfig)
    audio_projection: AudioProjectionConfig = cfg.field(default_factory=AudioProjectionConfig.svp_whisper)
    audio: AudioEncoderConfig = cfg.field(default_factory=AudioEncoderConfig)
    style: StyleConfig = cfg.field(default_factory=StyleConfig)
    sampler: SamplerConfig = cfg.field(default_factory=SamplerConfig)
    guidance: GuidanceConfig = cfg.field(default_factory=GuidanceConfig)
    context: ContextConfig = cfg.field(default_factory=ContextConfig)
    video: VideoConfig = cfg.field(default_factory=VideoConfig)
    dtype: Literal["float32", "bfloat16"] = cfg.field("float32", doc="compute dtype (params stay float32)")
    attention: Literal["auto", "xla", "cudnn", "blocked", "reference"] = "auto"
    attention_chunk: int | None = cfg.field(None, min=1, doc="query chunk for attention without a flash kernel "
                                            "(bounds the logits of 64x64 latents); None = whole sequence")
    seed: int = cfg.field(42, min=0)
    mesh: MeshConfig = cfg.field(default_factory=MeshConfig)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.block_out_channels) - 1)

    def validate(self) -> None:
        u = self.unet.unet
        problems = []
        if self.vae.latent_channels != u.in_channels or u.out_channels != u.in_channels:
            problems.append(f"vae.latent_channels={self.vae.latent_channels} must equal unet.unet.in_channels="
                            f"{u.in_channels} and out_channels={u.out_channels}")
        guider_stride = 2 ** (len(self.kps_guider.block_out_channels) - 1)
        if guider_stride != self.vae_scale_factor:
            problems.append(f"kps_guider downsamples by {guider_stride} (len(block_out_channels)-1 stride-2 convs), "
                            f"the VAE by {self.vae_scale_factor}; make them equal")
        if self.kps_guider.embedding_channels != u.block_out_channels[0]:
            problems.append(f"kps_guider.embedding_channels={self.kps_guider.embedding_channels} must equal "
                            f"unet.unet.block_out_channels[0]={u.block_out_channels[0]}")
        if self.audio_projection.output_dim != u.cross_attention_dim:
            problems.append(f"audio_projection.output_dim={self.audio_projection.output_dim} must equal "
                            f"unet.unet.cross_attention_dim={u.cross_attention_dim}")
        if self.audio_projection.embedding_dim != self.audio.feature_dim:
            problems.append(f"audio_projection.embedding_dim={self.audio_projection.embedding_dim} must equal the "
                            f"{self.audio.encoder} feature width {self.audio.feature_dim}")
        if self.audio.encoder == "whisper" and self.audio.whisper.max_positions != 1500:
            problems.append("audio.whisper.max_positions must be 1500 (30 s segments), got "
                            f"{self.audio.whisper.max_positions}")
        if self.style.enabled:
            ex = self.style.extractor
            if not self.unet.use_style:
                problems.append("style.enabled needs unet.use_style=true (the style attention layers)")
            if ex.d_model != self.unet.style_dim:
                problems.append(f"style.extractor.d_model={ex.d_model} must equal unet.style_dim={self.unet.style_dim}")
            if self.audio.encoder == "wav2vec2":
                problems.append("style.enabled needs audio.encoder=whisper or logmel (the style extractor reads "
                                "per-frame Whisper states or log-mel features)")
            elif ex.audio_dim != self.audio.feature_dim:
                problems.append(f"style.extractor.audio_dim={ex.audio_dim} must equal the {self.audio.encoder} "
                                f"feature width {self.audio.feature_dim}")
        down = self.vae_scale_factor * 2 ** (len(u.block_out_channels) - 1)
        if self.video.height % down or self.video.width % down:
            problems.append(f"video size {self.video.height}x{self.video.width} must be divisible by {down} "
                            "(VAE and UNet downsampling)")
        m = self.unet.motion
        if m.enabled and m.temporal_position_encoding and self.context.frames > m.max_len:
            problems.append(f"context.frames={self.context.frames} exceeds the motion modules' position table "
                            f"(unet.motion.max_len={m.max_len})")
        if problems:
            raise ConfigError("svp config: " + "; ".join(problems))
