"""Style-A training (Style2Talker §"Style-A"): the flow-warped VToonify-D generator with its pSp identity
encoder, content encoder, PIRender motion generator, refinement net and an art-style bank, trained on synthetic
frames of the training identities.

    task = StyleATask.from_config(cfg)            # cfg: TrainStyleAConfig (system: train_style_a)
    loop.train(task, cfg)

Per sample (host, `StyleABatches`): an identity of the training split; a reference frame of it (any of its
rendered clips) at the Style-A input size (and at the frame size, for a model whose motion generator reads a
larger image: `style_a.motion_size`); a target frame of one of its clips with the 27-frame driving window of
ground-truth coefficients around it ([expression 64, angles 3, translation 3, crop 3]); an art style k of the
bank (`art_styles.STYLES`; k = 0 "photo" with probability 1 - `loss.style_prob`) and a style degree d in [0, 1];
the target image is `art_styles.stylise(frame, k, d)` (the photo whatever d).

Forward (device): pSp(reference) -> Z+ -> W+ (the generator's mapping); the art style's Z+ code from the trainable
bank -> W+; the driving code takes rows :7 from the art style and 7: from the identity (`style_code`); Style-A
renders the frame from the reference, the code, the window and d.

Objective (the paper's reconstruction + perceptual + adversarial, `StyleALossConfig`):
  L_G = w_rec MSE(out, target) + w_mouth MSE_mouth(out, target) + w_perc sum_l |D_l(out) - D_l(target)|_1
        + w_adv softplus(-D(out))
        + w_warp MSE(warp_image, frame at the flow's size)
        + w_expr [photo samples] |P(out) - e|^2                     (P with stop_gradient params)
  L_D = softplus(-D(target)) + softplus(D(sg(out))) (+ R1)
  L_P = |P(frame) - e|^2                                            (only with w_expr > 0)
MSE_mouth is the MSE inside the box of the renderer's mouth landmarks (`style2talker_data.mouth_boxes`, grown by
`mouth_margin`); an addition to the paper, whose perceptual and face-parsing losses see the mouth, which a plain
frame MSE on a 64-pixel face leaves a blur (w_mouth 0 turns it off). P is an expression probe (`ExpressionProbe`)
trained on the real frames of the batch to read their 64 true expression coefficients e; its reading of the
generated photo frames is a perceptual term that knows about brows, eyes and cheeks, which carry the emotion and
which pixel losses on a 64-pixel face hardly see (an addition to the paper, whose VGG features are trained on
faces; w_expr 0 leaves it out).
The discriminator is a patch discriminator trained in the same step: its params are behind `stop_gradient` in
L_G and the generator output is behind `stop_gradient` in L_D, so one optimiser update on L_G + L_D is exactly
the alternating GAN update done simultaneously. Replacements for pretrained networks that do not exist here: the
perceptual term uses the features of this discriminator instead of VGG / LPIPS; the face-parsing input of the
content encoder is zeros (no BiSeNet); the StyleGAN / DualStyleGAN generator is trained from scratch rather than
fine-tuned from an FFHQ checkpoint. The FIR resampling kernels and the sinusoidal / constant buffers are not
trained.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.style2talker import art_styles
from jaxtalk.style2talker.config import Style2TalkerConfig
from jaxtalk.style2talker.models import build_modules
from jaxtalk.training import style2talker_data as sd
from jaxtalk.training.loop import Task
from jaxtalk.training.probes import ExpressionProbe, probe_terms, random_shift
from jaxtalk.training.style2talker_config import DiscriminatorConfig, StyleALossConfig, TrainStyleAConfig

# Constants kept as params (exact checkpoint round trips): FIR resampling kernels and StyleGAN noise buffers.
FROZEN = ("fir_kernel", "noises/")


class PatchDiscriminator(nn.Module):
    """Stride-2 3x3 convs with LeakyReLU 0.2 at `widths`, then a 3x3 conv to one logit per patch.
    Returns (logits (B, h, w, 1), [feature per layer])."""

    widths: tuple[int, ...] = (32, 64, 128)

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        feats = []
        for i, w in enumerate(self.widths):
            x = nn.leaky_relu(nn.Conv(w, (3, 3), strides=2, padding=1, name=f"conv_{i}")(x), 0.2)
            feats.append(x)
        return nn.Conv(1, (3, 3), padding=1, name="logits")(x), feats


def to_signed(x: jax.Array) -> jax.Array:
    """uint8 or [0, 1] float images -> float32 in [-1, 1]."""
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 127.5 - 1.0
    return x.astype(jnp.float32) * 2.0 - 1.0


def mouth_mask(boxes: jax.Array, size: int, margin: float) -> jax.Array:
    """(B, size, size, 1) float32: 1 inside each row's mouth box [x0, y0, x1, y1] (frame sides) grown by `margin`,
    0 outside; pixel centres decide."""
    g = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    boxes = boxes.astype(jnp.float32)
    inside = lambda lo, hi: (g[None] >= lo[:, None] - margin) & (g[None] <= hi[:, None] + margin)  # noqa: E731
    mx, my = inside(boxes[:, 0], boxes[:, 2]), inside(boxes[:, 1], boxes[:, 3])
    return (my[:, :, None] & mx[:, None, :])[..., None].astype(jnp.float32)


def driving_style(style_a: nn.Module, style_a_params: Any, psp: nn.Module, psp_variables: Any, bank: jax.Array,
                  reference: jax.Array, style_index: jax.Array) -> jax.Array:
    """W+ (B, n_latent, D) Style-A is driven with: art style rows :7 (bank Z+ -> W+), identity rows 7: (pSp)."""
    to_w = lambda z: style_a.apply({"params": style_a_params}, z, method="zplus2wplus")
    identity = to_w(psp.apply(psp_variables, reference))
    art = to_w(bank[style_index])
    return jnp.concatenate([art[:, :7], identity[:, 7:]], axis=1)


class StyleABatches:
    """Host batches (see the module docstring) as a pure function of (seed, batch index, row): each process
    makes only the rows of every global batch that its devices hold (`style2talker_data.RowBatches`)."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int, loss: StyleALossConfig,
                 radius: int, mouth: np.ndarray, rows: Any = None):
        self.a, self.batch_size, self.seed, self.loss, self.radius = arrays, batch_size, seed, loss, radius
        self.mouth = mouth  # (rendered clips, F, 4) mouth boxes, `style2talker_data.mouth_boxes`
        if len(arrays["clip"]) == 0:
            raise ValueError("the training split has no rendered clips; raise split.rendered_identities")
        ident = arrays["identity"][arrays["clip"]]
        self.mates = {int(i): np.flatnonzero(ident == i) for i in np.unique(ident)}
        self.ident = ident
        self.batches = sd.RowBatches(self.row, batch_size, seed, rows)

    def row(self, rng: np.random.Generator) -> dict[str, Any]:
        """One training sample: a rendered frame, a reference frame of the same identity, the driving
        coefficient window, an art style and its degree."""
        a = self.a
        n = a["frames"].shape[1]
        r = int(rng.integers(len(a["clip"])))
        ref_clip = int(rng.choice(self.mates[int(self.ident[r])]))
        fr, ft = int(rng.integers(n)), int(rng.integers(n))
        c = int(a["clip"][r])
        k = int(rng.integers(1, len(art_styles.STYLES))) if rng.random() < self.loss.style_prob else 0
        d = float(min(1.0, rng.uniform(0.0, 1.5)))
        frame = a["frames"][r, ft]
        return {"reference": a["frames_in"][ref_clip, fr], "reference_full": a["frames"][ref_clip, fr], "frame": frame,
                "target": art_styles.stylise(frame, k, d).astype(np.float32),
                "driven": sd.coefficient_windows(a["expression"][c], a["pose"][c], np.array([ft]),
                                                 self.radius)[0].astype(np.float32),
                "style": np.int32(k), "degree": np.float32(d), "mouth": self.mouth[r, ft],
                "expression": a["expression"][c, ft].astype(np.float32)}

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return self.batches(index)


