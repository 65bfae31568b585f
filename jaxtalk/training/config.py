"""Typed root configs of the three trainers (`system: train_svp | train_style_prior | train_style_e`).

    cfg = config.load("train_svp_stage2_tiny", overrides=["train.steps=10"])

Presets in `jaxtalk/presets/`: `train_svp_stage{1,2,3}_{tiny,paper}`, `train_style_prior_{tiny,paper}`,
`train_style_e_{tiny,paper}`. The tiny presets run on CPU (tests, the synthetic data); the paper presets carry the
published / V-Express settings.

Shared sections: `train` (`LoopConfig`: steps, logging, checkpoints, workdir, resume), `optimizer`
(`jaxtalk.training.state.OptimizerConfig`, AdamW + clipping), `mesh`, `data` (`TrainDataConfig`), `init`
(`InitSource`s: weights loaded over the random init, from a previous training run, a converted checkpoint or a
PyTorch file through `jaxtalk.interop`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxtalk import config as cfg
from jaxtalk.backbones.audio_features import AudioEncoderConfig
from jaxtalk.backbones.clip_text import CLIPTextConfig
from jaxtalk.backbones.sd_unet import RematPolicy
from jaxtalk.backbones.sd_vae import SD_VAE_CONFIG, VAEConfig
from jaxtalk.config import ConfigError, MeshConfig, SyntheticDataConfig
from jaxtalk.diffusion.schedules import ScheduleConfig
from jaxtalk.distributed import DistributedConfig
from jaxtalk.style2talker.style_e import StyleEConfig
from jaxtalk.svp.audio_projection import AudioProjectionConfig
from jaxtalk.svp.kps_guider import KpsGuiderConfig
from jaxtalk.svp.style_extractor import StyleExtractorConfig
from jaxtalk.svp.video_unet import SVPUNetConfig
from jaxtalk.training.state import OptimizerConfig

Dtype = Literal["float32", "bfloat16"]


# ------------------------------------------------------------------------------------------------ shared sections

@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The training loop: length, logging, checkpoints. Step rngs are `fold_in(key(seed), step)`, so a resumed run
    draws the same noise as an uninterrupted one."""

    steps: int = cfg.field(1000, min=1, doc="total optimizer steps (a resumed run continues up to this)")
    log_every: int = cfg.field(10, min=1, doc="steps between metrics.jsonl lines")
    checkpoint_every: int = cfg.field(1000, min=1, doc="steps between checkpoints (the last step is always saved)")
    max_to_keep: int = cfg.field(3, min=1)
    seed: int = cfg.field(0, min=0)
    workdir: str = cfg.field("outputs/train/run", doc="checkpoints/, metrics.jsonl and config.yaml go here")
    resume: bool = cfg.field(True, doc="continue from the newest checkpoint in workdir when there is one")
    progress: bool = cfg.field(True, doc="show a progress bar (loss, samples/s, ETA) on a terminal, one line per "
                               "logged step otherwise")
    tensorboard: bool = cfg.field(True, doc="also write the logged metrics as TensorBoard scalars (an event file "
                                  "in workdir)")
    num_threads: int = cfg.field(2, min=0, doc="grain read threads (0: read in the main thread)")
    fast_compile: bool = cfg.field(False, doc="skip XLA's expensive LLVM passes: quicker compiles, slower steps "
                                   "(CPU tests, debugging)")
    nonfinite: Literal["stop", "skip", "report"] = cfg.field(
        "stop", doc="a step whose loss or gradients are NaN / Inf: `stop` the run (its update is not applied), "
        "`skip` its update and go on, or `report` it and apply it; a non-finite state is never checkpointed")
    distributed: DistributedConfig = cfg.field(default_factory=DistributedConfig,
                                               doc="multi-host start-up (jaxtalk.distributed)")


