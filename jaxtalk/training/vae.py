"""Reconstruction training of a small SD-architecture latent autoencoder (the SVP stack's VAE).

    task = VAETask.from_config(cfg)              # cfg: TrainVAEConfig (system: train_vae)
    loop.train(task, cfg)

SD's VAE was trained with L1 + LPIPS + a patch GAN + a tiny KL term. No pretrained perceptual network is available
here, so the loss is L1 + `mse_weight` x MSE on pixels in [-1, 1] + `grad_weight` x L1 of the image gradients (it
keeps the thin lip / eye edges that plain L1 blurs at 64 px) + `kl_weight` x KL(q(z|x) || N(0, I)). The decoder
sees posterior samples, as in SD. Batches are single frames (and their reference frames) from the clip records,
box-resized to `data.image_size`. After training, `latent_scale` gives the `scaling_factor` (1 / std of the
posterior means) that the diffusion stages use, as SD did for 0.18215.

An L1 / MSE decoder regresses towards the mean face, and the first thing it averages away is a small expression
(a raised brow, a mouth corner): the synthetic clips' emotion, readable on the real frames, mostly is not after an
encode-decode. With `expression_loss` > 0 an expression probe (`training.probes`) reads the 64 true coefficients
from the real frames (its fit trains it) and from the reconstructions (its params frozen there: that reading
trains the autoencoder). Trained with `trainable: ['^vae/decoder/', '^vae/post_quant_conv/', '^expression_probe/']`
the latent space stays as it was, so denoisers trained on it keep working with the new decoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.backbones.sd_vae import AutoencoderKL, VAEConfig
from jaxtalk.training import data as data_lib
from jaxtalk.training import sources
from jaxtalk.training.config import InitSource, SVPDataConfig, TrainVAEConfig
from jaxtalk.training.loop import Task
from jaxtalk.training.probes import ExpressionProbe, probe_terms


def _image_gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x[:, 1:] - x[:, :-1], x[:, :, 1:] - x[:, :, :-1]


def reconstruction_losses(x: jax.Array, recon: jax.Array, mean: jax.Array, logvar: jax.Array) -> dict[str, jax.Array]:
    """Per-batch means of the loss terms for images x, recon (B, H, W, C) in [-1, 1] and the posterior (B, h, w, c)."""
    gx, gy = _image_gradients(x)
    rx, ry = _image_gradients(recon)
    kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))
    return {"l1": jnp.mean(jnp.abs(recon - x)), "mse": jnp.mean((recon - x) ** 2),
            "grad": 0.5 * (jnp.mean(jnp.abs(rx - gx)) + jnp.mean(jnp.abs(ry - gy))), "kl": jnp.mean(kl)}


@dataclasses.dataclass(frozen=True)
class VAETask(Task):
    """Model, data and loss of the autoencoder training (hashable: it keys the compiled-step cache)."""

    vae: VAEConfig
    data: SVPDataConfig
    kl_weight: float = 1e-6
    mse_weight: float = 1.0
    grad_weight: float = 0.5
    init: tuple[InitSource, ...] = ()
    trainable: tuple[str, ...] | None = None
    with_reference: bool = True
    expression_loss: float = 0.0

    name = "vae"

    @classmethod
    def from_config(cls, cfg: TrainVAEConfig) -> VAETask:
        return cls(cfg.vae, cfg.data, cfg.kl_weight, cfg.mse_weight, cfg.grad_weight, cfg.init, cfg.trainable,
                   cfg.with_reference, cfg.expression_loss)

    def module(self) -> AutoencoderKL:
        return AutoencoderKL(self.vae, param_dtype=jnp.float32)

    def init_variables(self, rng: jax.Array) -> dict:
        f = 2 ** (len(self.vae.block_out_channels) - 1)
        # the VAE keeps the init it had before the probe existed (same seed, same weights)
        params = {"vae": self.module().init(rng, jnp.zeros((1, f, f, self.vae.in_channels)))["params"]}
        if self.expression_loss > 0:
            size = self.data.image_size
            params["expression_probe"] = ExpressionProbe().init(jax.random.fold_in(rng, 1),
                                                                jnp.zeros((1, size, size, 3)))["params"]
        return {"params": params}

    def trainable_patterns(self) -> tuple[str, ...] | None:
        return self.trainable

    def prepare_params(self, params: dict) -> dict:
        return sources.apply_init_sources(params, self.init)[0]

    def dataset(self) -> grain.MapDataset:
        return data_lib.frame_batches(self.data)

    def device_fields(self) -> tuple[str, ...]:
        fields = ("frames", "reference") if self.with_reference else ("frames",)
        return fields + ("expression",) if self.expression_loss > 0 else fields

    def images(self, batch: dict) -> jax.Array:
        frames = batch["frames"]
        x = frames.reshape(-1, *frames.shape[2:])
        if self.with_reference:
            x = jnp.concatenate([x, batch["reference"]])
        return x.astype(jnp.float32) / 127.5 - 1.0

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        vae = self.module()
        x = self.images(batch)
        mean, logvar = vae.apply({"params": params["vae"]}, x, method="encode")
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        recon = vae.apply({"params": params["vae"]}, z, method="decode")
        terms = reconstruction_losses(x, recon, mean, logvar)
        loss = (terms["l1"] + self.mse_weight * terms["mse"] + self.grad_weight * terms["grad"]
                + self.kl_weight * terms["kl"])
        psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(terms["mse"], 1e-10))
        metrics = {**terms, "psnr": psnr, "latent_std": jnp.std(mean)}
        if self.expression_loss > 0:
            n = batch["frames"].shape[0] * batch["frames"].shape[1]  # the frames lead x; reference frames follow
            truth = batch["expression"].reshape(n, -1).astype(jnp.float32)
            fit, read = probe_terms(ExpressionProbe(), params["expression_probe"], x[:n], recon[:n], truth)
            loss = loss + self.expression_loss * jnp.mean(read) + fit
            metrics.update(probe_fit=fit, expression_read=jnp.mean(read))
        return loss, metrics


def latent_scale(task: VAETask, params: Any, batches: list[dict]) -> float:
    """1 / std of the posterior means over `batches` (the `scaling_factor` that gives unit-variance latents)."""
    vae = task.module()
    encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode")[0])
    means = [np.asarray(encode(params["vae"], task.images({k: jnp.asarray(v) for k, v in b.items()})))
             for b in batches]
    return float(1.0 / np.std(np.concatenate([m.reshape(-1) for m in means])))


def make_task(cfg: TrainVAEConfig) -> VAETask:
    return VAETask.from_config(cfg)
