"""Trained evaluator nets behind one object: `load_evaluators()` -> `Evaluators`.

The weights ship inside the package (`jaxtalk/eval/weights/`: three safetensors files and `manifest.json` with the
command, commit, seeds, steps, wall time, module configs and held-out accuracies); loading reads arrays only.
Retrain them with ``python -m jaxtalk.eval.train --out jaxtalk/eval/weights``.

Typical bench use (frames of any square size, uint8 or [0, 1] floats)::

    ev = load_evaluators()
    gen = ev.analyse(generated_frames)          # {"expression", "landmarks" (px), "mouth_opening"}
    gt = ev.analyse(ground_truth_frames)        # or the generator's exact landmarks (data.clip_landmarks)
    m_lmd = metrics.m_lmd(gen["landmarks"], gt_landmarks, frame_size)
    sync = metrics.lip_sync(gen["mouth_opening"], gt["mouth_opening"])
    sim = metrics.stylesim(ev.style_code(gen["expression"]), ev.style_code(gt_expression))
    emotion = ev.predict_emotion(coefficients)  # index into facs.EMOTIONS
    leak = metrics.identity_leakage(ev.identity_embedding(gen_frames), ev.identity_embedding(ref_frame),
                                    ev.identity_embedding(style_frames))

`frame_metrics` computes the Table 1 row (PSNR, SSIM, F-LMD, M-LMD, lip-sync) in one call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from jaxtalk.data import facs
from jaxtalk.eval import metrics, models

WEIGHT_FILES = {"regressor": "regressor.safetensors", "identity": "identity.safetensors",
                "emotion": "emotion.safetensors"}
MANIFEST = "manifest.json"
_CHUNK = 32  # frames per jitted call (padded), so every clip length reuses one compiled program


def default_weights_dir() -> Path:
    """The weights folder inside the installed package."""
    return Path(str(resources.files("jaxtalk.eval") / "weights"))


def save_params(path: Path, params) -> None:
    """Flatten a parameter tree to '/'-joined keys and write it as safetensors (float32)."""
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    save_file({k: np.asarray(v, np.float32) for k, v in flat.items()}, str(path))


def load_params(path: Path) -> dict:
    """Inverse of `save_params` (safetensors: arrays only, no code runs)."""
    return traverse_util.unflatten_dict(load_file(str(path)), sep="/")


@dataclasses.dataclass
class Evaluators:
    """The frame regressor, emotion classifier and identity encoder with their weights; numpy in, numpy out."""

    regressor: models.FrameRegressor
    regressor_params: Any
    emotion: models.EmotionClassifier
    emotion_params: Any
    identity: models.IdentityEncoder
    identity_params: Any
    manifest: dict

    # -------------------------------------------------------------------------------------------- frames
    @functools.cached_property
    def _regress_fn(self) -> Callable:
        return jax.jit(lambda p, x: self.regressor.apply(p, x))

    @functools.cached_property
    def _identity_fn(self) -> Callable:
        return jax.jit(lambda p, x: self.identity.apply(p, x)[0])

    def _chunked(self, fn: Callable, params, frames) -> list:
        x = models.prepare_frames(frames)
        outs = []
        for i in range(0, x.shape[0], _CHUNK):
            part = x[i:i + _CHUNK]
            n = part.shape[0]
            if n < _CHUNK:
                part = jnp.concatenate([part, jnp.zeros((_CHUNK - n,) + part.shape[1:], part.dtype)])
            outs.append(jax.tree_util.tree_map(lambda a, n=n: np.asarray(a[:n]), fn(params, part)))
        return outs

    def regress(self, frames) -> dict[str, np.ndarray]:
        """Frames (F, S, S, 3) -> {"expression": (F, 64), "landmarks": (F, 16, 2) pixels of the S-px frame}."""
        frames = np.asarray(frames)
        single = frames.ndim == 3
        frames = frames[None] if single else frames
        if frames.ndim != 4:
            raise ValueError(f"regress: frames must be (F, S, S, 3) or (S, S, 3), got {frames.shape}")
        size = frames.shape[-2]
        outs = self._chunked(self._regress_fn, self.regressor_params, frames)
        res = {"expression": np.concatenate([o["expression"] for o in outs]),
               "landmarks": np.concatenate([o["landmarks"] for o in outs]) * size}
        return {k: v[0] for k, v in res.items()} if single else res

    def analyse(self, frames) -> dict[str, np.ndarray]:
        """`regress` plus the per-frame mouth opening (inner-lip gap, pixels of a 256-px frame)."""
        frames = np.asarray(frames)
        res = self.regress(frames)
        res["mouth_opening"] = metrics.mouth_opening(res["landmarks"], frames.shape[-2])
        return res

    def identity_embedding(self, frames) -> np.ndarray:
        """Frames (F, S, S, 3) or one frame -> unit-norm identity embeddings (F, D) or (D,)."""
        frames = np.asarray(frames)
        single = frames.ndim == 3
        out = np.concatenate(self._chunked(self._identity_fn, self.identity_params,
                                           frames[None] if single else frames))
        return out[0] if single else out

    # -------------------------------------------------------------------------------------------- expressions
    @functools.cached_property
    def _emotion_fn(self) -> Callable:
        return jax.jit(lambda p, x: self.emotion.apply(p, x))

    def _emotion_out(self, expression) -> tuple[dict[str, np.ndarray], bool]:
        x = np.asarray(expression, np.float32)
        single = x.ndim == 2
        x = x[None] if single else x
        if x.ndim != 3 or x.shape[-1] != facs.EXPRESSION_DIM or x.shape[1] < 1:
            raise ValueError(f"expression must be (T, {facs.EXPRESSION_DIM}) or (N, T, {facs.EXPRESSION_DIM}) "
                             f"with T >= 1, got {x.shape}")
        out = jax.tree_util.tree_map(np.asarray, self._emotion_fn(self.emotion_params, jnp.asarray(x)))
        return out, single

    def emotion_probs(self, expression) -> np.ndarray:
        """(T, 64) -> (8,) or (N, T, 64) -> (N, 8) probabilities over `facs.EMOTIONS`."""
        out, single = self._emotion_out(expression)
        p = np.asarray(jax.nn.softmax(out["logits"], -1))
        return p[0] if single else p

    def predict_emotion(self, expression) -> np.ndarray | int:
        """Most likely emotion index (into `facs.EMOTIONS`) per expression window."""
        p = self.emotion_probs(expression)
        return int(np.argmax(p)) if p.ndim == 1 else np.argmax(p, -1)

    def style_code(self, expression) -> np.ndarray:
        """A fixed, deterministic style code of an expression sequence: the emotion classifier's penultimate
        features, (T, 64) -> (D,) or (N, T, 64) -> (N, D). For StyleSim with another encoder (e.g. the trained
        SVP style extractor), pass its codes to `metrics.stylesim` directly."""
        out, single = self._emotion_out(expression)
        return out["features"][0] if single else out["features"]

    def stylesim(self, generated_expression, reference_expression, encoder: Callable | None = None) -> float:
        """StyleSim of two expression sequences under `encoder` (default `style_code`)."""
        return metrics.stylesim_encoded(generated_expression, reference_expression, encoder or self.style_code)

    # -------------------------------------------------------------------------------------------- tables
    def frame_metrics(self, generated, ground_truth, ground_truth_landmarks=None) -> dict[str, float]:
        """SVP Table 1 row for one clip: PSNR, SSIM, F-LMD, M-LMD (256-px units) and lip-sync of generated vs
        ground-truth frames (same shape). Landmarks of the ground truth are regressed from its frames unless the
        generator's exact ones are given ((F, 16, 2) pixels, `data.clip_landmarks`); the lip-sync reference is
        always the regressed ground-truth mouth opening, so both sides go through the same regressor."""
        generated, ground_truth = np.asarray(generated), np.asarray(ground_truth)
        if generated.shape != ground_truth.shape:
            raise ValueError(f"frame_metrics: generated {generated.shape} and ground truth {ground_truth.shape} "
                             "must have the same shape")
        size = generated.shape[-2]
        gen, gt = self.analyse(generated), self.analyse(ground_truth)
        gt_lm = gt["landmarks"] if ground_truth_landmarks is None else np.asarray(ground_truth_landmarks)
        return {"psnr": metrics.psnr(generated, ground_truth), "ssim": metrics.ssim(generated, ground_truth),
                "f_lmd": metrics.f_lmd(gen["landmarks"], gt_lm, size),
                "m_lmd": metrics.m_lmd(gen["landmarks"], gt_lm, size),
                "lip_sync": metrics.lip_sync(gen["mouth_opening"], gt["mouth_opening"])}


def build_evaluators(manifest: dict, regressor_params, emotion_params, identity_params) -> Evaluators:
    """Evaluators from a manifest's module configs and parameter trees."""
    cfg = manifest["configs"]
    return Evaluators(
        regressor=models.FrameRegressor(channels=tuple(cfg["regressor"]["channels"]),
                                        hidden=cfg["regressor"]["hidden"]),
        regressor_params=regressor_params,
        emotion=models.EmotionClassifier(**cfg["emotion"]),
        emotion_params=emotion_params,
        identity=models.IdentityEncoder(num_identities=cfg["identity"]["num_identities"],
                                        channels=tuple(cfg["identity"]["channels"]),
                                        hidden=cfg["identity"]["hidden"], embed_dim=cfg["identity"]["embed_dim"]),
        identity_params=identity_params,
        manifest=manifest,
    )


def load_evaluators(directory: str | Path | None = None) -> Evaluators:
    """Load the evaluator nets from `directory` (default: the weights shipped in the package)."""
    d = Path(directory) if directory is not None else default_weights_dir()
    missing = [f for f in [MANIFEST, *WEIGHT_FILES.values()] if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"evaluator weights missing in {d}: {', '.join(missing)}; train them with "
                                f"`python -m jaxtalk.eval.train --out {d}`")
    manifest = json.loads((d / MANIFEST).read_text())
    params = {k: load_params(d / f) for k, f in WEIGHT_FILES.items()}
    return build_evaluators(manifest, params["regressor"], params["emotion"], params["identity"])
