"""SVP / V-Express sampling: reference image + audio (+ style, + head keypoints) -> talking-head video.

    pipe = SVPPipeline(models)                                  # models: jaxtalk.svp.models.SVPModels
    result = pipe(ClipInputs(reference=img, audio=wav, kps=kps, style=load_style("style.npz")), seed=42)
    write_outputs("out.mp4", result.frames, result.audio, result.fps, models.config)
    results = pipe([clip_a, clip_b], seed=42)                   # a batch: one SVPResult per clip, data-parallel

or in one call from files: `generate("face.png", "speech.wav", "out.mp4")` (what `jaxtalk generate`, the demo
and `jaxtalk serve` run). `Pipeline` / `Inputs` / `Result` name the same roles as in `jaxtalk.style2talker`.

Stages (host side, shown with tqdm):
1. reference: resize, VAE-encode (posterior mean x scaling_factor), ReferenceNet once at t = 0 with a zero context
   -> the reference bank (one tensor per transformer block).
2. audio: wav2vec2 `last_hidden_state` (V-Express) or Whisper's stacked hidden states (SVP) -> per-frame windows ->
   AudioProjection -> tokens [B, F, Na, D].
3. style: a Gaussian prior (mu, var) from a style clip (3DMM expression + audio through the style extractor), a
   stored prior, or a mix of two; tokens = mu, or mu + sigma * eps drawn from the clip's key.
4. keypoints: Head-Kps (SVP) or V-Kps (V-Express) images per frame, kept as uint8; the guider runs inside each
   window, so its 320-channel features never exist for the whole clip at once.
5. denoise: ONE compiled function. `lax.scan` over the sampler steps (`diffusion.euler_sample` / `ddim_sample` /
   `multistep_sample` for DPM-Solver++ and UniPC, `sampler.kind`);
   at every step `lax.fori_loop` visits the context windows, runs the UNet on W frames with classifier-free
   guidance (the [uncond, cond] pair in one batched call; uncond = zero bank, zero kps features, zero audio tokens,
   zero style tokens unless `guidance.uncond_style="keep"`; eps = u + s (c - u)), scatter-adds the prediction
   into a per-frame accumulator, divides by each frame's window count (V-Express mean overlap) and steps once.
   Only W frames ever pass through the UNet, so activation memory does not grow with the clip length.
6. decode: VAE decode in chunks under `lax.map`, quantised to uint8 inside the map; optional 3x3x3 median filter.

Batches of clips (same frame count) run data-parallel: with a mesh, params keep their fsdp / tensor shardings and
the clip axis is split over the batch mesh axes that divide it; each clip's noise comes from its own key, so a
clip samples the same alone or in a batch. Compiled stages are cached per (model config, mesh, shapes).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image
from tqdm.auto import tqdm

from jaxtalk import config as config_lib
from jaxtalk import diffusion, parallel
from jaxtalk.compile_cache import CompileCache, compiled, mesh_key
from jaxtalk.data import media
from jaxtalk.data.atomic import atomic_path
from jaxtalk.data.media import write_outputs  # part of this module's API (README); generate() uses it
from jaxtalk.svp import context
from jaxtalk.svp.audio_projection import interpolate_linear
from jaxtalk.svp.models import StyleGaussian

# ----------------------------------------------------------------------------------------------------------- style


@dataclasses.dataclass(frozen=True)
class StyleClip:
    """A style reference clip: 3DMM expression coefficients (N, 64) and its 16 kHz audio, at `fps`."""

    expression: np.ndarray
    audio: np.ndarray
    fps: float = 25.0


@dataclasses.dataclass(frozen=True)
class StyleMix:
    """Interpolation between two style sources: weight 0 gives `a`, 1 gives `b` (mu and sigma mixed linearly)."""

    a: StyleSource
    b: StyleSource
    weight: float = 0.5


StyleSource = StyleGaussian | StyleClip | StyleMix


def resolve_style(models: Any, source: StyleSource) -> StyleGaussian:
    """Any style source -> its Gaussian prior (a clip goes through the style extractor)."""
    if isinstance(source, StyleGaussian):
        return source
    if isinstance(source, StyleClip):
        return models.style_prior(source.expression, source.audio, source.fps)
    if isinstance(source, StyleMix):
        a, b = resolve_style(models, source.a), resolve_style(models, source.b)
        if a.mu.shape != b.mu.shape:
            raise ValueError(f"cannot mix style priors of shapes {a.mu.shape} and {b.mu.shape}")
        w = float(source.weight)
        sigma = (1 - w) * np.sqrt(a.var) + w * np.sqrt(b.var)
        return StyleGaussian((1 - w) * a.mu + w * b.mu, np.square(sigma))
    raise TypeError(f"not a style source: {type(source).__name__}")


def load_style(path: str | os.PathLike) -> StyleSource:
    """A `.npz` style file: a stored prior (`mu` and `var` or `sigma`, each (K, d) or (d,)), or a style clip
    (`expression` (N, 64) and `audio` (S,) at 16 kHz, `fps` optional; a clip record from `jaxtalk.data` works)."""
    import json
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise media.MediaError(f"{path}: style file not found; check the path")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise media.MediaError(f"{path}: not a readable .npz style file ({e})") from None
    if "mu" in data and ("var" in data or "sigma" in data):
        mu = np.atleast_2d(np.asarray(data["mu"], np.float32))
        var = np.asarray(data["var"], np.float32) if "var" in data else np.square(np.asarray(data["sigma"],
                                                                                              np.float32))
        var = np.atleast_2d(var)
        if mu.shape != var.shape or mu.ndim != 2 or not (np.all(np.isfinite(mu)) and np.all(var >= 0)):
            raise media.MediaError(f"{path}: style prior needs finite mu and non-negative var of one shape (K, d), "
                                   f"got {mu.shape} and {var.shape}")
        return StyleGaussian(mu, var)
    if "expression" in data and "audio" in data:
        fps = float(data["fps"]) if "fps" in data else 25.0
        if "meta" in data:
            fps = float(json.loads(str(data["meta"])).get("fps", fps))
        return StyleClip(np.asarray(data["expression"], np.float32), np.asarray(data["audio"], np.float32), fps)
    raise media.MediaError(f"{path}: a style file holds mu + var (or sigma), or expression + audio; found "
                           f"{sorted(data)}")


def save_style_prior(path: str | os.PathLike, prior: StyleGaussian) -> Path:
    """Store a prior as `.npz` (mu, var), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=np.asarray(prior.mu, np.float32), var=np.asarray(prior.var, np.float32))
    return path


