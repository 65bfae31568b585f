"""Style-E training (Style2Talker §0.1, the released `TrainLoop_clip`): x0-prediction diffusion over expression
windows.

    task = StyleETask.from_config(cfg)            # cfg: TrainStyleEConfig (system: train_style_e)
    loop.train(task, cfg)

Per sample: x0 = the 3DMM expression of a `model.window`-frame window (B, T, 64); t ~ U{0..999} on the 1000-step
improved-diffusion cosine schedule; x_t = sqrt(abar) x0 + sqrt(1 - abar) eps; the denoiser sees x_t, the original
t, the sparse condition (B, T, 64) and the emotion text's CLIP feature (B, 512), and predicts x0; the loss is the
plain MSE. Conditions without audio2exp (`data.sparse`): `same_speaker`, as the released loop, takes the GT
expression of another window of the same speaker; `same_window` takes the target window's own expression. Text
features come from the frozen CLIP text tower once per distinct text (`text_feature_table`) or from a precomputed
file. Left out: the released loss's lip term (L1 on squared upper/lower-lip distances of BFM keypoints
[51, 57, 62, 66], weighted 1/32), which needs the BFM shape basis to rebuild keypoints from coefficients.
The fixed sinusoidal `embed_timestep/pe` table is not trained.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import diffusion
from jaxtalk.style2talker.style_e import StyleE, StyleEConfig
from jaxtalk.training import data as data_lib
from jaxtalk.training import sources
from jaxtalk.training.config import (
    DiffusionTrainConfig,
    InitSource,
    StyleEDataConfig,
    TextFeaturesConfig,
    TrainStyleEConfig,
)
from jaxtalk.training.loop import Task

log = logging.getLogger(__name__)


def text_feature_table(cfg: TextFeaturesConfig, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """{text: (text_dim,) float32}: CLIP `encode_text` features (projected EOT token, not normalised)."""
    texts = sorted(set(texts))
    if cfg.features_file:
        with np.load(cfg.features_file, allow_pickle=False) as z:
            table = {str(t): np.asarray(f, np.float32) for t, f in zip(z["texts"], z["features"])}
        missing = [t for t in texts if t not in table]
        if missing:
            raise ValueError(f"{cfg.features_file}: no feature for {len(missing)} emotion texts (e.g. {missing[:2]}); "
                             "recompute the file or use the CLIP text tower (text.features_file: null)")
        return table
    from jaxtalk.backbones.clip_text import CLIPTextEncoder
    from jaxtalk.backbones.clip_tokenizer import CLIPTokenizer

    module = CLIPTextEncoder(cfg.clip)
    params = sources.component_params(module, cfg.checkpoint, "clip_text", cfg.seed)
    ids = CLIPTokenizer(context_length=cfg.clip.max_length)(texts)
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x)[1])
    features = np.concatenate([np.asarray(encode(params, ids[i:i + 64]), np.float32)
                               for i in range(0, len(ids), 64)])
    return dict(zip(texts, features))


def save_text_features(path: str | Path, table: dict[str, np.ndarray]) -> Path:
    """Write a table as the `.npz` that `text.features_file` reads."""
    texts = sorted(table)
    path = Path(path)
    np.savez(path, texts=np.asarray(texts), features=np.stack([table[t] for t in texts]))
    return path


@dataclasses.dataclass(frozen=True)
class StyleETask(Task):
    """Model, data and loss of Style-E training (hashable: it keys the compiled-step cache)."""

    model: StyleEConfig
    text: TextFeaturesConfig
    data: StyleEDataConfig
    diffusion: DiffusionTrainConfig
    init: tuple[InitSource, ...] = ()
    dtype: str = "float32"

    name = "style_e"

    @classmethod
    def from_config(cls, cfg: TrainStyleEConfig) -> StyleETask:
        return cls(cfg.model, cfg.text, cfg.data, cfg.diffusion, cfg.init, cfg.dtype)

    def module(self) -> StyleE:
        dtype = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        return StyleE(self.model, dtype=dtype, param_dtype=jnp.float32)

    def init_variables(self, rng: jax.Array) -> dict:
        c = self.model
        v = self.module().init(rng, jnp.zeros((1, c.window, c.nfeats)), jnp.zeros((1,), jnp.int32),
                               jnp.zeros((1, c.window, c.sparse_dim)), jnp.zeros((1, c.text_dim)))
        return {"params": {"style_e": v["params"]}}

    def trainable_patterns(self) -> tuple[str, ...]:
        return (r"^style_e/(?!embed_timestep/)",)

    def prepare_params(self, params: dict) -> dict:
        return sources.apply_init_sources(params, self.init)[0]

    def dataset(self) -> grain.MapDataset:
        d = self.data
        data_lib.ensure_records(d)
        table = text_feature_table(self.text, data_lib.emotion_texts(d.record_dir))
        prep = data_lib.StyleEBatchPrep(d.record_dir, d, self.model.window, table)
        return data_lib.make_batches(d.record_dir, self.model.window, d.batch_size, d.shuffle_seed, prep, d.stride)

    def device_fields(self) -> tuple[str, ...]:
        return ("x0", "sparse", "text")

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        dcfg = self.diffusion
        schedule = diffusion.NoiseSchedule.from_config(dcfg.schedule())
        k_noise, k_t = jax.random.split(rng)
        x0 = batch["x0"]
        t = diffusion.sample_timesteps(k_t, x0.shape[0], schedule)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t = diffusion.add_noise(schedule, x0, noise, t)
        pred = self.module().apply({"params": params["style_e"]}, x_t, t, batch["sparse"], batch["text"])
        target = diffusion.training_target(schedule, x0, noise, t)
        weights = None
        if dcfg.min_snr_gamma is not None:
            weights = diffusion.min_snr_weights(diffusion.snr(schedule, t), dcfg.min_snr_gamma, dcfg.prediction_type,
                                                dcfg.shift_v_snr)
        loss = diffusion.diffusion_loss(pred, target, weights)
        return loss, {"mse": diffusion.diffusion_loss(pred, target)}