@dataclasses.dataclass(frozen=True)
class StyleATask(Task):
    """Model, data and loss of Style-A training (hashable: it keys the compiled-step cache)."""

    model: Style2TalkerConfig
    split: sd.SplitConfig
    cache_dir: str
    loss_weights: StyleALossConfig = StyleALossConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    batch_size: int = 8
    data_seed: int = 0
    init_bundle: str = ""
    init_run: str = ""

    name = "style_a"

    @classmethod
    def from_config(cls, cfg: TrainStyleAConfig) -> StyleATask:
        if cfg.init_bundle and cfg.init_run:
            raise ValueError(f"init_bundle={cfg.init_bundle} and init_run={cfg.init_run}: give one starting point")
        model = cfg.model
        if cfg.standardize_driving:
            model = sd.with_driving_statistics(model, sd.load_or_build(cfg.split, cfg.cache_dir))
        return cls(model, cfg.split, cfg.cache_dir, cfg.loss, cfg.discriminator, cfg.batch_size, cfg.data_seed,
                   cfg.init_bundle, cfg.init_run)

    def modules(self) -> dict[str, nn.Module]:
        m = build_modules(self.model)
        out = {"style_a": m["style_a"], "psp": m["psp"], "discriminator": PatchDiscriminator(self.discriminator.widths)}
        if self.loss_weights.expression > 0:
            out["probe"] = ExpressionProbe()
        return out

    def init_variables(self, rng: jax.Array) -> dict:
        m, a, p = self.modules(), self.model.style_a, self.model.psp
        k_sa, k_psp, k_bank, k_d = jax.random.split(rng, 4)
        x = jnp.zeros((1, a.in_size, a.in_size, 3))
        sa = m["style_a"].init(k_sa, x, jnp.zeros((1, a.n_latent, a.style_dim)), x,
                               jnp.zeros((1, self.model.window_frames, a.coeff_nc)), 0.5)
        psp = m["psp"].init(k_psp, jnp.zeros((1, p.input_size, p.input_size, 3)))
        bank = jax.random.normal(k_bank, (len(art_styles.STYLES), a.n_latent, a.style_dim))
        frame = jnp.zeros((1, a.out_size, a.out_size, 3))
        params = {"style_a": sa["params"], "psp": psp["params"], "psp_stats": psp["batch_stats"], "style_bank": bank,
                  "discriminator": m["discriminator"].init(k_d, frame)["params"]}
        if "probe" in m:
            params["probe"] = m["probe"].init(jax.random.fold_in(k_d, 1), frame)["params"]
        return {"params": params}

    def trainable_patterns(self) -> tuple[str, ...]:
        return (r"^style_a/(?!.*(" + "|".join(FROZEN) + r"))", r"^psp/", r"^style_bank$", r"^discriminator/",
                r"^probe/")

    def prepare_params(self, params: dict) -> dict:
        """Style-A and pSp start from `models.random_models` (the original initialisers: equalized-LR N(0, 1)
        weights, modulation biases 1, AdaIN [1, 0], identity colour transforms, exact FIR kernels), or from a
        trained bundle's (`init_bundle`) or run's (`init_run`) Style-A, pSp and art-style bank."""
        out = dict(params)
        for name, tree in self._starting_point().items():
            if jax.tree.structure(tree) != jax.tree.structure(params[name]):
                source = self.init_bundle or self.init_run or "the random init"
                raise ValueError(f"style_a init: the {name} params of {source} differ in structure")
            out[name] = jax.tree.map(lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding),
                                     tree, params[name])
        return out

    def _starting_point(self) -> dict[str, Any]:
        """The trees that replace the random init: style_a, psp, psp_stats (and style_bank from a trained source)."""
        if self.init_run:
            from jaxtalk.training.sources import run_params

            run = run_params(self.init_run)
            return {name: run[name] for name in ("style_a", "psp", "psp_stats", "style_bank")}
        if self.init_bundle:
            from jaxtalk.style2talker.loading import load_models

            source = load_models(self.init_bundle, self.model)
            if tuple(source.style_names) != tuple(art_styles.STYLE_NAMES):
                raise ValueError(f"init_bundle {self.init_bundle}: its art styles {list(source.style_names)} are "
                                 f"not {list(art_styles.STYLE_NAMES)}")
        else:
            from jaxtalk.style2talker.models import random_models

            source = random_models(self.model, seed=0)
        rm = source.params
        fresh = {"style_a": rm["style_a"], "psp": rm["psp"]["params"], "psp_stats": rm["psp"]["batch_stats"]}
        if self.init_bundle:
            fresh["style_bank"] = np.asarray(source.style_bank, np.float32)
        return fresh

    def dataset(self) -> grain.MapDataset:
        arrays = sd.load_or_build(self.split, self.cache_dir)
        batches = StyleABatches(arrays, self.batch_size, self.data_seed, self.loss_weights, self.model.inference.radius,
                                sd.mouth_boxes(self.split, arrays))
        return sd.index_dataset(batches)

    def device_fields(self) -> tuple[str, ...]:
        return ("reference", "reference_full", "frame", "target", "driven", "style", "degree", "mouth", "expression")

    def generate(self, params: Any, batch: dict, *, return_aux: bool = False) -> Any:
        """Style-A output (B, out, out, 3) in [-1, 1] for a batch (see `StyleABatches`)."""
        m = self.modules()
        psp_vars = {"params": params["psp"], "batch_stats": params["psp_stats"]}
        reference = to_signed(batch["reference"])
        psp_in = jax.image.resize(reference, (reference.shape[0], self.model.psp.input_size,
                                              self.model.psp.input_size, 3), "bilinear") \
            if self.model.psp.input_size != reference.shape[1] else reference
        style = driving_style(m["style_a"], params["style_a"], m["psp"], psp_vars, params["style_bank"], psp_in,
                              batch["style"])
        # the motion generator reads the frame-size reference when the model sets motion_size (else in_size)
        motion_in = to_signed(batch["reference_full"]) if self.model.style_a.motion_size else reference
        return m["style_a"].apply({"params": params["style_a"]}, reference, style, motion_in, batch["driven"],
                                  batch["degree"], return_aux=return_aux)

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        w = self.loss_weights
        disc = self.modules()["discriminator"]
        out, aux = self.generate(params, batch, return_aux=True)
        target = batch["target"].astype(jnp.float32) * 2.0 - 1.0
        frame = to_signed(batch["frame"])
        d_frozen = jax.lax.stop_gradient(params["discriminator"])
        logit_fake, feat_fake = disc.apply({"params": d_frozen}, out)
        _, feat_real = disc.apply({"params": d_frozen}, target)
        sq = (out - target) ** 2
        rec = jnp.mean(sq)
        box = mouth_mask(batch["mouth"], out.shape[1], w.mouth_margin)
        mouth = jnp.sum(box * sq) / (3.0 * jnp.sum(box) + 1e-6)
        perc = sum(jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r))) for f, r in zip(feat_fake, feat_real))
        adv = jnp.mean(jax.nn.softplus(-logit_fake))
        warp_img = aux["warp_image"]
        small = jax.image.resize(frame, (frame.shape[0], *warp_img.shape[1:3], 3), "linear")
        warp = jnp.mean((warp_img.astype(jnp.float32) - small) ** 2)

        def d_real_logits(x):
            return disc.apply({"params": params["discriminator"]}, x)[0]

        real_logit = d_real_logits(target)
        fake_logit = d_real_logits(jax.lax.stop_gradient(out))
        d_loss = jnp.mean(jax.nn.softplus(-real_logit)) + jnp.mean(jax.nn.softplus(fake_logit))
        r1 = jnp.float32(0.0)
        if w.r1 > 0:
            grad = jax.grad(lambda x: jnp.sum(d_real_logits(x)))(target)
            r1 = jnp.mean(jnp.sum(grad ** 2, axis=(1, 2, 3)))
        g_loss = w.reconstruction * rec + w.mouth * mouth + w.perceptual * perc + w.adversarial * adv + w.warp * warp
        total = g_loss + d_loss + 0.5 * w.r1 * r1
        extra = {}
        if w.expression > 0:
            real = random_shift(jax.random.fold_in(rng, 7), frame, w.probe_shift)
            fit, read = probe_terms(self.modules()["probe"], params["probe"], real, out, batch["expression"])
            photo = (batch["style"] == 0).astype(jnp.float32)
            expr = jnp.sum(photo * read) / jnp.maximum(jnp.sum(photo), 1.0)
            total = total + w.expression * expr + fit
            extra = {"expr": expr, "probe_fit": fit}
        psnr = -10.0 * jnp.log10(jnp.mean(((out - target) / 2.0) ** 2) + 1e-10)
        mouth_psnr = -10.0 * jnp.log10(mouth / 4.0 + 1e-10)
        return total, {"rec": rec, "mouth_psnr": mouth_psnr, "perc": perc, "adv": adv, "warp": warp, "d": d_loss,
                       "r1": r1, "psnr": psnr, **extra}