# ----------------------------------------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class ClipInputs:
    """One clip to generate. `reference`: uint8 (H0, W0, 3); `audio`: float32 16 kHz mono; `kps`: head keypoints
    in the reference's pixel coordinates, (8, 2) held still, (F_k, 8, 2) per frame (cut / resampled to the video
    length as V-Express does), V-Kps (…, 3, 2) for `kps_mode="v"`, or None (no keypoint condition); `style`: a
    `StyleSource` (required when the config enables style)."""

    reference: np.ndarray
    audio: np.ndarray
    kps: np.ndarray | None = None
    style: StyleSource | None = None


@flax.struct.dataclass
class Conditions:
    """Per-clip conditioning for the compiled sampler (clip axis first)."""

    audio_tokens: jax.Array  # [B, F, Na, D]
    reference_bank: tuple[jax.Array, ...]  # each [B, HW_i, C_i]
    kps_images: jax.Array | None = None  # uint8 [B, F, H, W, 3]
    style_tokens: jax.Array | None = None  # [B, S, Ds]


@dataclasses.dataclass
class SVPResult:
    """One generated clip (a pipeline call returns one per input)."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    audio: np.ndarray  # float32 16 kHz, trimmed to the video's duration
    fps: float
    latents: np.ndarray  # float32 [F, h, w, C], the sampled latents before the VAE


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H0, W0, 3) -> uint8 (height, width, 3) (PIL bicubic, as V-Express resizes the reference)."""
    image = media.to_rgb_uint8(image)
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def keypoint_track(kps: np.ndarray, num_frames: int) -> np.ndarray:
    """(K, 2) -> held still for every frame; (F_k, K, 2) -> first `num_frames` rows, linearly resampled to
    `num_frames` (V-Express `inference.py`: cut, then `F.interpolate(mode='linear')` over time)."""
    kps = np.asarray(kps, np.float32)
    if kps.ndim == 2:
        return np.broadcast_to(kps, (num_frames, *kps.shape)).copy()
    if kps.ndim != 3 or kps.shape[-1] != 2 or kps.shape[0] == 0:
        raise ValueError(f"keypoints must be (K, 2) or (F, K, 2) pixel coordinates, got shape {kps.shape}")
    kps = kps[:num_frames]
    out = interpolate_linear(jnp.asarray(kps.reshape(kps.shape[0], -1)), num_frames)  # (F, K*2) over time
    return np.asarray(out).reshape(num_frames, *kps.shape[1:])


def keypoint_images(kps: np.ndarray, num_frames: int, source_size: tuple[int, int], size: tuple[int, int],
                    mode: str) -> np.ndarray:
    """Keypoints in source-image pixels -> uint8 condition images (F, H, W, 3): Head-Kps (`mode="head"`, 8 points)
    or V-Kps (`mode="v"`, 3 points; 8-point input is reduced to pupils + nose tip)."""
    from jaxtalk.data.kps import draw_head_kps, draw_v_kps, v_kps_from_head_kps

    track = keypoint_track(kps, num_frames)
    (h0, w0), (h, w) = source_size, size
    track = track * np.array([w / w0, h / h0], np.float32)
    if mode == "head":
        if track.shape[1] != 8:
            raise ValueError(f"kps_mode 'head' needs 8 Head-Kps points per frame, got {track.shape[1]}")
        return np.stack([draw_head_kps(p, (h, w)) for p in track])
    if mode == "v":
        if track.shape[1] == 8:
            track = v_kps_from_head_kps(track)
        if track.shape[1] != 3:
            raise ValueError(f"kps_mode 'v' needs 3 V-Kps points (eyes, nose) or 8 Head-Kps points, got "
                             f"{track.shape[1]}")
        return np.stack([draw_v_kps(p, (h, w)) for p in track])
    raise ValueError(f"kps_mode {mode!r} is not 'head' or 'v'")


def clip_keys(seed: int, num_clips: int) -> jax.Array:
    """One key per clip: fold_in(key(seed), i). Clip i samples the same alone or in any batch."""
    base = jax.random.key(seed)
    return jnp.stack([jax.random.fold_in(base, i) for i in range(num_clips)])


# ------------------------------------------------------------------------------------------- the compiled sampler


def sampler_coefficients(sampler: Any) -> (diffusion.EulerCoefficients | diffusion.DDIMCoefficients
                                           | diffusion.MultistepCoefficients):
    """Static per-step coefficients for the config's sampler section (host side)."""
    schedule = diffusion.ScheduleConfig(
        num_train_timesteps=sampler.num_train_timesteps, beta_start=sampler.beta_start, beta_end=sampler.beta_end,
        beta_schedule=sampler.beta_schedule, rescale_zero_terminal_snr=sampler.rescale_zero_terminal_snr,
        prediction_type=sampler.prediction_type,
    )
    if sampler.kind == "euler":
        return diffusion.euler_setup(schedule, sampler.steps, timestep_spacing=sampler.timestep_spacing,
                                     steps_offset=sampler.steps_offset)
    if sampler.kind in ("dpmsolver++", "sde-dpmsolver++"):
        return diffusion.dpm_solver_setup(schedule, sampler.steps, algorithm_type=sampler.kind,
                                          solver_order=sampler.solver_order,
                                          timestep_spacing=sampler.timestep_spacing, steps_offset=sampler.steps_offset)
    if sampler.kind == "unipc":
        return diffusion.unipc_setup(schedule, sampler.steps, solver_order=sampler.solver_order,
                                     timestep_spacing=sampler.timestep_spacing, steps_offset=sampler.steps_offset)
    return diffusion.ddim_setup(schedule, sampler.steps, timestep_spacing=sampler.timestep_spacing,
                                steps_offset=sampler.steps_offset, set_alpha_to_one=sampler.set_alpha_to_one,
                                eta=sampler.eta)


def _zeros(x: jax.Array | None) -> jax.Array | None:
    """The unconditional input (V-Express's is all zeros)."""
    return None if x is None else jnp.zeros_like(x)