@dataclasses.dataclass(frozen=True)
class TrainDataConfig:
    """Clip records read by the grain pipeline. `batch_size` is the global batch (all processes together): each
    process reads only the rows of every batch that its devices hold (`jaxtalk.data.pipeline.global_batches`)."""

    record_dir: str = "outputs/data/synthetic"
    batch_size: int = cfg.field(8, min=1)
    shuffle_seed: int = cfg.field(0, min=0)
    stride: int | None = cfg.field(None, min=1, doc="frames between window starts (None: the window length)")
    generate_synthetic: bool = cfg.field(False, doc="write the synthetic dataset to record_dir if it has none")
    synthetic: SyntheticDataConfig = cfg.field(default_factory=SyntheticDataConfig)


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Weights loaded over the random init before training.

    kind "run": a jaxtalk training run (its workdir, or its `checkpoints/` folder), newest step; every component
    the two param trees share is loaded (or only `component`). Any other kind is a `jaxtalk.interop` kind read
    into `component`: `path` is a converted checkpoint folder (`jaxtalk convert` output) or a PyTorch / safetensors
    file (with `config`, the source's config, where shapes do not tell, e.g. a motion module's head count). Every
    loaded tensor must land on a param of the same shape; params the source lacks keep their init.
    """

    kind: str = "run"
    path: str = ""
    component: str | None = None
    config: str | None = cfg.field(None, doc="JSON / YAML file with the source's own config (default: a "
                                   "config.json beside the weights, else inferred from shapes)")

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("init source: path is empty")
        if self.kind != "run" and not self.component:
            raise ConfigError(f"init source {self.path!r}: kind {self.kind!r} needs `component` (which part of the "
                              "model it fills)")


# The speech encoder whose features are cached per clip before training (`training.data`): the same config as
# SVP sampling's `audio` section.
AudioFeaturesConfig = AudioEncoderConfig


@dataclasses.dataclass(frozen=True)
class DiffusionTrainConfig:
    """Noise schedule and loss (defaults: V-Express — v-prediction, zero terminal SNR, min-SNR gamma 5, offset
    noise 0.05, uncond ratio 0.1)."""

    num_train_timesteps: int = cfg.field(1000, min=2)
    beta_start: float = cfg.field(0.00085, min=0.0, max=1.0)
    beta_end: float = cfg.field(0.012, min=0.0, max=1.0)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "cosine"] = "scaled_linear"
    rescale_zero_terminal_snr: bool = True
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "v_prediction"
    min_snr_gamma: float | None = cfg.field(5.0, min=0.0, doc="None: unweighted MSE")
    shift_v_snr: bool = cfg.field(True, doc="v weights min(SNR+1, g)/(SNR+1) as V-Express")
    noise_offset: float = cfg.field(0.05, min=0.0)
    uncond_ratio: float = cfg.field(0.1, min=0.0, max=1.0, doc="samples trained without conditions (for CFG)")

    def schedule(self) -> ScheduleConfig:
        return ScheduleConfig(self.num_train_timesteps, self.beta_start, self.beta_end, self.beta_schedule,
                              self.rescale_zero_terminal_snr, self.prediction_type)


def _check_batch(batch_size: int, mesh: MeshConfig, where: str) -> None:
    fixed = [s for s in (mesh.data, mesh.fsdp) if s != -1]
    n = 1
    for s in fixed:
        n *= s
    if batch_size % n:
        raise ConfigError(f"{where}: data.batch_size={batch_size} must be divisible by mesh.data x mesh.fsdp = {n}")


# ------------------------------------------------------------------------------------------------ SVP

@dataclasses.dataclass(frozen=True)
class SVPModelConfig:
    """The trained SVP parts. The ReferenceNet is the UNet's 2D config without conv_norm_out."""

    unet: SVPUNetConfig = cfg.field(default_factory=SVPUNetConfig.svp)
    vae: VAEConfig = cfg.field(default_factory=lambda: VAEConfig.from_diffusers(SD_VAE_CONFIG))
    kps_guider: KpsGuiderConfig = cfg.field(default_factory=KpsGuiderConfig)
    audio_projection: AudioProjectionConfig = cfg.field(default_factory=AudioProjectionConfig.svp_whisper)
    style_extractor: StyleExtractorConfig = cfg.field(default_factory=StyleExtractorConfig)
    dtype: Dtype = cfg.field("float32", doc="compute dtype; params, gradients and AdamW moments stay float32 "
                             "(bfloat16 needs no loss scaling: it has float32's exponent range)")
    attention: Literal["auto", "xla", "cudnn", "blocked", "reference"] = "auto"
    attention_chunk: int | None = cfg.field(None, min=1, doc="query chunk of attention where no flash kernel applies "
                                            "(off GPU, head_dim > 128): bounds each attention's logits to (batch, "
                                            "heads, chunk, keys) in the forward and backward passes")
    remat: RematPolicy = cfg.field("none", doc="jax.checkpoint policy of the UNet and ReferenceNet blocks: none, "
                                   "full (recompute each block in the backward pass), dots (keep matmul / conv "
                                   "outputs), dots_no_batch (keep weight matmuls only)")