def export_into_bundle(run_dir: str | Path, out: str | Path, base: str | Path | None = None,
                       command: str = "") -> dict[str, Any]:
    """Write a copy of the Style2Talker bundle `base` (default: the run's `init_bundle`) to `out` with the
    Style-A, pSp and art-style bank of the Style-A run in `run_dir` (its newest checkpoint) in place of its own,
    in the torch-safetensors layout of the shipped weights; the other components are copied as they are. The
    manifest keeps the base's record and adds the run's as `style_a_run` (command, commit, steps, losses, wall
    time); the run's loss curves go to `curves_style_a_run.png`. Returns the manifest."""
    import json
    import shutil

    from PIL import Image

    from jaxtalk import config as config_lib
    from jaxtalk.style2talker.loading import load_models, save_checkpoints
    from jaxtalk.training import loop
    from jaxtalk.training.style2talker import _git_commit, curve_image, restore_params

    run_dir, out = Path(run_dir), Path(out)
    cfg = config_lib.load(run_dir / "config.yaml")
    if not (base or cfg.init_bundle) or not (Path(base or cfg.init_bundle) / "config.yaml").is_file():
        raise FileNotFoundError(f"base bundle {base or cfg.init_bundle or '(none)'}: no Style2Talker bundle there; "
                                "pass --base")
    base = Path(base or cfg.init_bundle)
    task = StyleATask.from_config(cfg)
    params, step = restore_params(task, cfg)
    models = load_models(base, task.model)
    models.params = {**models.params, "style_a": params["style_a"],
                     "psp": {"params": params["psp"], "batch_stats": params["psp_stats"]}}
    models.style_bank, models.style_names = np.asarray(params["style_bank"], np.float32), art_styles.STYLE_NAMES
    manifest = json.loads((base / "manifest.json").read_text()) if (base / "manifest.json").is_file() else {}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    save_checkpoints(models, tmp)
    rows = [r for r in loop.read_metrics(run_dir) if r["step"] <= step]  # a run still going logs past it
    Image.fromarray(curve_image(rows, "style_a")).save(tmp / "curves_style_a_run.png")
    wall = sum((b["step"] - a["step"]) / b["steps_per_sec"] for a, b in zip(rows, rows[1:]) if b.get("steps_per_sec"))
    manifest.pop("evaluation", None)  # the base's figures are not this model's
    manifest["style_a_run"] = {
        "command": command, "commit": _git_commit(), "base": str(base), "base_commit": manifest.get("commit"),
        "steps": step, "batch_size": cfg.batch_size, "learning_rate": cfg.optimizer.learning_rate,
        "loss": dataclasses.asdict(cfg.loss), "wall_seconds_from_step_rates": round(wall, 1),
        "final_metrics": {k: v for k, v in rows[-1].items() if k != "steps_per_sec"} if rows else {},
        "curves": "curves_style_a_run.png"}
    manifest["curves"] = [c for c in manifest.get("curves", []) if c != "curves_style_a_run.png"] + \
        ["curves_style_a_run.png"]
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest
