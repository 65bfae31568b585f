"""Contrastive training of SVP's dual-branch intrinsic style extractor (paper §3.3, Eq. 6-7).

    task = StylePriorTask.from_config(cfg)       # cfg: TrainStylePriorConfig (system: train_style_prior)
    loop.train(task, cfg)

A batch holds 2B windows of `data.window` frames (`training.data.StylePriorBatchPrep`, stacked by
`contrastive_pairs`): B sampled windows, then one partner each with the same identity + emotion (MEAD's rule) or from the same clip (HDTF's rule), so every sample
has a positive. Each window gives 3DMM expression beta (T, 64) and Whisper features alpha (T, D) per frame; the
extractor (train mode: transformer dropout, modality dropout that zeroes beta or alpha but never both) returns
N(mu, sigma^2) and s = mu + sigma eps. The loss is InfoNCE over all ordered positive pairs with
zeta(a, b) = 1 / (||a - b||^2 + 1) and temperature tau (`jaxtalk.svp.style_extractor.info_nce_loss`); negatives
are the windows with another identity or emotion. All parameters are trained.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import jax.numpy as jnp

from jaxtalk.svp.style_extractor import (
    ProbabilisticStyleExtractor,
    StyleExtractorConfig,
    info_nce_loss,
    positives_from_labels,
    style_similarity,
)
from jaxtalk.training import data as data_lib
from jaxtalk.training import sources
from jaxtalk.training.config import (
    AudioFeaturesConfig,
    InitSource,
    StylePriorDataConfig,
    TrainStylePriorConfig,
)
from jaxtalk.training.loop import Task


@dataclasses.dataclass(frozen=True)
class StylePriorTask(Task):
    """Model, data and loss of the style-extractor training (hashable: it keys the compiled-step cache)."""

    extractor: StyleExtractorConfig
    audio: AudioFeaturesConfig
    data: StylePriorDataConfig
    contrast: str = "sample"
    init: tuple[InitSource, ...] = ()
    dtype: str = "float32"

    name = "style_prior"

    @classmethod
    def from_config(cls, cfg: TrainStylePriorConfig) -> StylePriorTask:
        return cls(cfg.extractor, cfg.audio, cfg.data, cfg.contrast, cfg.init, cfg.dtype)

    def module(self) -> ProbabilisticStyleExtractor:
        dtype = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        return ProbabilisticStyleExtractor(self.extractor, dtype=dtype, param_dtype=jnp.float32)

    def init_variables(self, rng: jax.Array) -> dict:
        ex = self.extractor
        v = self.module().init(rng, jnp.zeros((1, 2, ex.exp_dim)), jnp.zeros((1, 2, ex.audio_dim)))
        return {"params": {"style_extractor": v["params"]}}

    def trainable_patterns(self) -> None:
        return None  # "we directly train all parameters of this lightweight model"

    def prepare_params(self, params: dict) -> dict:
        return sources.apply_init_sources(params, self.init)[0]

    def dataset(self) -> grain.MapDataset:
        d = self.data
        data_lib.ensure_records(d)
        fdir = data_lib.ensure_audio_features(d.record_dir, self.audio, d.feature_dir)
        store = data_lib.FeatureStore(d.record_dir, fdir, self.audio.feature_dim)
        prep = data_lib.StylePriorBatchPrep(d.record_dir, d, store)
        return data_lib.make_batches(d.record_dir, d.window, d.batch_size, d.shuffle_seed, prep, d.stride)

    def device_fields(self) -> tuple[str, ...]:
        fields = data_lib.StylePriorBatchPrep.FIELDS
        return fields + tuple("partner_" + k for k in fields)

    def positives(self, batch: dict) -> jax.Array:
        if self.data.positives == "clip":
            return positives_from_labels(batch["clip"])
        return positives_from_labels(batch["identity"], batch["emotion"])

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        batch = data_lib.contrastive_pairs(batch)
        k_noise, k_dropout, k_modality = jax.random.split(rng, 3)
        prior = self.module().apply(
            {"params": params["style_extractor"]}, batch["exp"], batch["audio"],
            noise_key=k_noise if self.contrast == "sample" else None, train=True,
            rngs={"dropout": k_dropout, "modality": k_modality})
        styles = (prior.s if self.contrast == "sample" else prior.mu).astype(jnp.float32)
        positives = self.positives(batch)
        loss = info_nce_loss(styles, positives, self.extractor.tau)
        flat = styles.reshape(styles.shape[0], -1)
        zeta = style_similarity(flat, flat)
        off = ~jnp.eye(flat.shape[0], dtype=bool)
        pos, neg = positives & off, ~positives & off
        mean_of = lambda m: jnp.sum(jnp.where(m, zeta, 0.0)) / jnp.maximum(jnp.sum(m), 1)
        return loss, {"zeta_pos": mean_of(pos), "zeta_neg": mean_of(neg), "sigma": jnp.mean(jnp.sqrt(prior.var)),
                      "keep_exp": jnp.mean(prior.keep_exp.astype(jnp.float32)),
                      "keep_audio": jnp.mean(prior.keep_audio.astype(jnp.float32))}