@dataclasses.dataclass(frozen=True)
class SVPDataConfig(TrainDataConfig):
    """SVP batches: `frames` consecutive frames per sample from a `clip_window`-frame window, the reference frame
    from the same window (`same_clip`, stages 1-2) or another clip of the same identity (`same_identity`, the
    paper's stage 3: e.g. a sad video from a happy reference). Frames are box-downsampled to `image_size`."""

    frames: int = cfg.field(8, min=1, doc="f: 1 in stage 1, 8 in stages 2-3")
    clip_window: int = cfg.field(24, min=1, doc="source window; holds the frames, reference and style clip")
    image_size: int = cfg.field(512, min=8)
    reference_source: Literal["same_clip", "same_identity"] = "same_clip"
    feature_dir: str | None = cfg.field(None, doc="audio feature cache (default: <record_dir>/features_<encoder>)")
    flip_rate: float = cfg.field(0.0, min=0.0, max=1.0, doc="horizontal flips (V-Express: 0.5)")
    kps_mode: Literal["head", "v"] = cfg.field("head", doc="Head-Kps (SVP, 8 points) or V-Kps (V-Express, 3)")


@cfg.register_root("train_svp")
@dataclasses.dataclass(frozen=True)
class TrainSVPConfig:
    """One stage of SVP's progressive training (paper §3.3):

    1. single frames; UNet + ReferenceNet + Head-Kps guider trained; no motion modules (`unet.motion.enabled`
       false), audio tokens zero;
    2. f frames; motion modules + audio projection + audio attention (attn2 / norm2) trained;
    3. f frames; only the style attention (attn_style / norm_style) trained, style tokens from the frozen
       style extractor.
    `trainable` overrides the stage's parameter regexes; `zero_params` are zeroed after loading (V-Express zeroes
    attn2.to_out and temporal proj_out at the start of each stage).
    """

    stage: int = cfg.field(1, min=1, max=3)
    model: SVPModelConfig = cfg.field(default_factory=SVPModelConfig)
    audio: AudioFeaturesConfig = cfg.field(default_factory=AudioFeaturesConfig)
    diffusion: DiffusionTrainConfig = cfg.field(default_factory=DiffusionTrainConfig)
    data: SVPDataConfig = cfg.field(default_factory=SVPDataConfig)
    optimizer: OptimizerConfig = cfg.field(default_factory=lambda: OptimizerConfig(learning_rate=1e-5))
    init: tuple[InitSource, ...] = ()
    trainable: tuple[str, ...] | None = None
    zero_params: tuple[str, ...] = ()
    copy_attn1_to_attn1_5: bool = cfg.field(True, doc="attn1_5 / norm1_5 a source lacks start as attn1 / norm1")
    style_sample: bool = cfg.field(True, doc="stage 3 tokens s = mu + sigma eps (False: mu)")
    uncond_style: Literal["zero", "keep"] = cfg.field("zero", doc="style tokens of CFG-dropped samples")
    expression_loss: float = cfg.field(0.0, min=0.0, doc="stage 3: weight of the expression-probe term on the "
                                       "decoded x0 prediction (0 = the paper's loss); needs the VAE decoder in init")
    mouth_loss_weight: float = cfg.field(1.0, min=1.0, doc="V-Express's mouth loss weight: the diffusion loss in "
                                         "the mouth box (estimated from the Head-Kps) counts this many times; 1 = off")
    train: LoopConfig = cfg.field(default_factory=LoopConfig)
    mesh: MeshConfig = cfg.field(default_factory=MeshConfig)

    def validate(self) -> None:
        m, d = self.model, self.data
        u = m.unet.unet
        problems = []
        if self.stage == 1:
            if m.unet.motion.enabled:
                problems.append("stage 1 trains single frames: set model.unet.motion.enabled=false")
            if d.frames != 1:
                problems.append(f"stage 1 trains single frames: data.frames must be 1, got {d.frames}")
        elif not m.unet.motion.enabled:
            problems.append(f"stage {self.stage} trains the motion modules' video: model.unet.motion.enabled=true")
        elif m.unet.motion.temporal_position_encoding and d.frames > m.unet.motion.max_len:
            problems.append(f"data.frames={d.frames} exceeds model.unet.motion.max_len={m.unet.motion.max_len}")
        if self.expression_loss > 0 and self.stage != 3:
            problems.append(f"expression_loss is a stage-3 term (it trains the style attention through the frames "
                            f"it renders); got stage {self.stage}: set expression_loss=0")
        if self.expression_loss > 0 and d.flip_rate > 0:
            problems.append("expression_loss reads expression coefficients that a mirrored face does not have: "
                            "set data.flip_rate=0")
        if self.stage == 3 and not m.unet.use_style:
            problems.append("stage 3 trains the style attention: model.unet.use_style=true")
        if m.unet.use_style and m.style_extractor.d_model != m.unet.style_dim:
            problems.append(f"model.style_extractor.d_model={m.style_extractor.d_model} must equal "
                            f"model.unet.style_dim={m.unet.style_dim}")
        if self.stage == 3 and m.style_extractor.audio_dim != self.audio.feature_dim:
            problems.append(f"model.style_extractor.audio_dim={m.style_extractor.audio_dim} must equal the "
                            f"{self.audio.encoder} feature width {self.audio.feature_dim}")
        if m.audio_projection.embedding_dim != self.audio.feature_dim:
            problems.append(f"model.audio_projection.embedding_dim={m.audio_projection.embedding_dim} must equal the "
                            f"{self.audio.encoder} feature width {self.audio.feature_dim}")
        if m.audio_projection.output_dim != u.cross_attention_dim:
            problems.append(f"model.audio_projection.output_dim={m.audio_projection.output_dim} must equal "
                            f"model.unet.unet.cross_attention_dim={u.cross_attention_dim}")
        if m.kps_guider.embedding_channels != u.block_out_channels[0]:
            problems.append(f"model.kps_guider.embedding_channels must equal block_out_channels[0]="
                            f"{u.block_out_channels[0]}")
        vae_down = 2 ** (len(m.vae.block_out_channels) - 1)
        if 2 ** (len(m.kps_guider.block_out_channels) - 1) != vae_down:
            problems.append("model.kps_guider must downsample as much as the VAE (len(block_out_channels) equal)")
        if m.vae.latent_channels != u.in_channels:
            problems.append(f"model.vae.latent_channels={m.vae.latent_channels} must equal unet in_channels")
        down = vae_down * 2 ** (len(u.block_out_channels) - 1)
        if d.image_size % down:
            problems.append(f"data.image_size={d.image_size} must be divisible by {down} (VAE x UNet downsampling)")
        if d.clip_window < d.frames + (1 if d.reference_source == "same_clip" else 0):
            problems.append(f"data.clip_window={d.clip_window} must hold data.frames={d.frames} plus a reference")
        if problems:
            raise ConfigError("train_svp config: " + "; ".join(problems))
        _check_batch(d.batch_size, self.mesh, "train_svp")


# ------------------------------------------------------------------------------------------------ VAE

@cfg.register_root("train_vae")
@dataclasses.dataclass(frozen=True)
class TrainVAEConfig:
    """Reconstruction training of a small SD-architecture autoencoder (`jaxtalk.training.vae`): L1 + MSE + image
    gradient L1 + a tiny KL term, single frames from the clip records (`data.frames` must be 1)."""

    vae: VAEConfig = cfg.field(default_factory=lambda: VAEConfig.from_diffusers(SD_VAE_CONFIG))
    data: SVPDataConfig = cfg.field(default_factory=lambda: SVPDataConfig(frames=1, clip_window=2, image_size=64))
    kl_weight: float = cfg.field(1e-6, min=0.0)
    mse_weight: float = cfg.field(1.0, min=0.0)
    grad_weight: float = cfg.field(0.5, min=0.0)
    with_reference: bool = cfg.field(True, doc="also reconstruct each sample's reference frame (another frame of "
                                     "the same person: on many identities a near duplicate, twice the compute)")
    optimizer: OptimizerConfig = cfg.field(default_factory=lambda: OptimizerConfig(learning_rate=4e-4))
    init: tuple[InitSource, ...] = ()
    # regexes of the trained params ('/'-joined, e.g. '^vae/decoder/'); None trains everything. A decoder-only
    # run keeps the encoder's latent space, so denoisers trained on it stay valid
    trainable: tuple[str, ...] | None = None
    expression_loss: float = cfg.field(0.0, min=0.0, doc="weight of the expression-probe term on the "
                                       "reconstructions (0 = reconstruction loss only); the probe keeps fitting the "
                                       "real frames in the same step (start it from a fitted probe in init)")
    train: LoopConfig = cfg.field(default_factory=LoopConfig)
    mesh: MeshConfig = cfg.field(default_factory=MeshConfig)

    def validate(self) -> None:
        down = 2 ** (len(self.vae.block_out_channels) - 1)
        problems = []
        if self.data.frames != 1:
            problems.append(f"data.frames must be 1 (single frames), got {self.data.frames}")
        if self.expression_loss > 0 and self.data.flip_rate > 0:
            problems.append("expression_loss reads expression coefficients that a mirrored face does not have: "
                            "set data.flip_rate=0")
        if self.data.image_size % down:
            problems.append(f"data.image_size={self.data.image_size} must be divisible by the VAE's {down}")
        if problems:
            raise ConfigError("train_vae config: " + "; ".join(problems))
        _check_batch(self.data.batch_size, self.mesh, "train_vae")