def window_prediction(models: Any, params: dict, x: jax.Array, t: jax.Array, audio: jax.Array,
                      kps_images: jax.Array | None, bank: tuple[jax.Array, ...], style: jax.Array | None,
                      scalars: dict[str, jax.Array], do_cfg: bool) -> jax.Array:
    """The guided UNet output for one window: x [B, W, h, w, C] -> [B, W, h, w, C] (float32).

    With guidance the UNet runs twice, unconditional (zero bank, kps features and audio tokens) then conditional:
    each call keeps the clip axis split over the mesh's data axes. (A `jax.vmap` over the [uncond, cond] pair made
    XLA's SPMD partitioner gather the clip axis inside the UNet — 1.9x the FLOPs per device on 4 devices, cost
    analysis, jax 0.10.2 — and concatenating the halves along the clip axis was miscompiled on a (2, 2, 2) mesh.)
    """
    cfg = models.config
    dtype = x.dtype
    kps = None
    if kps_images is not None:
        imgs = kps_images.astype(jnp.float32) / 255.0 if kps_images.dtype == jnp.uint8 else kps_images
        kps = models.kps_guider.apply({"params": params["kps_guider"]}, imgs.astype(dtype))

    def unet(x, audio, bank, kps, style):
        timesteps = jnp.full((x.shape[0],), t, jnp.float32)
        return models.unet.apply(
            {"params": params["unet"]}, x, timesteps, audio, reference_bank=bank or None, kps_features=kps,
            style_tokens=style, reference_weight=scalars["reference_weight"], audio_weight=scalars["audio_weight"],
            style_weight=scalars["style_weight"],
        ).astype(jnp.float32)

    if not do_cfg:
        return unet(x, audio, bank, kps, style)
    uncond_style = _zeros(style) if cfg.guidance.uncond_style == "zero" else style
    uncond = unet(x, _zeros(audio), tuple(_zeros(v) for v in bank), _zeros(kps), uncond_style)
    cond = unet(x, audio, bank, kps, style)
    return uncond + scalars["guidance_scale"] * (cond - uncond)


def denoise_latents(models: Any, params: dict, keys: jax.Array, cond: Conditions, scalars: dict[str, jax.Array],
                    *, plan: context.WindowPlan, coeffs: Any, latent_shape: tuple[int, int, int], do_cfg: bool,
                    on_step: Callable[[Any], None] | None = None,
                    on_window: Callable[[Any, Any, Any], None] | None = None) -> jax.Array:
    """Sample latents [B, F, h, w, C] for a batch of clips (pure; jit it). One key per clip.

    `on_step(t)` / `on_window(t, k, probe)` are host callbacks (`jax.debug.callback`) after each sampler step /
    each context window of a step; left out (None), the compiled loop has no callback at all."""
    frames = plan.num_frames
    dtype = models.unet.dtype
    windows = jnp.asarray(plan.indices)
    z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (frames, *latent_shape), jnp.float32))(keys)

    def denoise(x_in: jax.Array, t: jax.Array) -> jax.Array:
        def one_window(k, acc):
            idx = windows[k]
            take = lambda a: None if a is None else jnp.take(a, idx, axis=1)
            x_w = take(x_in).astype(dtype)
            pred = window_prediction(models, params, x_w, t, take(cond.audio_tokens), take(cond.kps_images),
                                     cond.reference_bank, cond.style_tokens, scalars, do_cfg)
            acc = context.accumulate_window(acc, pred, idx)
            if on_window is not None:
                jax.debug.callback(on_window, t, k, acc[0, 0, 0, 0, 0])  # after this window's UNet has run
            return acc

        acc = jax.lax.fori_loop(0, plan.num_windows, one_window, jnp.zeros(x_in.shape, jnp.float32))
        if on_step is not None:
            jax.debug.callback(on_step, t)
        return context.normalise(acc, plan)

    if isinstance(coeffs, diffusion.EulerCoefficients):
        return diffusion.euler_sample(denoise, z * coeffs.init_noise_sigma, coeffs)
    stochastic = coeffs.stochastic if isinstance(coeffs, diffusion.MultistepCoefficients) else coeffs.eta > 0
    noises = None
    if stochastic:
        per_clip = jax.vmap(lambda k: jax.random.normal(
            jax.random.fold_in(k, 2), (coeffs.num_steps, frames, *latent_shape), jnp.float32))(keys)
        noises = jnp.swapaxes(per_clip, 0, 1)
    if isinstance(coeffs, diffusion.MultistepCoefficients):
        return diffusion.multistep_sample(denoise, z, coeffs, noises=noises)
    return diffusion.ddim_sample(denoise, z, coeffs, noises=noises)


# ---------------------------------------------------------------------------------------------------- pipeline


# Compiled stage functions, shared by every pipeline in the process: keyed by (config, mesh, stage, shapes, flags).
# They take params as arguments, so two SVPModels of one config share them. `_PROGRESS` is the live step bar and
# the live per-window listener (one sampling loop runs at a time per process; the web app queues requests).
_COMPILED = CompileCache("svp.pipeline.stages", maxsize=32)
_PROGRESS: dict[str, Any] = {"bar": None, "window": None}

ProgressFn = Callable[[str, int, int], None]
"""`on_progress(stage, done, total)`: called as sampling advances (stages "prepare", "denoise", "decode"; for
"denoise" one unit is one context window of one sampler step)."""


def _static_config(cfg: Any) -> Any:
    """The config without the values the compiled functions take as inputs (guidance scale and weights, seed)."""
    g = cfg.guidance
    static = dataclasses.replace(g, scale=0.0, reference_weight=0.0, audio_weight=0.0, style_weight=0.0,
                                 force_cfg=False)
    return dataclasses.replace(cfg, guidance=static, seed=0)


def _report_step(t: Any) -> None:
    bar = _PROGRESS["bar"]
    if bar is not None:
        bar.update(1)


class _WindowListener:
    """Turns the compiled loop's (timestep, window) callbacks into `on_progress("denoise", done, total)`.
    The step comes from the timestep's place in the schedule, so a callback repeated per device (on a mesh) or
    delivered out of order never counts twice."""

    def __init__(self, timesteps: np.ndarray, num_windows: int, on_progress: ProgressFn, bar: tqdm | None):
        self.timesteps = np.asarray(timesteps, np.float64)
        self.num_windows = num_windows
        self.total = len(self.timesteps) * num_windows
        self.on_progress = on_progress
        self.bar = bar
        self.done = 0

    def __call__(self, t: Any, k: Any, probe: Any) -> None:
        step = int(np.argmin(np.abs(self.timesteps - float(np.asarray(t)))))
        done = step * self.num_windows + int(np.asarray(k)) + 1
        if done <= self.done:
            return
        if self.bar is not None:
            self.bar.update(done // self.num_windows - self.done // self.num_windows)
        self.done = done
        self.on_progress("denoise", done, self.total)


def _report_window(t: Any, k: Any, probe: Any) -> None:
    listener = _PROGRESS["window"]
    if listener is not None:
        listener(t, k, probe)


class SVPPipeline:
    """Sampling with one `SVPModels` bundle (see the module docstring for the stages)."""

    def __init__(self, models: Any, *, progress: bool = True, mesh: Mesh | None = None,
                 on_progress: ProgressFn | None = None):
        """`mesh` (as for `Style2TalkerPipeline`): the params are placed on it with their logical shardings and
        clips are split over its batch axes; default: the mesh the bundle was built or loaded on (or none).
        `progress`: tqdm bars on stderr. `on_progress(stage, done, total)`: a listener (e.g. a web page's
        progress bar); with one, the compiled loop reports every context window of every step (a separately
        compiled variant; without one the loop has no per-window callback)."""
        if mesh is not None and mesh is not models.mesh:
            models = models.on_mesh(mesh)
        self.models = models
        self.cfg = models.config
        self.mesh = models.mesh
        self.progress = progress
        self.on_progress = on_progress
        self.coeffs = sampler_coefficients(self.cfg.sampler)

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, done, total)

    # ---- helpers
    @property
    def image_size(self) -> tuple[int, int]:
        return self.cfg.video.height, self.cfg.video.width

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        f = self.models.vae_scale_factor
        return self.cfg.video.height // f, self.cfg.video.width // f, self.models.vae.config.latent_channels

    def num_frames(self, audio: np.ndarray) -> tuple[int, float]:
        """Frame count and fps for audio of this length (V-Express's cut rule when `context.cut_to_windows`)."""
        c, fps = self.cfg.context, self.cfg.video.fps
        duration = len(audio) / media.SAMPLE_RATE
        if c.cut_to_windows:
            return context.video_duration_frames(duration, fps, c.frames, c.overlap)
        frames = int(duration * fps)
        if frames < 1:
            raise ValueError(f"{duration:.3f} s of audio at {fps:g} fps is shorter than one frame")
        return frames, fps

    def window_plan(self, num_frames: int) -> context.WindowPlan:
        c = self.cfg.context
        if num_frames <= c.frames:
            return context.window_plan(num_frames, num_frames, 0)
        return context.window_plan(num_frames, c.frames, c.overlap)

    def _compile(self, stage: str, fn: Callable, args: tuple, out_ndim: int | None = None, **flags: Any):
        """`fn(params, *args)` compiled through `compile_cache.compiled` (once per config, mesh, stage, shapes,
        flags): params keep their shardings, array args are split over the batch axes, scalars are replicated."""
        key = ("svp", stage, _static_config(self.cfg), mesh_key(self.mesh), tuple(sorted(flags.items())))
        if self.mesh is None:
            return compiled(_COMPILED, key, fn, (self.models.params, *args))
        rep = NamedSharding(self.mesh, P())
        arg_shardings = jax.tree.map(lambda a: self._batch_sharding(a) if np.ndim(a) else rep, args)
        out = rep if out_ndim is None else self._batch_sharding(jax.ShapeDtypeStruct(
            (self._batch_of(args),) + (1,) * (out_ndim - 1), jnp.float32))
        # No logical-axis rules while tracing: the activation constraints inside the UNet made XLA's SPMD
        # partitioner produce wrong values for the guided (CFG) batch on a (2, 2, 2) mesh (jax 0.10.2), while
        # propagation from the sharded params and clip axis alone is exact (tests/svp/test_pipeline.py).
        return compiled(_COMPILED, key, fn, (self.models.params, *args),
                        in_shardings=(self.models.shardings, *arg_shardings), out_shardings=out, mesh=self.mesh)

    def _run(self, program: Any, *args):
        if self.mesh is None:
            return program(self.models.params, *args)
        return program(self.models.params, *(jax.tree.map(self._put, a) for a in args))

    def _batch_sharding(self, x: Any) -> NamedSharding:
        """Split the clip axis over the batch mesh axes that divide it ((data, fsdp), data, fsdp or none: a
        single clip is replicated while fsdp / tensor still split the params)."""
        b = np.shape(x)[0]
        for axes in (parallel.BATCH_AXES, ("data",), ("fsdp",)):
            size = int(np.prod([self.mesh.shape[a] for a in axes]))
            if size > 1 and b % size == 0:
                return NamedSharding(self.mesh, P(axes if len(axes) > 1 else axes[0], *[None] * (np.ndim(x) - 1)))
        return NamedSharding(self.mesh, P())

    @staticmethod
    def _batch_of(args: tuple) -> int:
        return int(np.shape(next(a for a in jax.tree.leaves(args) if np.ndim(a) > 0))[0])

    def _put(self, x: Any) -> Any:
        """Place one input: the clip axis split by `_batch_sharding`, scalars replicated."""
        return parallel.put(x, self.mesh, self._batch_sharding(x) if np.ndim(x) else None)

    # ---- stages
    def encode_reference(self, images: np.ndarray) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """uint8 [B, H, W, 3] -> (latents [B, h, w, C] = mean x scaling_factor, ReferenceNet bank)."""
        m = self.models
        scale = m.vae.config.scaling_factor
        ctx_dim = m.reference_context_dim

        def run(params, imgs):
            x = imgs.astype(jnp.float32) / 127.5 - 1.0
            mean, _ = m.vae.apply({"params": params["vae"]}, x.astype(m.vae.dtype), method="encode")
            latents = mean.astype(jnp.float32) * scale
            ctx = jnp.zeros((x.shape[0], 1, ctx_dim), m.reference_net.dtype)
            _, bank = m.reference_net.apply({"params": params["reference_net"]}, latents.astype(m.reference_net.dtype),
                                            jnp.zeros((x.shape[0],), jnp.float32), ctx)
            return latents, tuple(bank)

        return self._run(self._compile("reference", run, (images,)), images)

    def audio_windows(self, audio: np.ndarray, num_frames: int) -> np.ndarray:
        """One clip's audio -> per-frame feature windows (F, window, embedding_dim), on the host."""
        features = self.models.audio_features(audio)  # (T, D) at 50 Hz
        return np.asarray(self.cfg.audio_projection.windows(jnp.asarray(features)[None], num_frames))

    def project_audio(self, windows: np.ndarray) -> jax.Array:
        """[B, F, window, D_in] -> audio tokens [B, F, Na, D]."""
        m = self.models

        def run(params, w):
            b, f = w.shape[:2]
            tokens = m.audio_projection.apply({"params": params["audio_projection"]},
                                              w.reshape(b * f, *w.shape[2:]).astype(m.audio_projection.dtype))
            return tokens.reshape(b, f, *tokens.shape[1:])

        return self._run(self._compile("audio", run, (windows,), out_ndim=4), windows)

    def style_tokens(self, priors: Sequence[StyleGaussian], keys: jax.Array) -> jax.Array:
        """Per-clip priors -> tokens [B, K, d_s]: mu, or mu + sigma * eps with eps from fold_in(key, 1)."""
        mu = jnp.stack([jnp.asarray(p.mu, jnp.float32) for p in priors])
        var = jnp.stack([jnp.asarray(p.var, jnp.float32) for p in priors])
        if not self.cfg.style.sample:
            return mu
        eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), mu.shape[1:], jnp.float32))(keys)
        return mu + jnp.sqrt(var + 1e-8) * eps

    def guidance_scalars(self) -> dict[str, np.ndarray]:
        g = self.cfg.guidance
        return {"guidance_scale": np.float32(g.scale), "reference_weight": np.float32(g.reference_weight),
                "audio_weight": np.float32(g.audio_weight), "style_weight": np.float32(g.style_weight)}

    def compile_denoise(self, keys: Any, cond: Any, num_frames: int) -> Any:
        """The AOT-compiled denoising loop for these input shapes (arrays or ShapeDtypeStructs); exposes
        `memory_analysis()` / `cost_analysis()`."""
        g = self.cfg.guidance
        do_cfg = g.scale != 1.0 or g.force_cfg
        plan = self.window_plan(num_frames)
        report = "window" if self.on_progress is not None else "step" if self.progress else "none"
        on_step = _report_step if report == "step" else None
        on_window = _report_window if report == "window" else None
        fn = lambda params, k, c, s: denoise_latents(
            self.models, params, k, c, s, plan=plan, coeffs=self.coeffs, latent_shape=self.latent_shape,
            do_cfg=do_cfg, on_step=on_step, on_window=on_window)
        return self._compile("denoise", fn, (keys, cond, self.guidance_scalars()), out_ndim=5,
                             frames=num_frames, do_cfg=do_cfg, progress=report)

    def sample_latents(self, cond: Conditions, keys: jax.Array, num_frames: int) -> jax.Array:
        """The compiled denoising loop: latents [B, F, h, w, C]."""
        program = self.compile_denoise(keys, cond, num_frames)
        bar = tqdm(total=self.coeffs.num_steps, desc="denoise", unit="step", leave=False,
                   disable=not self.progress)
        _PROGRESS["bar"] = bar
        if self.on_progress is not None:
            _PROGRESS["window"] = _WindowListener(np.asarray(self.coeffs.timesteps),
                                                  self.window_plan(num_frames).num_windows, self.on_progress, bar)
        try:
            out = self._run(program, keys, cond, self.guidance_scalars())
            jax.block_until_ready(out)
            jax.effects_barrier()  # every debug callback has run
        finally:
            _PROGRESS["bar"] = None
            _PROGRESS["window"] = None
            bar.close()
        return out

    def decode(self, latents: jax.Array) -> np.ndarray:
        """Latents [B, F, h, w, C] -> uint8 frames [B, F, H, W, 3], `video.decode_chunk` frames per VAE call
        (quantised inside the loop, so only uint8 frames are ever held for the whole clip)."""
        m = self.models
        chunk = self.cfg.video.decode_chunk
        scale = m.vae.config.scaling_factor

        def run(params, lat):
            b, f = lat.shape[:2]
            flat = lat.reshape(b * f, *lat.shape[2:]) / scale
            n = flat.shape[0]
            steps = -(-n // chunk)
            flat = jnp.pad(flat, ((0, steps * chunk - n),) + ((0, 0),) * 3).reshape(steps, chunk, *flat.shape[1:])

            def one(zc):
                img = m.vae.apply({"params": params["vae"]}, zc.astype(m.vae.dtype), method="decode")
                return jnp.round(jnp.clip(img.astype(jnp.float32) / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)

            imgs = jax.lax.map(one, flat)
            imgs = imgs.reshape(steps * chunk, *imgs.shape[2:])[:n]
            return imgs.reshape(b, f, *imgs.shape[1:])

        frames = np.asarray(self._run(self._compile("decode", run, (latents,), out_ndim=5), latents))
        if self.cfg.video.median_filter:
            frames = median_filter_video(frames)
        return frames

    # ---- end to end
    def prepare(self, clips: Sequence[ClipInputs], keys: jax.Array, num_frames: int,
                stages: tqdm | None = None) -> Conditions:
        """Stages 1-4 for a batch of clips: the sampler's conditions for `num_frames` frames."""
        count = [0]

        def step(name: str) -> None:
            if stages is not None:
                stages.set_postfix_str(name)

        def done() -> None:
            count[0] += 1
            if stages is not None:
                stages.update(1)
            self._report("prepare", count[0], 3)

        self._report("prepare", 0, 3)
        step("reference")
        h, w = self.image_size
        refs = np.stack([resize_image(c.reference, h, w) for c in clips])
        _, bank = self.encode_reference(refs)
        done()
        step("audio")
        windows = np.stack([self.audio_windows(c.audio, num_frames) for c in clips])
        tokens = self.project_audio(windows)
        done()
        step("style / kps")
        style = None
        with_style = [c.style is not None for c in clips]
        if any(with_style):
            if not self.cfg.style.enabled:
                raise ValueError("a style source was given but the config has style.enabled=false "
                                 "(this model has no style attention)")
            if not all(with_style):
                raise ValueError(f"clips {[i for i, w in enumerate(with_style) if not w]} have no style source "
                                 "while others do; give every clip in a batch a style or none")
            style = self.style_tokens([resolve_style(self.models, c.style) for c in clips], keys)
        kps = None
        if any(c.kps is not None for c in clips):
            kps = np.stack([
                keypoint_images(c.kps, num_frames, c.reference.shape[:2], (h, w), self.cfg.video.kps_mode)
                if c.kps is not None else np.zeros((num_frames, h, w, 3), np.uint8) for c in clips])
        done()
        return Conditions(audio_tokens=tokens, reference_bank=tuple(bank), kps_images=kps, style_tokens=style)

    def __call__(self, inputs: ClipInputs | Sequence[ClipInputs], *, seed: int | None = None,
                 keys: jax.Array | None = None) -> SVPResult | list[SVPResult]:
        """One `ClipInputs` -> one `SVPResult`; a sequence -> a list of results, in order, sampled as one
        data-parallel batch (clips of different lengths are cut to the shortest: one compiled loop). The same
        convention as `Style2TalkerPipeline`. Input i uses the key fold_in(key(seed), i) (seed defaults to the
        config's), so the first input of a batch samples as it would alone; `keys` gives one key per input."""
        clips, single = parallel.one_or_many(inputs, ClipInputs, "SVPPipeline", "clips")
        if keys is None:
            keys = clip_keys(self.cfg.seed if seed is None else seed, len(clips))
        if keys.shape[0] != len(clips):
            raise ValueError(f"SVPPipeline: {keys.shape[0]} keys for {len(clips)} clips")
        lengths = [self.num_frames(c.audio) for c in clips]
        num_frames = min(n for n, _ in lengths)
        fps = next(f for n, f in lengths if n == num_frames)
        stages = tqdm(total=5, desc="svp", unit="stage", disable=not self.progress)
        try:
            cond = self.prepare(clips, keys, num_frames, stages)
            stages.set_postfix_str("denoise")
            latents = self.sample_latents(cond, keys, num_frames)
            stages.update(1)
            stages.set_postfix_str("decode")
            self._report("decode", 0, 1)
            frames = self.decode(latents)
            stages.update(1)
            self._report("decode", 1, 1)
        finally:
            stages.close()
        samples = int(round(num_frames / fps * media.SAMPLE_RATE))
        latents = np.asarray(latents)
        results = [SVPResult(frames=frames[i], audio=np.asarray(c.audio, np.float32)[:samples], fps=fps,
                             latents=latents[i]) for i, c in enumerate(clips)]
        return results[0] if single else results

    def condition_shapes(self, batch: int, num_frames: int, *, style_tokens: int | None = 1,
                         kps: bool = True) -> Conditions:
        """ShapeDtypeStructs of the sampler's conditions (for `compile_denoise` without real inputs)."""
        m, h, w = self.models, *self.image_size
        lh, lw, lc = self.latent_shape
        u = self.cfg.unet.unet
        bank = jax.eval_shape(lambda p: m.reference_net.apply(
            {"params": p}, jnp.zeros((batch, lh, lw, lc), m.reference_net.dtype), jnp.zeros((batch,)),
            jnp.zeros((batch, 1, u.cross_attention_dim), m.reference_net.dtype))[1], m.params["reference_net"])
        sds = jax.ShapeDtypeStruct
        ap = self.cfg.audio_projection
        style = None
        if style_tokens is not None and self.cfg.unet.use_style:
            style = sds((batch, style_tokens, self.cfg.unet.style_dim), jnp.float32)
        return Conditions(audio_tokens=sds((batch, num_frames, ap.num_queries, ap.output_dim), m.audio_projection.dtype),
                          reference_bank=tuple(bank),
                          kps_images=sds((batch, num_frames, h, w, 3), jnp.uint8) if kps else None,
                          style_tokens=style)


# ------------------------------------------------------------------------------------------------------ outputs


def median_filter_video(frames: np.ndarray, size: int = 3) -> np.ndarray:
    """V-Express's `median_filter_3d`: a size^3 median over (time, height, width) per channel with reflect
    padding. Run on uint8 frames: quantisation is monotone, so it commutes with the median."""
    from scipy.ndimage import median_filter

    return median_filter(frames, size=(1,) * (frames.ndim - 4) + (size, size, size, 1), mode="mirror")





# ------------------------------------------------------------------------------------------- generate from files


def load_kps(path: str | os.PathLike) -> np.ndarray:
    """Keypoints from `.npy` ((8, 2), (F, 8, 2) or V-Kps (…, 3, 2) pixels) or `.npz` (`head_kps` or `kps`)."""
    p = Path(path)
    if not p.is_file():
        raise media.MediaError(f"{p}: keypoint file not found; check the path")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = next((k for k in ("head_kps", "kps") if k in z.files), None)
                if key is None:
                    raise media.MediaError(f"{p}: no 'head_kps' or 'kps' array (found {z.files})")
                kps = z[key]
        else:
            kps = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        if isinstance(e, media.MediaError):
            raise
        raise media.MediaError(f"{p}: cannot be read as keypoints ({e}); save them with numpy.save") from None
    return check_kps(kps, str(p))


def check_kps(kps: Any, where: str = "keypoints") -> np.ndarray:
    """float32 keypoints, or one MediaError saying which shapes are accepted."""
    kps = np.asarray(kps, np.float32)
    if kps.ndim not in (2, 3) or kps.shape[-1] != 2 or kps.shape[-2] not in (3, 8) or not np.all(np.isfinite(kps)):
        raise media.MediaError(f"{where}: keypoints must be finite pixel coordinates of shape (8, 2), (F, 8, 2) or "
                               f"with 3 V-Kps points, got {kps.shape}")
    return kps


def _style_source(style: Any, style_mix: float) -> StyleSource | None:
    """None, one source (a `.npz` path or a StyleSource), or a sequence of two mixed with weight `style_mix`."""
    if style is None:
        return None
    items = list(style) if isinstance(style, list | tuple) else [style]
    if not items:
        return None
    if len(items) > 2:
        raise ValueError("style: give one style file, or two to mix with style_mix")
    sources = [load_style(s) if isinstance(s, str | os.PathLike) else s for s in items]
    if not 0.0 <= float(style_mix) <= 1.0:
        raise ValueError(f"style_mix {style_mix}: the weight of the second style must be in [0, 1]")
    return sources[0] if len(sources) == 1 else StyleMix(sources[0], sources[1], float(style_mix))


def resolve_config(checkpoint: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
                   overrides: Sequence[str] = ()) -> Any:
    """The SVP config a checkpoint folder (or none) runs with: a saved bundle's own `config.yaml`; else `config`,
    defaulting to `svp_vexpress` with a checkpoint folder. With neither, the shipped trained model's config.
    Checks the folder's kind."""
    from jaxtalk.svp import loading as svp_loading
    from jaxtalk.svp.config import SVPConfig
    from jaxtalk.svp.models import ModelLoadError

    if checkpoint is None and config is None:
        checkpoint = svp_loading.packaged_weights()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.is_dir():
        raise FileNotFoundError(f"--checkpoint {ckpt}: folder not found")
    if ckpt is not None and not (svp_loading.is_converted_checkpoint(ckpt) or svp_loading.is_converted_parts(ckpt)
                                 or svp_loading.is_vexpress_folder(ckpt)):
        raise ModelLoadError(
            f"--checkpoint {ckpt}: not a checkpoint folder; expected a saved SVP bundle (config.yaml + params/), "
            "folders written by jaxtalk convert --kind (one per component), or V-Express's five .bin files")
    if ckpt is not None and svp_loading.is_converted_checkpoint(ckpt):
        return config_lib.load(ckpt / "config.yaml", overrides=overrides, cls=SVPConfig)
    name = config or ("svp_vexpress" if ckpt is not None else "svp_tiny")
    return config_lib.load(name, overrides=overrides, cls=SVPConfig)


def resolve_models(checkpoint: str | os.PathLike | None = None, *, cfg: Any = None,
                   config: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                   devices: int | None = None, vae: str | os.PathLike | None = None,
                   audio_encoder: str | os.PathLike | None = None) -> Any:
    """The weights `generate` samples with: a saved bundle, converted parts, a V-Express folder, or without a
    checkpoint the shipped trained model (or random init from `cfg.seed` when a config is given). The web app
    loads its default weights through here too. `devices`: the first N devices (default all; more than one shards
    the params by `cfg.mesh`)."""
    from jaxtalk.svp import loading as svp_loading
    from jaxtalk.svp import models as svp_models

    if checkpoint is None and config is None and cfg is None:
        checkpoint = svp_loading.packaged_weights()
    if cfg is None:
        cfg = resolve_config(checkpoint, config, overrides)

    if devices is not None and not 1 <= devices <= jax.device_count():
        raise ValueError(f"--devices {devices}: choose 1..{jax.device_count()}")
    chosen = jax.devices()[:devices] if devices else jax.devices()
    mesh = None
    if len(chosen) > 1:
        m = cfg.mesh
        mesh = parallel.make_mesh(m.data, m.fsdp, m.tensor, devices=chosen)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and svp_loading.is_converted_checkpoint(ckpt):
        return svp_loading.load_models(ckpt, cfg=cfg, mesh=mesh)
    if ckpt is not None and svp_loading.is_vexpress_folder(ckpt):
        from jaxtalk.interop.hf_cache import resolve_pretrained

        vae = resolve_pretrained(vae, "--vae") if vae else None
        audio_encoder = resolve_pretrained(audio_encoder, "--audio-encoder") if audio_encoder else None
        return svp_loading.from_vexpress(ckpt, vae=vae, audio_encoder=audio_encoder, cfg=cfg, mesh=mesh,
                                         seed=cfg.seed)
    if ckpt is not None:
        return svp_loading.load_converted_parts(ckpt, cfg=cfg, mesh=mesh, seed=cfg.seed)
    return svp_models.build_models(cfg, seed=cfg.seed, mesh=mesh)


FAST_PRESET = "svp_synthetic_fast"


def fast_sampling() -> tuple[str, int]:
    """(sampler kind, steps) of the `svp_synthetic_fast` preset: the solver and fewest steps whose fidelity stayed
    within noise of 25-step Euler on held-out clips of the shipped model (`bench/svp_steps.py`, docs/svp_steps.json).
    """
    from jaxtalk.svp.config import SVPConfig

    s = config_lib.load(FAST_PRESET, cls=SVPConfig).sampler
    return s.kind, s.steps


def sampling_choice(sampler: str | None, steps: int | None, *, fast: bool = False) -> tuple[str | None, int | None]:
    """The (sampler, steps) `generate` runs with: explicit values win; with `fast` the missing ones come from
    `fast_sampling()` (both from it when neither is given); None = the config's own."""
    if not fast:
        return sampler, steps
    kind, n = fast_sampling()
    if sampler is not None and sampler != kind and steps is None:
        return sampler, None  # another solver than the preset's: its step count says nothing about this one
    return sampler or kind, steps if steps is not None else n


def with_sampling_overrides(models: Any, overrides: Sequence[str]) -> Any:
    """`models` with `overrides` applied to its config (sampling settings: seed, sampler steps, guidance, video
    size, context windows); the weights are shared, not copied."""
    if not overrides:
        return models
    from jaxtalk.svp.config import SVPConfig

    data = config_lib.to_dict(models.config)
    for o in overrides:
        data = config_lib.apply_override(data, o)
    return dataclasses.replace(models, config=config_lib.from_dict(SVPConfig, data))


def generate(image: str | os.PathLike | np.ndarray, audio: str | os.PathLike | np.ndarray | None,
             out: str | os.PathLike, *, style: Any = None, style_mix: float = 0.5,
             kps: str | os.PathLike | np.ndarray | None = None, driving: str | os.PathLike | np.ndarray | None = None,
             face: str = "auto", retarget: str | None = None, face_index: int | None = None,
             min_face_score: float = 0.5, debug_dir: str | os.PathLike | None = None, paste_back: bool = False,
             checkpoint: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
             overrides: Sequence[str] = (), seed: int | None = None, steps: int | None = None,
             sampler: str | None = None, devices: int | None = None, vae: str | os.PathLike | None = None,
             audio_encoder: str | os.PathLike | None = None, models: Any = None, progress: bool = True,
             on_progress: ProgressFn | None = None, on_note: Callable[[str], None] | None = None,
             write: bool | None = None) -> dict[str, Any]:
    """Generate one SVP video from files (or arrays) and write `out` (.mp4 with the speech) and `out`.yaml: what
    `jaxtalk generate`, the demo and the web page run.

    The same call convention as `jaxtalk.style2talker.pipeline.generate`: every input is read and checked before
    any model is built, outputs are written atomically, so a bad input raises one error (`MediaError` /
    `ValueError` / `ConfigError` / `FileNotFoundError`) and leaves no file.

    * `image`: a photo (the face is found, cropped and keypointed by `jaxtalk.faces` unless `kps` is given or
      `face="off"`; `face="auto"` falls back to the photo as given when no face is found), a folder written by
      `jaxtalk prepare`, or a uint8 array. `audio`: speech file or 16 kHz array; None takes the `driving` video's
      or the prepared folder's sound. `driving`: a video whose head motion drives the keypoints (`retarget`).
    * `style`: a `.npz` path or `StyleSource`, or two of them mixed by `style_mix`.
    * weights: `models` (an already built bundle; `overrides`, `seed`, `steps`, `sampler` adjust its sampling),
      else `checkpoint` / `config` through `resolve_models`; with neither, the shipped trained model.
    * `paste_back`: write the generated face back into the original photo. `write`: write the files (default:
      on process 0 only, so a multi-process run writes once). `on_progress(stage, done, total)` follows the
      sampling (see `SVPPipeline`); `on_note(line)` gets the human-readable lines (face found, fallbacks).

    Returns {'video', 'config' (when written), 'result' (the `SVPResult`), 'frames' (as written, pasted back
    when asked), 'models', 'prior' (the resolved style Gaussian or None), 'summary' (JSON-ready: system, paths,
    weights, frames, size, fps)}.
    """
    from jaxtalk.faces import inputs as face_inputs

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the output must be an .mp4 file")
    if kps is not None:
        kps = load_kps(kps) if isinstance(kps, str | os.PathLike) else check_kps(kps)
    source = _style_source(style, style_mix)
    overrides = list(overrides)
    if seed is not None:
        overrides.append(f"seed={seed}")
    if steps is not None:
        overrides.append(f"sampler.steps={steps}")
    if sampler is not None:
        overrides.append(f"sampler.kind={sampler}")
    if models is None and checkpoint is None and config is None:  # the shipped trained model
        from jaxtalk.svp.loading import packaged_weights

        checkpoint = packaged_weights()
    if models is None:
        cfg = resolve_config(checkpoint, config, overrides)
    else:
        models = with_sampling_overrides(models, overrides)
        cfg = models.config
    if source is not None and not cfg.style.enabled:
        raise ValueError("--style: the config has style.enabled=false (no style attention); drop --style or use "
                         "a config with style (svp_paper, svp_tiny)")
    img, wav, kps, paste = face_inputs.svp_inputs(
        image, audio, kps=kps, driving=driving, face=face, retarget=retarget, face_index=face_index,
        min_face_score=min_face_score, debug_dir=debug_dir, on_note=on_note)
    if wav.ndim != 1 or wav.size == 0 or not np.all(np.isfinite(wav)):
        raise media.MediaError(f"audio must be a non-empty finite mono 16 kHz array, got shape {wav.shape}")
    face_inputs.check_paste_back(paste_back, paste)
    if models is None:
        models = resolve_models(checkpoint, cfg=cfg, devices=devices, vae=vae, audio_encoder=audio_encoder)
    write = jax.process_index() == 0 if write is None else write
    pipe = SVPPipeline(models, progress=progress and write, on_progress=on_progress)
    result = pipe(ClipInputs(reference=img, audio=wav, kps=kps, style=source))
    frames = face_inputs.paste_frames(result.frames, paste) if paste_back else result.frames
    paths: dict[str, Any] = write_outputs(out, frames, result.audio, result.fps, models.config) if write else {}
    prior = resolve_style(models, source) if source is not None else None
    summary = media.result_summary("svp", out, frames, result.fps, models.source)
    return {**paths, "result": result, "frames": frames, "models": models, "prior": prior, "summary": summary}


def write_demo(out_dir: str | os.PathLike, *, seed: int = 0, config: str | os.PathLike | None = None,
               checkpoint: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """SVP on a HELD-OUT synthetic person (population `svp_stack.EVAL_SEED`, never seen in training): the first
    frame of one of their clips as reference, that clip's speech and head keypoints, and the style of another
    utterance with the same emotion. Weights: the shipped trained model at its own size, unless `checkpoint` or
    `config` (a preset name samples that config with random weights) is given. The same call convention as
    `jaxtalk.style2talker.pipeline.write_demo`: the inputs are written beside the video, so the returned
    `command` reproduces it, plus the mp4, its config, the style prior and `svp_strip.png` (reference, generated
    frames, ground-truth frames). Returns the paths and {'command', 'models', 'result'}."""
    import soundfile

    from jaxtalk.data import synthetic
    from jaxtalk.plot import image_strip
    from jaxtalk.training.svp_stack import EVAL_SEED

    out_dir = Path(out_dir)
    size = 64 if config is None else 128
    identity = synthetic.make_identity(EVAL_SEED, 7 + seed)
    clip = synthetic.generate_clip(identity, "happy", 3, seed=seed + 1, num_frames=40, fps=25.0, resolution=size)
    style_clip = synthetic.generate_clip(identity, "happy", 3, seed=seed + 2, num_frames=40, fps=25.0,
                                         resolution=64, render_video=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"reference": out_dir / "svp_reference.png", "audio": out_dir / "svp_audio.wav",
             "kps": out_dir / "svp_kps.npy", "style": out_dir / "svp_style_clip.npz"}
    with atomic_path(files["reference"]) as tmp:
        Image.fromarray(clip.frames[0]).save(tmp, format="PNG")
    with atomic_path(files["audio"]) as tmp:
        soundfile.write(tmp, clip.audio, clip.sample_rate, format="WAV")
    with atomic_path(files["kps"]) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, clip.head_kps)
    with atomic_path(files["style"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, expression=style_clip.expression, audio=style_clip.audio, fps=np.float32(style_clip.fps))
    video = out_dir / "svp.mp4"
    command = (f"jaxtalk generate --image {files['reference']} --audio {files['audio']} --kps {files['kps']} "
               f"--style {files['style']} --devices 1 --out {video}" + (f" --config {config}" if config else "")
               + (f" --checkpoint {checkpoint}" if checkpoint else ""))
    got = generate(files["reference"], files["audio"], video, kps=files["kps"], style=files["style"],
                   checkpoint=checkpoint, config=config, devices=1, progress=progress)
    outputs: dict[str, Any] = {f"svp_{k}": v for k, v in files.items()}
    outputs.update(svp_video=got["video"], svp_config=got["config"])
    if got["prior"] is not None:
        outputs["svp_style_prior"] = save_style_prior(out_dir / "svp_style_prior.npz", got["prior"])
    frames = got["frames"]
    generated = np.stack([resize_image(f, size, size) for f in frames[::4]])  # a preset may sample smaller
    outputs["svp_strip"] = image_strip([("reference", clip.frames[:1]), ("generated", generated),
                                        ("ground truth", clip.frames[:len(frames):4])], out_dir / "svp_strip.png")
    return {**outputs, "command": command, "models": got["models"], "result": got["result"]}


# One name per role, the same in both products: `Pipeline(models, *, progress, mesh, on_progress)` called on one
# `Inputs` (or a sequence) with a seed, returning a `Result` (or a list); `generate()` from files.
Pipeline = SVPPipeline
Inputs = ClipInputs
Result = SVPResult
