"""SVP's three-stage diffusion training (paper §3.3) with V-Express's loss settings.

    task = SVPTask.from_config(cfg)          # cfg: TrainSVPConfig (system: train_svp)
    loop.train(task, cfg)

Trained system (param tree components, the same in every stage so runs chain): `unet` (SVPUNet), `reference_net`,
`kps_guider`, `audio_projection`, the frozen `vae` encoder (its decoder is not held) and, with `model.unet.use_style`, the frozen `style_extractor`
(used in stage 3). One step, per sample of f frames:

    z_0   = VAE(frames) sample * scaling_factor                (frozen VAE, one call for frames + reference)
    bank  = ReferenceNet(VAE(reference) mean * scaling_factor, t=0, context=0)
    kps   = guider(Head-Kps images);  audio = AudioProjection(per-frame windows)   (stage 1: audio tokens zero)
    style = extractor(expression, audio per frame): s = mu + sigma eps             (stage 3 only)
    CFG dropout: with probability `uncond_ratio` a sample gets a zero bank, zero kps features, zero audio tokens
                 (and zero style tokens with `uncond_style: zero`), V-Express's unconditional branch
    eps   = N(0, I) + noise_offset * N(0, I) per (sample, channel);  t ~ U{0..T-1}
    loss  = mean_b w_b * |UNet(z_t, t, audio, bank, kps, style) - v_t|^2,  w_b = min(SNR+1, gamma)/(SNR+1)
    (+ with `expression_loss` > 0, stage 3: lambda * mean_b abar_t |P(VAE.decode(x0_hat)) - expression|^2 + the
       probe's own fit on the real frames — `jaxtalk.training.probes`; P reads the 64 true coefficients)

Stages (trainable regexes, `stage_trainable`): 1 — the UNet (not its audio / style attention), the ReferenceNet
(not its last up block, which V-Express freezes, nor its unused `conv_out`) and the kps guider, single frames and no
motion modules; 2 — motion modules, audio projection and the UNet's attn2 / norm2; 3 — attn_style / norm_style.
Each stage starts from the previous run (`init: [{kind: run, path: ...}]`) plus e.g. an AnimateDiff motion-module
checkpoint (`{kind: animatediff_motion_module, component: unet, path: ...}`) and, in stage 3, the style prior run.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxtalk import diffusion
from jaxtalk.backbones.sd_vae import AutoencoderKL
from jaxtalk.svp.reference_net import ReferenceNet
from jaxtalk.svp.style_extractor import ProbabilisticStyleExtractor
from jaxtalk.svp.video_unet import SVPUNet
from jaxtalk.training import data as data_lib
from jaxtalk.training import sources
from jaxtalk.training.config import (
    AudioFeaturesConfig,
    DiffusionTrainConfig,
    InitSource,
    SVPDataConfig,
    SVPModelConfig,
    TrainSVPConfig,
)
from jaxtalk.training.loop import Task
from jaxtalk.training.probes import ExpressionProbe, probe_terms

_BLOCK = r"transformer_blocks_\d+/"
# Checkpoint tensors the trained system does not hold: the VAE decoder (training only encodes) and the SD UNet's
# conv_norm_out, which V-Express's ReferenceNet drops.
SOURCE_UNUSED = {"vae": (r"^(decoder|post_quant_conv)/",), "reference_net": (r"^conv_norm_out/",)}


def stage_trainable(stage: int, num_levels: int) -> tuple[str, ...]:
    """The params each stage trains (regexes over '/'-joined paths), for a UNet of `num_levels` levels."""
    if stage == 1:  # the ReferenceNet's last up block is frozen, as in V-Express (its tail feeds no bank entry)
        return (rf"^unet/(?!.*{_BLOCK}(attn2|norm2|attn_style|norm_style)/)(?!.*motion_modules_\d+/)",
                rf"^reference_net/(?!up_blocks_{num_levels - 1}/|conv_out/)",
                r"^kps_guider/")
    if stage == 2:
        return (r"^unet/.*motion_modules_\d+/", rf"^unet/.*{_BLOCK}(attn2|norm2)/", r"^audio_projection/")
    if stage == 3:
        return (rf"^unet/.*{_BLOCK}(attn_style|norm_style)/",)
    raise ValueError(f"SVP has training stages 1, 2, 3; got {stage}")


def _dtype(name: str) -> Any:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


@dataclasses.dataclass(frozen=True)
class SVPTask(Task):
    """The loss, model and data of one SVP training stage (hashable: it keys the compiled-step cache)."""

    stage: int
    model: SVPModelConfig
    diffusion: DiffusionTrainConfig
    data: SVPDataConfig
    audio: AudioFeaturesConfig
    init: tuple[InitSource, ...] = ()
    trainable: tuple[str, ...] | None = None
    zero_params: tuple[str, ...] = ()
    copy_attn1_to_attn1_5: bool = True
    style_sample: bool = True
    uncond_style: str = "zero"
    expression_loss: float = 0.0
    mouth_loss_weight: float = 1.0

    name = "svp"

    @classmethod
    def from_config(cls, cfg: TrainSVPConfig) -> SVPTask:
        return cls(cfg.stage, cfg.model, cfg.diffusion, cfg.data, cfg.audio, cfg.init, cfg.trainable,
                   cfg.zero_params, cfg.copy_attn1_to_attn1_5, cfg.style_sample, cfg.uncond_style,
                   cfg.expression_loss, cfg.mouth_loss_weight)

    # ---------------------------------------------------------------------------------------------- model
    def modules(self) -> dict[str, nn.Module]:
        m = self.model
        kw = dict(dtype=_dtype(m.dtype), param_dtype=jnp.float32)
        mods: dict[str, nn.Module] = {
            "unet": SVPUNet(m.unet, attention_implementation=m.attention, query_chunk_size=m.attention_chunk,
                            remat=m.remat, **kw),
            "reference_net": ReferenceNet(m.unet.unet, attention_implementation=m.attention,
                                          query_chunk_size=m.attention_chunk, remat=m.remat, **kw),
            "vae": AutoencoderKL(m.vae, implementation=m.attention, query_chunk_size=m.attention_chunk, **kw),
            "kps_guider": m.kps_guider.module(**kw),
            "audio_projection": m.audio_projection.module(**kw),
        }
        if m.unet.use_style:
            mods["style_extractor"] = ProbabilisticStyleExtractor(m.style_extractor, m.attention, **kw)
        if self.expression_loss > 0:
            mods["expression_probe"] = ExpressionProbe()
        return mods

    def init_key(self) -> Any:
        return ("svp", self.model)

    def init_variables(self, rng: jax.Array) -> dict:
        m, mods = self.model, self.modules()
        u = m.unet.unet
        keys = dict(zip(mods, jax.random.split(rng, len(mods))))
        s = 2 ** (len(u.block_out_channels) - 1)
        f = 2 ** (len(m.vae.block_out_channels) - 1)
        g = 2 ** (len(m.kps_guider.block_out_channels) - 1)
        ap = m.audio_projection
        params = {
            "unet": mods["unet"].init(keys["unet"], **mods["unet"].init_inputs(frames=1))["params"],
            "reference_net": mods["reference_net"].init(keys["reference_net"], jnp.zeros((1, s, s, u.in_channels)),
                                                        jnp.zeros((1,)), jnp.zeros((1, 1, u.cross_attention_dim)))[
                "params"],
            # the decoder only where the expression term decodes x0_hat; otherwise training never decodes
            "vae": mods["vae"].init(keys["vae"], jnp.zeros((1, f, f, m.vae.in_channels)),
                                    method=None if self.expression_loss > 0 else "encode")["params"],
            "kps_guider": mods["kps_guider"].init(keys["kps_guider"], jnp.zeros(
                (1, 1, g, g, m.kps_guider.conditioning_channels)))["params"],
            "audio_projection": mods["audio_projection"].init(keys["audio_projection"], jnp.zeros(
                (1, ap.window, ap.embedding_dim)))["params"],
        }
        if "style_extractor" in mods:
            ex = m.style_extractor
            params["style_extractor"] = mods["style_extractor"].init(
                keys["style_extractor"], jnp.zeros((1, 2, ex.exp_dim)), jnp.zeros((1, 2, ex.audio_dim)))["params"]
        if "expression_probe" in mods:
            params["expression_probe"] = mods["expression_probe"].init(
                keys["expression_probe"], jnp.zeros((1, self.data.image_size, self.data.image_size, 3)))["params"]
        return {"params": params}

    def trainable_patterns(self) -> tuple[str, ...]:
        probe = (r"^expression_probe/",) if self.expression_loss > 0 else ()
        if self.trainable is not None:
            return self.trainable + probe
        return stage_trainable(self.stage, len(self.model.unet.unet.block_out_channels)) + probe

    def prepare_params(self, params: dict) -> dict:
        """Init sources, then attn1 -> attn1_5 copies where a source filled attn1 only, then `zero_params`."""
        unused = {k: v for k, v in SOURCE_UNUSED.items() if not (k == "vae" and self.expression_loss > 0)}
        params, written = sources.apply_init_sources(params, self.init, unused)
        if self.expression_loss > 0 and not any(k.startswith("vae/decoder/") for k in written):
            raise ValueError("expression_loss decodes the x0 prediction, so the VAE decoder must be loaded: add an "
                             "init source that holds it, e.g. {kind: run, path: <the VAE run>, component: vae}")
        flat = traverse_util.flatten_dict(params, sep="/")
        if self.copy_attn1_to_attn1_5 and written:
            for key in list(flat):
                for src, dst in (("/attn1/", "/attn1_5/"), ("/norm1/", "/norm1_5/")):
                    if key.startswith("unet/") and src in key:
                        target = key.replace(src, dst)
                        if target in flat and key in written and target not in written:
                            flat[target] = flat[key]
        patterns = [re.compile(p) for p in self.zero_params]
        for key, value in flat.items():
            if any(p.search(key) for p in patterns):
                flat[key] = jnp.zeros_like(value)
        if patterns and not any(any(p.search(k) for p in patterns) for k in flat):
            raise ValueError(f"zero_params {list(self.zero_params)} match no parameter")
        return traverse_util.unflatten_dict(flat, sep="/")

    # ---------------------------------------------------------------------------------------------- data
    def dataset(self) -> grain.MapDataset:
        d, ap = self.data, self.model.audio_projection
        data_lib.ensure_records(d)
        store = None
        if self.stage > 1:
            fdir = data_lib.ensure_audio_features(d.record_dir, self.audio, d.feature_dir)
            store = data_lib.FeatureStore(d.record_dir, fdir, self.audio.feature_dim)
        prep = data_lib.SVPBatchPrep(d.record_dir, d, store, ap.num_pad_audio_frames, ap.vectors_per_frame,
                                     style=self.stage == 3, kps_mode=d.kps_mode,
                                     mouth_masks=self.mouth_loss_weight != 1.0)
        return data_lib.make_batches(d.record_dir, d.clip_window, d.batch_size, d.shuffle_seed, prep, d.stride)

    def device_fields(self) -> tuple[str, ...]:
        fields = ("frames", "reference", "kps")
        if self.stage > 1:
            fields += ("audio",)
        if self.stage == 3:
            fields += ("style_exp", "style_audio")
        if self.expression_loss > 0:
            fields += ("expression",)
        if self.mouth_loss_weight != 1.0:
            fields += ("mouth_mask",)
        return fields

    # ---------------------------------------------------------------------------------------------- loss
    def encode_images(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z_0 (B, F, h, w, C): posterior samples of the frames, reference latents (B, h, w, C): posterior means),
        both times `scaling_factor`, from one call of the frozen VAE encoder."""
        m, vae = self.model, self.modules()["vae"]
        frames, reference = batch["frames"], batch["reference"]
        b, f = frames.shape[:2]
        images = jnp.concatenate([frames.reshape(b * f, *frames.shape[2:]), reference])
        x = images.astype(jnp.float32) / 127.5 - 1.0
        mean, logvar = vae.apply({"params": params["vae"]}, x.astype(_dtype(m.dtype)), method="encode")
        mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
        z0 = mean[:b * f] + jnp.exp(0.5 * logvar[:b * f]) * jax.random.normal(rng, mean[:b * f].shape)
        z0 = (z0 * m.vae.scaling_factor).reshape(b, f, *mean.shape[1:])
        return jax.lax.stop_gradient(z0), jax.lax.stop_gradient(mean[b * f:] * m.vae.scaling_factor)

    def conditions(self, params: Any, batch: dict, ref_latents: jax.Array, rng: jax.Array) -> dict:
        """Reference bank, kps features, audio and style tokens with V-Express's CFG dropout applied."""
        m, mods = self.model, self.modules()
        u = m.unet.unet
        dtype = _dtype(m.dtype)
        k_drop, k_style = jax.random.split(rng)
        frames = batch["frames"]
        b, f = frames.shape[:2]
        keep = (jax.random.uniform(k_drop, (b,)) >= self.diffusion.uncond_ratio).astype(dtype)

        ref_latents = ref_latents.astype(dtype)
        _, bank = mods["reference_net"].apply(
            {"params": params["reference_net"]}, ref_latents, jnp.zeros((b,), jnp.float32),
            jnp.zeros((b, 1, u.cross_attention_dim), dtype))
        bank = tuple(e * keep[:, None, None].astype(e.dtype) for e in bank)

        kps = batch["kps"].astype(dtype) / 255.0
        kps = mods["kps_guider"].apply({"params": params["kps_guider"]}, kps)
        kps = kps * keep[:, None, None, None, None].astype(kps.dtype)

        ap = m.audio_projection
        if self.stage == 1:
            audio = jnp.zeros((b, f, ap.num_queries, ap.output_dim), dtype)
        else:
            windows = batch["audio"]
            tokens = mods["audio_projection"].apply({"params": params["audio_projection"]},
                                                    windows.reshape(b * f, *windows.shape[2:]).astype(dtype))
            audio = tokens.reshape(b, f, *tokens.shape[1:]) * keep[:, None, None, None].astype(tokens.dtype)

        style = None
        if self.stage == 3:
            prior = mods["style_extractor"].apply(
                {"params": params["style_extractor"]}, batch["style_exp"].astype(dtype),
                batch["style_audio"].astype(dtype), noise_key=k_style if self.style_sample else None)
            style = jax.lax.stop_gradient(prior.s)
            if self.uncond_style == "zero":
                style = style * keep[:, None, None].astype(style.dtype)
        return {"bank": bank, "kps": kps, "audio": audio, "style": style, "keep": keep}

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        m, dcfg, mods = self.model, self.diffusion, self.modules()
        dtype = _dtype(m.dtype)
        schedule = diffusion.NoiseSchedule.from_config(dcfg.schedule())
        k_cond, k_vae, k_noise, k_offset, k_t = jax.random.split(rng, 5)
        b = batch["frames"].shape[0]
        z0, ref_latents = self.encode_images(params, batch, k_vae)
        cond = self.conditions(params, batch, ref_latents, k_cond)
        noise = jax.random.normal(k_noise, z0.shape, jnp.float32)
        if dcfg.noise_offset:
            noise = diffusion.apply_noise_offset(k_offset, noise, dcfg.noise_offset)
        t = diffusion.sample_timesteps(k_t, b, schedule)
        z_t = diffusion.add_noise(schedule, z0, noise, t)
        target = diffusion.training_target(schedule, z0, noise, t)
        pred = mods["unet"].apply({"params": params["unet"]}, z_t.astype(dtype), t, cond["audio"],
                                  reference_bank=cond["bank"], kps_features=cond["kps"], style_tokens=cond["style"])
        weights = None
        if dcfg.min_snr_gamma is not None:
            weights = diffusion.min_snr_weights(diffusion.snr(schedule, t), dcfg.min_snr_gamma,
                                                dcfg.prediction_type, dcfg.shift_v_snr)
        loss = diffusion.diffusion_loss(pred, target, weights, self.mouth_weights(batch, pred.shape))
        metrics = {"mse": diffusion.diffusion_loss(pred, target), "uncond_frac": 1.0 - jnp.mean(cond["keep"])}
        if self.expression_loss > 0:
            expr, fit = self.expression_terms(params, batch, schedule, z_t, pred, t, cond["keep"])
            loss = loss + self.expression_loss * expr + fit
            metrics |= {"expr": expr, "probe_fit": fit}
        return loss, metrics

    def mouth_weights(self, batch: dict, shape: tuple[int, ...]) -> jax.Array | None:
        """(B, F, h, w, 1) loss weights 1 + (weight - 1) * mouth cover, the frame-size mouth masks averaged over
        each latent pixel's block; None when the mouth loss weight is off."""
        if self.mouth_loss_weight == 1.0:
            return None
        mask = batch["mouth_mask"].astype(jnp.float32)
        b, f, size = mask.shape[0], mask.shape[1], mask.shape[-1]
        h, w = shape[2], shape[3]
        cover = mask.reshape(b, f, h, size // h, w, size // w).mean(axis=(3, 5))
        return (1.0 + (self.mouth_loss_weight - 1.0) * cover)[..., None]

    def expression_terms(self, params: Any, batch: dict, schedule: diffusion.NoiseSchedule, z_t: jax.Array,
                         pred: jax.Array, t: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(term, probe fit): the probe's reading of the decoded x0 prediction against the frames' true expression
        coefficients, weighted by abar_t (a near-pure-noise x0_hat is a blur that shows no expression) and over
        the samples that kept their conditions; the probe's own MSE on the real frames."""
        m, mods = self.model, self.modules()
        b, f = pred.shape[:2]
        abar = schedule.alphas_cumprod[t]
        x0, _ = diffusion.predict_x0_eps(schedule.prediction_type, abar[:, None, None, None, None],
                                         z_t.astype(jnp.float32), pred.astype(jnp.float32))
        latents = (x0 / m.vae.scaling_factor).reshape(b * f, *x0.shape[2:])
        images = mods["vae"].apply({"params": params["vae"]}, latents.astype(_dtype(m.dtype)), method="decode")
        frames = batch["frames"]
        real = frames.reshape(b * f, *frames.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        fit, read = probe_terms(mods["expression_probe"], params["expression_probe"], real,
                                images.astype(jnp.float32), batch["expression"].reshape(b * f, -1))
        weight = abar * keep.astype(jnp.float32)
        term = jnp.sum(weight * read.reshape(b, f).mean(axis=1)) / jnp.maximum(jnp.sum(keep), 1.0)
        return term, fit


def make_task(cfg: TrainSVPConfig) -> SVPTask:
    return SVPTask.from_config(cfg)