# ------------------------------------------------------------------------------------------------ expression probe

@cfg.register_root("train_expression_probe")
@dataclasses.dataclass(frozen=True)
class TrainExpressionProbeConfig:
    """The expression probe (`jaxtalk.training.probes.ExpressionProbe`) fitted to the true expression coefficients
    of real training frames: the starting point of the probe that SVP stage 3's `expression_loss` keeps fitting
    in its own step (at the diffusion learning rate a probe from scratch would read little for hundreds of steps).
    """

    data: SVPDataConfig = cfg.field(default_factory=lambda: SVPDataConfig(frames=8, clip_window=8, image_size=64))
    optimizer: OptimizerConfig = cfg.field(default_factory=lambda: OptimizerConfig(learning_rate=1e-3))
    init: tuple[InitSource, ...] = ()
    train: LoopConfig = cfg.field(default_factory=LoopConfig)
    mesh: MeshConfig = cfg.field(default_factory=MeshConfig)

    def validate(self) -> None:
        if self.data.flip_rate > 0:
            raise ConfigError("train_expression_probe config: a mirrored face does not have the frame's expression "
                              "coefficients; set data.flip_rate=0")
        _check_batch(self.data.batch_size, self.mesh, "train_expression_probe")


# ------------------------------------------------------------------------------------------------ style prior

@dataclasses.dataclass(frozen=True)
class StylePriorDataConfig(TrainDataConfig):
    """Pairs of `window`-frame windows with the same labels (so every batch has positives): one sample is a
    window and a partner window of the same identity + emotion (MEAD rule) or of the same clip (HDTF rule)."""

    window: int = cfg.field(64, min=1)
    positives: Literal["identity_emotion", "clip"] = "identity_emotion"
    feature_dir: str | None = None


