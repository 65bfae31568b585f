"""Configs of Style2Talker training on synthetic data: Style-A alone (`system: train_style_a`) and the whole stack
from nothing (`system: train_style2talker`).

Presets: `jaxtalk/presets/train_style_a_tiny.yaml` (tests), `train_style2talker_synthetic` (the run whose
weights ship in `jaxtalk/assets/style2talker_synthetic/`), `train_style2talker_tiny` (tests).
The identity split is explicit: `train_split` is the only data any stage reads; `eval_split` (other seeds) is
recorded for the benches and the demo.
"""

from __future__ import annotations

import dataclasses

from jaxtalk import config as cfg
from jaxtalk.config import MeshConfig
from jaxtalk.distributed import DistributedConfig
from jaxtalk.style2talker.config import Style2TalkerConfig
from jaxtalk.training.config import DiffusionTrainConfig, LoopConfig
from jaxtalk.training.state import OptimizerConfig
from jaxtalk.training.style2talker_data import SplitConfig

STANDARDIZE_DRIVING_DOC = ("train Style-A on standardised driving coefficients (mean / std of the training split, "
                           "stored in model.style_a.driving_mean / driving_std and applied at inference too); off: "
                           "raw, as the original")


@dataclasses.dataclass(frozen=True)
class StyleALossConfig:
    """Weights of the Style-A objective. What replaces the paper's pretrained networks: the perceptual term is a
    feature-matching L1 on the features of our own discriminator (trained alongside, as pix2pixHD) instead of
    VGG / LPIPS; there is no face-parsing network, so the content encoder's parsing channels are zeros."""

    reconstruction: float = cfg.field(1.0, min=0.0, doc="MSE of the frame (in [-1, 1]) against the target")
    perceptual: float = cfg.field(1.0, min=0.0, doc="L1 between discriminator features of output and target")
    adversarial: float = cfg.field(0.05, min=0.0, doc="non-saturating GAN loss of the generator")
    warp: float = cfg.field(1.0, min=0.0, doc="PIRender warping loss: the flow-warped identity vs the target")
    r1: float = cfg.field(0.0, min=0.0, doc="R1 penalty weight on real images (0: off)")
    mouth: float = cfg.field(0.0, min=0.0, doc="MSE inside the mouth box (renderer mouth landmarks + margin), added "
                             "to the frame MSE: the mouth is ~3 % of the frame and is left a blur without it")
    mouth_margin: float = cfg.field(0.04, min=0.0, doc="margin around the mouth landmarks' box, in frame sides")
    style_prob: float = cfg.field(0.5, min=0.0, max=1.0, doc="samples whose target is an art style (else photo)")
    expression: float = cfg.field(0.0, min=0.0, doc="expression perceptual term: MSE between the 64 expression "
                                  "coefficients an expression probe reads off the photo outputs and the target "
                                  "frame's true ones; the probe (a small conv net) is trained in the same step on "
                                  "the real frames only (0: off, no probe, the original objective)")
    probe_shift: int = cfg.field(0, min=0, doc="the probe fits real frames shifted by a random whole number of "
                                 "pixels up to this in x and y (edge padded), so that it learns to read faces "
                                 "rather than memorise the training frames (0: unshifted)")


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Patch discriminator: stride-2 3x3 convs with LeakyReLU at these widths, then a 3x3 conv to one logit."""

    widths: tuple[int, ...] = (32, 64, 128)


@cfg.register_root("train_style_a")
@dataclasses.dataclass(frozen=True)
class TrainStyleAConfig:
    """Style-A (flow-warped VToonify-D generator + pSp + motion generator + refinement + art-style bank) trained on
    synthetic frames of the training identities (see `jaxtalk.training.style_a`)."""

    model: Style2TalkerConfig = cfg.field(default_factory=Style2TalkerConfig)
    split: SplitConfig = cfg.field(default_factory=SplitConfig)
    cache_dir: str = cfg.field("outputs/data/style2talker", doc="where the synthetic split is cached (.npz)")
    loss: StyleALossConfig = cfg.field(default_factory=StyleALossConfig)
    discriminator: DiscriminatorConfig = cfg.field(default_factory=DiscriminatorConfig)
    batch_size: int = cfg.field(8, min=1)
    data_seed: int = cfg.field(0, min=0)
    standardize_driving: bool = cfg.field(False, doc=STANDARDIZE_DRIVING_DOC)
    init_bundle: str = cfg.field("", doc="a Style2Talker bundle whose Style-A, pSp and art-style bank the run "
                                 "starts from (fine-tuning; the discriminator and the expression probe start "
                                 "fresh); empty: random init")
    init_run: str = cfg.field("", doc="a Style-A training run (its newest checkpoint) whose Style-A, pSp and "
                              "art-style bank the run starts from, as init_bundle does (the whole-stack trainer's "
                              "style_a_expression stage starts from its style_a stage this way)")
    optimizer: OptimizerConfig = cfg.field(default_factory=lambda: OptimizerConfig(learning_rate=1e-3,
                                                                                    weight_decay=0.0))
    train: LoopConfig = cfg.field(default_factory=LoopConfig)
    mesh: MeshConfig = cfg.field(default_factory=lambda: MeshConfig(data=1, fsdp=-1, tensor=1))


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage of the whole-stack run."""

    steps: int = cfg.field(100, min=0, doc="0 skips the stage's training (random weights stay)")
    batch_size: int = cfg.field(16, min=1)
    learning_rate: float = cfg.field(1e-3, min=0.0)
    log_every: int = cfg.field(25, min=1)
    checkpoint_every: int = cfg.field(200, min=1)


@cfg.register_root("train_style2talker")
@dataclasses.dataclass(frozen=True)
class TrainStyle2TalkerConfig:
    """Every Style2Talker component trained from nothing, in order: the emotion text encoder (CLIP architecture,
    contrastive against expression windows), audio2exp, Style-E (x0 diffusion on the 1000-step cosine schedule,
    conditioned on the trained audio2exp and text encoder), Style-A, then (when `style_a_expression.steps` > 0)
    Style-A fine-tuned with the expression term. Then the weights are exported in the Style2Talker checkpoint
    format (`<workdir>/export`) with a manifest and loss curves."""

    model: Style2TalkerConfig = cfg.field(default_factory=Style2TalkerConfig)
    train_split: SplitConfig = cfg.field(default_factory=SplitConfig.train)
    eval_split: SplitConfig = cfg.field(default_factory=SplitConfig.eval)
    text: StageConfig = cfg.field(default_factory=lambda: StageConfig(steps=600, batch_size=64, learning_rate=1e-3))
    audio2exp: StageConfig = cfg.field(default_factory=lambda: StageConfig(steps=800, batch_size=64))
    style_e: StageConfig = cfg.field(default_factory=lambda: StageConfig(steps=1500, batch_size=32))
    style_a: StageConfig = cfg.field(default_factory=lambda: StageConfig(steps=1000, batch_size=8))
    style_a_loss: StyleALossConfig = cfg.field(default_factory=StyleALossConfig)
    style_a_expression: StageConfig = cfg.field(
        default_factory=lambda: StageConfig(steps=0, batch_size=8),
        doc="Style-A fine-tuned after its stage with the expression term (style_a_loss with expression = "
        "style_a_expression_weight), a fresh discriminator and probe; 0 steps skips it")
    style_a_expression_weight: float = cfg.field(0.5, min=0.0, doc="loss.expression of the style_a_expression stage")
    discriminator: DiscriminatorConfig = cfg.field(default_factory=DiscriminatorConfig)
    diffusion: DiffusionTrainConfig = cfg.field(default_factory=lambda: DiffusionTrainConfig(
        beta_schedule="cosine", rescale_zero_terminal_snr=False, prediction_type="sample", min_snr_gamma=None,
        noise_offset=0.0, uncond_ratio=0.0))
    text_temperature: float = cfg.field(0.07, min=1e-3, doc="InfoNCE temperature of the text encoder")
    standardize_driving: bool = cfg.field(False, doc=STANDARDIZE_DRIVING_DOC)
    workdir: str = cfg.field("outputs/train/style2talker", doc="stage folders, data cache, export/")
    seed: int = cfg.field(0, min=0)
    fast_compile: bool = cfg.field(False)
    progress: bool = cfg.field(True)
    mesh: MeshConfig = cfg.field(default_factory=lambda: MeshConfig(data=1, fsdp=-1, tensor=1))
    distributed: DistributedConfig = cfg.field(default_factory=DistributedConfig,
                                               doc="multi-host start-up (jaxtalk.distributed; the flags "
                                               "--coordinator --num-processes --process-id set these)")