@cfg.register_root("train_style_prior")
@dataclasses.dataclass(frozen=True)
class TrainStylePriorConfig:
    """Contrastive training of SVP's dual-branch style extractor (paper §3.3, Eq. 6-7): InfoNCE with
    zeta = 1 / (||s_i - s_j||^2 + 1) and temperature `extractor.tau`, modality dropout from the extractor config;
    all parameters trained. `contrast` picks the compared vectors: the sampled s (default) or the mean mu."""

    extractor: StyleExtractorConfig = cfg.field(default_factory=StyleExtractorConfig)
    audio: AudioFeaturesConfig = cfg.field(default_factory=AudioFeaturesConfig)
    data: StylePriorDataConfig = cfg.field(default_factory=StylePriorDataConfig)
    optimizer: OptimizerConfig = cfg.field(default_factory=lambda: OptimizerConfig(learning_rate=1e-4))
    contrast: Literal["sample", "mean"] = "sample"
    init: tuple[InitSource, ...] = ()
    dtype: Dtype = "float32"
    train: LoopConfig = cfg.field(default_factory=LoopConfig)
    mesh: MeshConfig = cfg.field(default_factory=MeshConfig)

    def validate(self) -> None:
        if self.extractor.audio_dim != self.audio.feature_dim:
            raise ConfigError(f"train_style_prior: extractor.audio_dim={self.extractor.audio_dim} must equal the "
                              f"{self.audio.encoder} feature width {self.audio.feature_dim}")
        if self.data.window > self.extractor.pos_len:
            raise ConfigError(f"train_style_prior: data.window={self.data.window} exceeds extractor.pos_len="
                              f"{self.extractor.pos_len}")
        _check_batch(self.data.batch_size, self.mesh, "train_style_prior")


# ------------------------------------------------------------------------------------------------ Style-E

@dataclasses.dataclass(frozen=True)
class StyleEDataConfig(TrainDataConfig):
    """Style-E windows (`model.window` frames). `sparse`: the 64-d per-frame condition —
    `same_speaker` (the released loop: the GT expression of another window of the same speaker) or
    `same_window` (the target window's own expression, what audio2exp approximates at inference)."""

    sparse: Literal["same_speaker", "same_window"] = "same_speaker"


@dataclasses.dataclass(frozen=True)
class TextFeaturesConfig:
    """Emotion-text features: the frozen CLIP text tower's projected EOT feature (not normalised), computed once
    per distinct text before training. `checkpoint`: a `clip_text` interop source (None: random, tests only);
    `features_file`: a precomputed `.npz` with `texts` (N,) and `features` (N, text_dim) instead."""

    clip: CLIPTextConfig = cfg.field(default_factory=CLIPTextConfig)
    checkpoint: str | None = None
    features_file: str | None = None
    seed: int = cfg.field(0, min=0)


@cfg.register_root("train_style_e")
@dataclasses.dataclass(frozen=True)
class TrainStyleEConfig:
    """Style-E (Style2Talker §0.1): x0-prediction MSE on expression windows, 1000-step cosine schedule, uniform t,
    AdamW lr 2e-4. The released loss adds a lip-distance term on BFM keypoints (needs the BFM shape basis,
    which is not available here): it is left out."""

    model: StyleEConfig = cfg.field(default_factory=StyleEConfig)
    text: TextFeaturesConfig = cfg.field(default_factory=TextFeaturesConfig)
    data: StyleEDataConfig = cfg.field(default_factory=StyleEDataConfig)
    diffusion: DiffusionTrainConfig = cfg.field(default_factory=lambda: DiffusionTrainConfig(
        beta_schedule="cosine", rescale_zero_terminal_snr=False, prediction_type="sample", min_snr_gamma=None,
        noise_offset=0.0, uncond_ratio=0.0))
    optimizer: OptimizerConfig = cfg.field(default_factory=lambda: OptimizerConfig(learning_rate=2e-4,
                                                                                   weight_decay=0.0))
    init: tuple[InitSource, ...] = ()
    dtype: Dtype = "float32"
    train: LoopConfig = cfg.field(default_factory=LoopConfig)
    mesh: MeshConfig = cfg.field(default_factory=MeshConfig)

    def validate(self) -> None:
        problems = []
        if self.text.clip.projection_dim != self.model.text_dim and self.text.features_file is None:
            problems.append(f"text.clip.projection_dim={self.text.clip.projection_dim} must equal model.text_dim="
                            f"{self.model.text_dim}")
        if self.model.nfeats != 64 or self.model.sparse_dim != 64:
            problems.append("model.nfeats and model.sparse_dim must be 64 (the records' expression coefficients)")
        if self.diffusion.prediction_type != "sample":
            problems.append("diffusion.prediction_type must be 'sample' (Style-E predicts x0)")
        if problems:
            raise ConfigError("train_style_e config: " + "; ".join(problems))
        _check_batch(self.data.batch_size, self.mesh, "train_style_e")
