"""Style2Talker generation: identity image + speech + emotion text + art style -> stylised talking-head video.

    models = load_models("ckpt/style2talker")                # or random_models(config.load("style2talker_tiny"))
    result = Style2TalkerPipeline(models)(Style2TalkerInputs(image, audio, "She is happy", style=0), seed=0)
    write_outputs("out.mp4", result.frames, result.audio, result.fps, result.config)

A sequence of inputs gives a list of results. Or in one call from files: `generate(image="id.png",
audio="speech.wav", emotion="She is happy", out="out.mp4")` (what `jaxtalk generate --system style2talker`, the
demo and `jaxtalk serve` run). `Pipeline` / `Inputs` / `Result` name the same roles as in `jaxtalk.svp`.

Stages, as the released `inference.py` (research/style2talker_architecture.md §0), each one compiled function:
1. text: CLIP tokenizer (offline BPE) + text tower -> the projected end-token feature (not normalised).
2. expression: SadTalker mel windows (host numpy) -> audio2exp with the identity's own expression as `ref` and an
   eye-blink ratio (random pulses drawn from the seed, or zeros) -> Style-E: the 5-step respaced ancestral sampler
   over non-overlapping 32-frame windows (any length; `style_e.generate_expression`), key from the seed.
3. coefficients: per frame [exp 64, angles 3, trans 3, crop 3] = 73, then a 27-frame window per frame (radius
   13, indices clamped at the clip ends) -> (F, 27, 73).
4. identity: pSp Z+ code of the identity -> W+ (`zplus2wplus`); Style-A's code takes rows :7 from the art style
   and 7: from the identity (all from the art style with `color_transfer`). The content encoder's features depend
   only on the identity, the code and d_s, so they are computed once here and reused for every frame.
5. frames: Style-A on fixed-size batches of coefficient windows (the last batch padded by repeating its last
   window, so one compiled shape), clamped to [-1, 1] and quantised to uint8 on the device; tqdm over batches.
   Device memory is bounded by the batch; the uint8 frames accumulate on the host.

Inputs the original computes with models jaxtalk does not ship, taken from the caller instead:
* `identity_expression` (64,): the identity's Deep3DFaceRecon expression coeff[80:144] (audio2exp's `ref`).
  Without a 3DMM fit it is zeros, the BFM mean (neutral) expression.
* `pose`: per-frame (F', 6) [pitch, yaw, roll, tx, ty, tz] (Deep3DFaceRecon coeff[224:227], [254:257]) with
  F' >= F (cut to F, as the original cuts its pose file), or one (6,) pose held for every frame; zeros when absent:
  the identity's head held still, facing the camera.
* `crop` (3,) or (F', 3): Deep3DFaceRecon trans_params[2:] (ratio, t0, t1); `inference.crop` when absent.
* `parsing` (in_size, in_size, 19): BiSeNet face-parsing logits of the identity at Style-A's input size
  (divided by 16 inside, as the original); zeros when absent (no parsing network is shipped). `generate` also
  takes the landmark-region label map `jaxtalk.faces` makes (`faces.geometry.parsing_logits` turns it into
  logits), and passes it only to weights trained with a parsing input (`models.uses_parsing`: the shipped
  synthetic weights were trained with zeros there, so they get zeros).
* Face alignment (dlib landmarks + FFHQ crop before pSp) is not done: pass a face-centred square crop. The
  identity is resized (bilinear) to Style-A's `in_size` for the content encoder, to `motion_size` (else
  `in_size`) for the motion generator and to `psp.input_size` for pSp.

Art style: a W+ code (n_latent, D) (or a Z+ code with `inference.style_space = zplus`, mapped by `zplus2wplus`),
or an index into the model's style bank of Z+ codes (the original's `exstyle_code.npy`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image
from tqdm.auto import tqdm

from jaxtalk import config as config_lib
from jaxtalk import parallel
from jaxtalk.backbones.clip_tokenizer import CLIPTokenizer
from jaxtalk.compile_cache import CompileCache, compiled, mesh_key
from jaxtalk.data import media
from jaxtalk.data.atomic import atomic_path
from jaxtalk.data.media import write_outputs
from jaxtalk.style2talker import audio2exp as a2e
from jaxtalk.style2talker.config import CROP_DIM, POSE_DIM, Style2TalkerConfig
from jaxtalk.style2talker.models import Style2TalkerModels, exstyle_from_bank
from jaxtalk.style2talker.motion_generator import coefficient_windows
from jaxtalk.style2talker.style_a import style_code
from jaxtalk.style2talker.style_e import expression_from_audio
from jaxtalk.style2talker.vtoonify import PARSING_CHANNELS, VToonify

EXP_DIM = a2e.EXP_DIM


@dataclasses.dataclass(frozen=True)
class Style2TalkerInputs:
    """One video to generate (see the module docstring for the optional inputs)."""

    image: np.ndarray  # uint8 (H, W, 3) identity
    audio: np.ndarray  # float32 (S,) 16 kHz mono speech
    emotion: str  # emotion description, e.g. "She is happy, pulling up the lip corners."
    style: np.ndarray | int | None = None  # art style code (n_latent, D), a style-bank index, or None (config)
    identity_expression: np.ndarray | None = None  # (64,)
    pose: np.ndarray | None = None  # (F', 6) or (6,)
    crop: np.ndarray | None = None  # (3,) or (F', 3)
    parsing: np.ndarray | None = None  # (in_size, in_size, 19) logits


@dataclasses.dataclass
class Style2TalkerResult:
    """One generated video (a pipeline call returns one per input)."""

    frames: np.ndarray  # uint8 (F, out_size, out_size, 3)
    audio: np.ndarray  # float32, the F / fps seconds the frames cover
    fps: float
    expression: np.ndarray  # (F, 64) Style-E output
    coefficients: np.ndarray  # (F, 73) exp + angles + trans + crop
    text_feature: np.ndarray  # (text_dim,) CLIP feature of the emotion text
    style: np.ndarray  # (n_latent, D) the W+ code Style-A was driven with
    config: Style2TalkerConfig  # the resolved config (seed included)


# ------------------------------------------------------------------------------------------------ host helpers


def to_model_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (1, size, size, 3) in [-1, 1], bilinear resize (torchvision's Resize + Normalize
    with mean = std = 0.5)."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return (np.asarray(img, np.float32) / 127.5 - 1.0)[None]


def per_frame(values: np.ndarray | None, num_frames: int, dim: int, default: Sequence[float], what: str) -> np.ndarray:
    """(F, dim) float32 from a per-frame array (F' >= F rows, cut to F), one row held for every frame, or the
    default row."""
    if values is None:
        return np.broadcast_to(np.asarray(default, np.float32), (num_frames, dim)).copy()
    values = np.asarray(values, np.float32)
    if values.ndim == 1 and values.shape == (dim,):
        return np.broadcast_to(values, (num_frames, dim)).copy()
    if values.ndim != 2 or values.shape[1] != dim:
        raise ValueError(f"{what} must be ({dim},) for the whole clip or (frames, {dim}) per frame, got "
                         f"{values.shape}")
    if values.shape[0] < num_frames:
        raise ValueError(f"{what} has {values.shape[0]} frames but the audio gives {num_frames} video frames; "
                         f"give at least {num_frames} rows, one ({dim},) row, or none")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or inf")
    return np.ascontiguousarray(values[:num_frames])


def check_emotion(emotion: Any) -> None:
    if not isinstance(emotion, str) or not emotion.strip():
        raise ValueError("emotion text is empty; describe the emotion, e.g. 'She is happy, pulling up the lip "
                         "corners.'")


def tokenize_emotion(tokenizer: CLIPTokenizer, emotion: str) -> np.ndarray:
    """CLIP token ids (1, context) of the emotion text; empty or over-long text is an error (as `clip.tokenize`)."""
    check_emotion(emotion)
    return tokenizer([emotion], truncate=False)


def num_frames(audio: np.ndarray, fps: float) -> tuple[int, int]:
    """(video frames, audio samples they cover) for 16 kHz audio at `fps`, as SadTalker's `parse_audio_length`."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0 or not np.all(np.isfinite(audio)):
        raise ValueError(f"audio must be a non-empty finite mono float array (samples,), got shape {audio.shape}")
    length, frames = a2e.num_video_frames(audio.shape[0], a2e.SAMPLE_RATE, fps)
    if frames < 1 or audio.shape[0] <= a2e.N_FFT // 2:
        raise ValueError(f"audio has {audio.shape[0]} samples ({audio.shape[0] / a2e.SAMPLE_RATE:.3f} s); need at "
                         f"least one video frame ({a2e.SAMPLE_RATE / fps:.0f} samples at {fps} fps)")
    return frames, length


def validate_inputs(cfg: Style2TalkerConfig, inputs: Style2TalkerInputs, tokenizer: CLIPTokenizer) -> None:
    """Every check that needs no model (the style-bank index is checked by the pipeline)."""
    image = np.asarray(inputs.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 2:
        raise ValueError(f"identity image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    tokenize_emotion(tokenizer, inputs.emotion)
    frames, _ = num_frames(inputs.audio, cfg.inference.fps)
    if inputs.style is not None and not isinstance(inputs.style, (int, np.integer)):
        a = cfg.style_a
        code = np.asarray(inputs.style, np.float32)
        code = code[0] if code.ndim == 3 and code.shape[0] == 1 else code
        if code.shape != (a.n_latent, a.style_dim) or not np.all(np.isfinite(code)):
            raise ValueError(f"art style code must be finite ({a.n_latent}, {a.style_dim}), got {code.shape}")
    elif inputs.style is not None and int(inputs.style) < 0:
        raise ValueError(f"style index must be >= 0, got {inputs.style}")
    per_frame(inputs.identity_expression, 1, EXP_DIM, np.zeros(EXP_DIM), "identity_expression")
    per_frame(inputs.pose, frames, POSE_DIM, np.zeros(POSE_DIM), "pose")
    per_frame(inputs.crop, frames, CROP_DIM, cfg.inference.crop, "crop")
    if inputs.parsing is not None:
        a = cfg.style_a
        parsing = np.asarray(inputs.parsing, np.float32)
        if parsing.shape != (a.in_size, a.in_size, PARSING_CHANNELS) or not np.all(np.isfinite(parsing)):
            raise ValueError(f"parsing must be finite BiSeNet logits ({a.in_size}, {a.in_size}, {PARSING_CHANNELS}) "
                             f"at Style-A's input size, got {parsing.shape}")


def coefficient_sequence(expression: np.ndarray, pose: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """(F, 73) = [exp 64, angles 3, trans 3, crop 3] per frame (PIRender's 73-d driving layout)."""
    return np.concatenate([np.asarray(expression, np.float32), np.asarray(pose, np.float32)[:, :3],
                           np.asarray(pose, np.float32)[:, 3:], np.asarray(crop, np.float32)], axis=1)


def driving_windows(coefficients: np.ndarray, radius: int = 13) -> np.ndarray:
    """(F, 2*radius+1, 73) windows centred on every frame, indices clamped at the clip ends (`transform_semantic`)."""
    return np.asarray(coefficient_windows(jnp.asarray(coefficients, jnp.float32), radius))


def batch_plan(num_frames: int, batch_size: int) -> np.ndarray:
    """(num_batches, batch_size) frame indices; the last batch repeats the last frame (one compiled shape)."""
    n = -(-num_frames // batch_size) * batch_size
    return np.minimum(np.arange(n), num_frames - 1).reshape(-1, batch_size)


def load_exstyle(path: str | os.PathLike, n_latent: int, style_dim: int) -> np.ndarray:
    """An art style code file: `.npy` (or a one-array `.npz`) of shape (n_latent, D) or (1, n_latent, D)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise media.MediaError(f"{path}: art style file not found; pass a .npy W+ code ({n_latent}, {style_dim}) "
                               "or a style-bank index")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if len(data.files) != 1:
                    raise media.MediaError(f"{path}: .npz style file must hold one array, has {data.files}")
                data = data[data.files[0]]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise media.MediaError(f"{path}: not a readable numpy style code ({e}); save it with np.save") from None
    code = np.asarray(data, np.float32)
    if code.ndim == 3 and code.shape[0] == 1:
        code = code[0]
    if code.shape != (n_latent, style_dim) or not np.all(np.isfinite(code)):
        raise media.MediaError(f"{path}: art style code must be finite ({n_latent}, {style_dim}) or "
                               f"(1, {n_latent}, {style_dim}), got {code.shape}")
    return code


# ------------------------------------------------------------------------------------------------ compiled stages


# The stages take the flax modules as their first arguments; the pipeline compiles each one as a closure over its
# modules through `compile_cache.compiled` (the same compile style and bounded cache as the SVP pipeline).


def _text_stage(module, params, ids):
    return module.apply({"params": params}, ids)[1][0]


def _expression_stage(a2e_module, a2e_variables, style_e, style_e_params, mels, ref, blink, text, key, *, sampling):
    return expression_from_audio(style_e, style_e_params, a2e_module, a2e_variables, mels, ref, text, key,
                                 blink=blink, sampling=sampling)


def encode_identity(module: VToonify, x: jax.Array, style: jax.Array, d_s: jax.Array, parsing: jax.Array):
    """VToonify's content encoder on the identity: (32 px feature, RGB skip, fusion features)."""
    resstyles, _ = module.style_codes(style)
    return module.encode(module.content_input(x, parsing), resstyles, d_s)


def _identity_stage(psp, psp_variables, style_a, style_a_params, psp_image, exstyle, x, parsing, d_s, *,
                    style_is_zplus, color_transfer):
    to_wplus = lambda z: style_a.apply({"params": style_a_params}, z, method="zplus2wplus")
    identity = to_wplus(psp.apply(psp_variables, psp_image))
    ex = to_wplus(exstyle[None]) if style_is_zplus else exstyle[None]
    style = style_code(ex, identity, color_transfer)
    encoded = style_a.apply({"params": style_a_params}, x, style, d_s, parsing, method=encode_identity)
    return style[0], encoded


def render_batch(style_a, params, encoded, style, image, motion_image, driven, d_s):
    """Style-A frames for a batch of driving windows, with the content encoder replaced by its cached output
    (traceable; the pipeline compiles it once per shape). `image`: the identity at in_size; `motion_image`: at
    the motion generator's size (the same array unless `style_a.motion_size` is set)."""
    b = driven.shape[0]
    batch = lambda a: jnp.broadcast_to(a, (b, *a.shape[1:]))
    cached = jax.tree.map(batch, encoded)
    hits = []

    def reuse_encoder(next_fun, args, kwargs, context):
        if context.method_name == "encode" and isinstance(context.module, VToonify):
            hits.append(True)
            return cached
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(reuse_encoder):
        out = style_a.apply({"params": params}, batch(image), batch(style[None]), batch(motion_image), driven, d_s)
    if not hits:
        raise RuntimeError("Style-A no longer calls VToonify.encode; the pipeline's cached content encoder "
                           "must be updated")
    return jnp.round((jnp.clip(out.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


# ------------------------------------------------------------------------------------------------ pipeline


# Compiled stages, shared by every pipeline in the process: keyed by (stage, the modules it closes over, mesh,
# flags, argument shapes). They take params as arguments, so two bundles of equal modules share them.
_COMPILED = CompileCache("style2talker.pipeline.stages", maxsize=32)


class Style2TalkerPipeline:
    """Runs the stages above for each input; compiled stages are shared by every pipeline built on equal modules
    (`compile_cache.compiled`, keyed on the module configs and shapes), so a second call with the same clip length
    and batch size compiles nothing.

    `mesh` (a `jaxtalk.parallel.make_mesh` mesh; default: the one the bundle was placed on, or none): the params
    are replicated on it (`Style2TalkerModels.on_mesh`) and Style-A frame batches are split over its batch axes
    (data, fsdp) with the cached identity features replicated; `inference.batch_size` must be a multiple of
    data x fsdp. The text / expression / identity stages are small and run replicated.
    """

    def __init__(self, models: Style2TalkerModels, *, progress: bool = True, mesh: Mesh | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None):
        """`progress`: a tqdm bar over frame batches. `on_progress(stage, done, total)`: a listener (e.g. a web
        page's progress bar), told of each stage ("prepare" 0..3) and each Style-A frame batch ("render")."""
        mesh = models.mesh if mesh is None else mesh
        if mesh is not None:
            split = mesh.shape["data"] * mesh.shape["fsdp"]
            if models.config.inference.batch_size % split:
                raise ValueError(f"inference.batch_size={models.config.inference.batch_size} must be a multiple of "
                                 f"the mesh's data x fsdp = {split} devices the frame batches are split over")
            if mesh is not models.mesh:
                models = models.on_mesh(mesh)
        self.models = models
        self.cfg = models.config
        self.progress = progress
        self.on_progress = on_progress
        self.tokenizer = CLIPTokenizer(context_length=self.cfg.clip.max_length)
        self.mesh = mesh

    # -- stages --------------------------------------------------------------------------------------------

    def _compile(self, stage: str, modules: Sequence[str], fn: Callable, args: tuple, *,
                 in_shardings: Any = None, **flags: Any) -> Any:
        """`fn(*args)` (a closure over the named modules) compiled once per (stage, modules, mesh, flags, arg
        shapes); with `in_shardings` under this pipeline's mesh."""
        key = ("style2talker", stage, tuple(self.models.modules[m] for m in modules), mesh_key(self.mesh),
               tuple(sorted(flags.items())))
        return compiled(_COMPILED, key, fn, args, in_shardings=in_shardings,
                        mesh=self.mesh if in_shardings is not None else None)

    def tokenize(self, emotion: str) -> np.ndarray:
        return tokenize_emotion(self.tokenizer, emotion)

    def text_feature(self, emotion: str) -> np.ndarray:
        """CLIP `encode_text` feature (text_dim,) of the emotion description."""
        module = self.models.modules["clip_text"]
        args = (self.models.params["clip_text"], self.tokenize(emotion))
        program = self._compile("text", ["clip_text"], lambda p, ids: _text_stage(module, p, ids), args)
        return np.asarray(program(*args))

    def num_frames(self, audio: np.ndarray) -> tuple[int, int]:
        """(video frames, audio samples they cover) at `inference.fps`, as SadTalker cuts the audio."""
        return num_frames(audio, self.cfg.inference.fps)

    def expression(self, audio: np.ndarray, text_feature: np.ndarray, identity_expression: np.ndarray | None,
                   seed: int) -> np.ndarray:
        """Style-E expression (F, 64) for the audio, conditioned on the emotion feature and identity expression."""
        m, inf = self.models, self.cfg.inference
        frames, _ = self.num_frames(audio)
        mels = a2e.audio_to_mel_windows(np.asarray(audio, np.float32), a2e.SAMPLE_RATE, inf.fps)
        ref = per_frame(identity_expression, 1, EXP_DIM, np.zeros(EXP_DIM), "identity_expression")[0]
        blink_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB1]))
        blink = a2e.blink_ratio(frames, blink_rng) if inf.blink == "random" else np.zeros(frames, np.float32)
        key = jax.random.fold_in(jax.random.key(seed), 1)
        a2e_module, style_e, sampling = m.modules["audio2exp"], m.modules["style_e"], self.cfg.sampler
        args = (m.params["audio2exp"], m.params["style_e"], mels, ref, blink, np.asarray(text_feature, np.float32), key)
        program = self._compile(
            "expression", ["audio2exp", "style_e"],
            lambda av, sp, *rest: _expression_stage(a2e_module, av, style_e, sp, *rest, sampling=sampling), args,
            sampling=sampling)
        return np.asarray(program(*args), np.float32)

    def resolve_style(self, style: np.ndarray | int | None) -> tuple[np.ndarray, bool]:
        """(code, is_zplus) for an art style given as a code, a bank index or None (`inference.style_index`)."""
        a, inf = self.cfg.style_a, self.cfg.inference
        if style is None or isinstance(style, (int, np.integer)):
            index = inf.style_index if style is None else int(style)
            return exstyle_from_bank(self.models, index), True
        code = np.asarray(style, np.float32)
        code = code[0] if code.ndim == 3 and code.shape[0] == 1 else code
        if code.shape != (a.n_latent, a.style_dim) or not np.all(np.isfinite(code)):
            raise ValueError(f"art style code must be finite ({a.n_latent}, {a.style_dim}), got {code.shape}")
        return code, inf.style_space == "zplus"

    def identity(self, image: np.ndarray, exstyle: np.ndarray, style_is_zplus: bool,
                 parsing: np.ndarray | None) -> tuple[np.ndarray, Any, tuple[np.ndarray, np.ndarray]]:
        """(W+ code Style-A is driven with, cached content-encoder outputs, identity image at in_size and at the
        motion generator's size)."""
        m, a, inf = self.models, self.cfg.style_a, self.cfg.inference
        x = to_model_image(image, a.in_size)
        if parsing is None:
            parsing = np.zeros((1, a.in_size, a.in_size, PARSING_CHANNELS), np.float32)
        else:
            parsing = np.asarray(parsing, np.float32)[None]
        psp, style_a, color_transfer = m.modules["psp"], m.modules["style_a"], inf.color_transfer
        args = (m.params["psp"], m.params["style_a"], to_model_image(image, self.cfg.psp.input_size),
                np.asarray(exstyle, np.float32), x, parsing, np.float32(inf.style_degree))
        program = self._compile(
            "identity", ["psp", "style_a"],
            lambda pv, sp, *rest: _identity_stage(psp, pv, style_a, sp, *rest, style_is_zplus=style_is_zplus,
                                                  color_transfer=color_transfer),
            args, style_is_zplus=bool(style_is_zplus), color_transfer=color_transfer)
        style, encoded = program(*args)
        motion = x if a.motion_input_size == a.in_size else to_model_image(image, a.motion_input_size)
        return np.asarray(style), encoded, (x, motion)

    def render(self, windows: np.ndarray, style: np.ndarray, encoded: Any, images: tuple[np.ndarray, np.ndarray]
               ) -> np.ndarray:
        """uint8 frames (F, out_size, out_size, 3) for driving windows (F, 27, 73), in fixed-size batches;
        `images`: the identity at in_size and at the motion generator's size (`identity`)."""
        image, motion_image = images
        m, inf = self.models, self.cfg.inference
        plan = batch_plan(windows.shape[0], inf.batch_size)
        d_s = np.float32(inf.style_degree)
        params = m.params["style_a"]
        put = lambda x: x
        in_shardings = None
        if self.mesh is not None:
            replicated = NamedSharding(self.mesh, P())
            params, encoded, style, image, motion_image, d_s = jax.device_put(
                (params, encoded, style, image, motion_image, d_s), replicated)
            sharding = parallel.batch_sharding(self.mesh, windows.ndim)
            put = lambda x: jax.device_put(x, sharding)
            in_shardings = (replicated, replicated, replicated, replicated, replicated, sharding, replicated)
        style_a = m.modules["style_a"]
        program = self._compile(
            "render", ["style_a"], lambda *a: render_batch(style_a, *a),
            (params, encoded, style, image, motion_image, windows[plan[0]], d_s), in_shardings=in_shardings)
        frames = np.empty((windows.shape[0], self.cfg.style_a.out_size, self.cfg.style_a.out_size, 3), np.uint8)
        for k, idx in enumerate(tqdm(plan, desc="Style-A frames", unit="batch", disable=not self.progress)):
            out = program(params, encoded, style, image, motion_image, put(windows[idx]), d_s)
            start = k * inf.batch_size
            keep = min(inf.batch_size, windows.shape[0] - start)
            frames[start:start + keep] = np.asarray(out)[:keep]
            self._report("render", k + 1, len(plan))
        return frames

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, done, total)

    # -- all together ----------------------------------------------------------------------------------------

    def check(self, inputs: Style2TalkerInputs) -> None:
        """Validate every input before any compute (one clear error each)."""
        validate_inputs(self.cfg, inputs, self.tokenizer)
        self.resolve_style(inputs.style)

    def __call__(self, inputs: Style2TalkerInputs | Sequence[Style2TalkerInputs], *, seed: int | None = None
                 ) -> Style2TalkerResult | list[Style2TalkerResult]:
        """One `Style2TalkerInputs` -> one `Style2TalkerResult`; a sequence -> a list of results, in order (each
        input checked before any is generated). The same convention as `SVPPipeline`. Input i samples with seed
        + i (seed defaults to `inference.seed`), so the first input of a batch samples as it would alone."""
        items, single = parallel.one_or_many(inputs, Style2TalkerInputs, "Style2TalkerPipeline", "inputs")
        seed = self.cfg.inference.seed if seed is None else int(seed)
        for item in items:
            self.check(item)
        results = [self._generate_one(item, seed + i) for i, item in enumerate(items)]
        return results[0] if single else results

    def _generate_one(self, inputs: Style2TalkerInputs, seed: int) -> Style2TalkerResult:
        inf = self.cfg.inference
        frames, samples = self.num_frames(inputs.audio)
        self._report("prepare", 0, 3)
        text = self.text_feature(inputs.emotion)
        self._report("prepare", 1, 3)
        expression = self.expression(inputs.audio, text, inputs.identity_expression, seed)
        self._report("prepare", 2, 3)
        coefficients = coefficient_sequence(
            expression, per_frame(inputs.pose, frames, POSE_DIM, np.zeros(POSE_DIM), "pose"),
            per_frame(inputs.crop, frames, CROP_DIM, inf.crop, "crop"))
        exstyle, is_zplus = self.resolve_style(inputs.style)
        style, encoded, images = self.identity(inputs.image, exstyle, is_zplus, inputs.parsing)
        self._report("prepare", 3, 3)
        video = self.render(driving_windows(coefficients, inf.radius), style, encoded, images)
        audio = np.asarray(inputs.audio, np.float32)
        audio = audio[:samples] if audio.shape[0] >= samples else np.pad(audio, (0, samples - audio.shape[0]))
        resolved = dataclasses.replace(self.cfg, inference=dataclasses.replace(inf, seed=seed))
        return Style2TalkerResult(video, audio, inf.fps, expression, coefficients, text, style, resolved)


# ------------------------------------------------------------------------------------------------ files


def _load_array(path: str | os.PathLike | None, what: str) -> np.ndarray | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise media.MediaError(f"{path}: {what} file not found; check the path")
    try:
        return np.asarray(np.load(path, allow_pickle=False), np.float32)
    except (OSError, ValueError) as e:
        raise media.MediaError(f"{path}: not a readable .npy {what} array ({e})") from None


def _config_source(config: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> Any:
    """The config to read: the given one; else a checkpoint's `config.yaml`, the paper preset for a checkpoint
    without one, or the tiny preset for random weights."""
    if config is not None:
        return config
    if checkpoint is None:
        return "style2talker_tiny"
    from jaxtalk.style2talker.models import CONFIG_FILE

    own = Path(checkpoint) / CONFIG_FILE
    return own if own.is_file() else "style2talker_paper"


def resolve_models(checkpoint: str | os.PathLike | None = None, *, cfg: Style2TalkerConfig | None = None,
                   config: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                   seed: int | None = None) -> Style2TalkerModels:
    """The weights `generate` uses for these arguments: the checkpoint folder's; without a checkpoint and config
    the weights shipped in the package (when this build has them); with only a config, random init from `seed`
    (else the config's seed). The web app loads its default weights through here."""
    from jaxtalk.style2talker.loading import load_models, random_models

    shipped = None
    if checkpoint is None and config is None and cfg is None:
        from jaxtalk.style2talker.shipped import shipped_dir

        shipped = checkpoint = shipped_dir()
    if cfg is None:
        cfg = config_lib.load(_config_source(config, checkpoint), overrides=overrides, cls=Style2TalkerConfig)
    if checkpoint is None:
        return random_models(cfg, seed=cfg.inference.seed if seed is None else seed)
    models = load_models(checkpoint, cfg)
    if shipped is not None:
        models.source = f"shipped weights trained on synthetic data ({shipped})"
    return models


def with_overrides(models: Style2TalkerModels, overrides: Sequence[str]) -> Style2TalkerModels:
    """`models` with dotted `overrides` applied to its config (inference settings such as `inference.style_degree`
    or `inference.seed`); the weights are shared, not copied."""
    if not overrides:
        return models
    data = config_lib.to_dict(models.config)
    for o in overrides:
        data = config_lib.apply_override(data, o)
    return dataclasses.replace(models, config=config_lib.from_dict(Style2TalkerConfig, data))


def generate(image: str | os.PathLike | np.ndarray, audio: str | os.PathLike | np.ndarray | None, emotion: str,
             out: str | os.PathLike, *, style: str | os.PathLike | int | np.ndarray | None = None,
             pose: str | os.PathLike | np.ndarray | None = None,
             identity_expression: str | os.PathLike | np.ndarray | None = None,
             driving: str | os.PathLike | np.ndarray | None = None, face: str = "auto",
             face_index: int | None = None, min_face_score: float = 0.5, debug_dir: str | os.PathLike | None = None,
             paste_back: bool = False, parsing: np.ndarray | None = None,
             text_encoder: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
             config: str | os.PathLike | None = None, overrides: Sequence[str] = (), seed: int | None = None,
             models: Style2TalkerModels | None = None, progress: bool = True,
             on_progress: Callable[[str, int, int], None] | None = None,
             on_note: Callable[[str], None] | None = None, write: bool | None = None) -> dict[str, Any]:
    """Generate one video from files (or arrays) and write `out` (.mp4 with the speech) and `out`.yaml: what
    `jaxtalk generate --system style2talker`, the demo and the web page run.

    The same call convention as `jaxtalk.svp.pipeline.generate`: inputs are all read and checked before any
    model is built, and outputs are written atomically, so a bad input raises one error (`MediaError` /
    `ValueError` / `ConfigError`) and leaves no file.

    * `image`: a photo (aligned the FFHQ way for pSp by `jaxtalk.faces`, head pose from it, unless `face="off"`;
      `face="auto"` falls back to the photo as given when no face is found), a folder written by `jaxtalk prepare
      --system style2talker`, or a uint8 array. `audio`: speech file or 16 kHz array (None: the `driving` video's
      or the prepared folder's sound). `driving`: a video whose head pose drives the clip.
    * `style`: an art style code file / array, a style-bank index, or the name of one of the bank's styles (e.g.
      "cartoon").
    * weights: `models` (an already loaded bundle; then `overrides` adjust its inference settings), else
      `checkpoint` / `config` through `resolve_models`; with neither, the weights shipped in the package; with
      only a `config`, random weights (the result says so).
    * `parsing`: the identity's face-parsing map, an (H, W) label map over `image` (e.g. the landmark-region map
      of `jaxtalk.faces.prepare_style2talker`, which a raw photo or prepared folder supplies) or BiSeNet logits
      (in_size, in_size, 19); used when the weights were trained with one (see the module docstring).
    * `text_encoder`: a CLIP text tower to use instead of the checkpoint's (a folder in Hugging Face layout, a
      weights file, or a model id in the local Hugging Face cache; `loading.with_text_encoder`).
    * `paste_back`, `write`, `on_progress`, `on_note`: as in SVP's `generate`.

    Returns {'video', 'config' (when written), 'result', 'frames' (as written), 'models', 'summary'}.
    """
    from jaxtalk.faces import inputs as face_inputs

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: the output must be an .mp4 path")
    check_emotion(emotion)
    image, audio, pose, identity_expression, paste, found_parsing = face_inputs.style2talker_inputs(
        image, audio, pose=pose, identity_expression=identity_expression, driving=driving, face=face,
        face_index=face_index, min_face_score=min_face_score, debug_dir=debug_dir, on_note=on_note)
    parsing = parsing if parsing is not None else found_parsing
    face_inputs.check_paste_back(paste_back, paste)
    img = np.asarray(image) if isinstance(image, np.ndarray) else media.load_image(image)
    wav = np.asarray(audio, np.float32) if isinstance(audio, np.ndarray) else media.load_audio(audio)
    pose_arr = pose if isinstance(pose, np.ndarray) or pose is None else _load_array(pose, "pose")
    exp_arr = (identity_expression if isinstance(identity_expression, np.ndarray) or identity_expression is None
               else _load_array(identity_expression, "identity expression"))
    shipped = None
    if models is None and checkpoint is None and config is None:
        from jaxtalk.style2talker.shipped import shipped_dir

        shipped = checkpoint = shipped_dir()
    if models is not None:
        models = with_overrides(models, overrides)
        cfg = models.config
    else:
        cfg = config_lib.load(_config_source(config, checkpoint), overrides=overrides, cls=Style2TalkerConfig)
    style_name = None
    if isinstance(style, str) and not Path(style).exists():
        style_name, style = style, None  # a style-bank name, checked once the models are loaded
    elif isinstance(style, (str, os.PathLike)):
        style = load_exstyle(style, cfg.style_a.n_latent, cfg.style_a.style_dim)
    inputs = Style2TalkerInputs(img, wav, emotion, style, exp_arr, pose_arr)
    validate_inputs(cfg, inputs, CLIPTokenizer(context_length=cfg.clip.max_length))
    if parsing is not None and np.asarray(parsing).ndim == 2:  # a label map: checked before any model work
        from jaxtalk.faces.geometry import parsing_logits

        parsing_logits(np.asarray(parsing), 1)
    if models is None and checkpoint is not None and (style is None or isinstance(style, (int, np.integer))):
        from jaxtalk.style2talker.models import STYLE_BANK_FILE

        if not (Path(checkpoint) / STYLE_BANK_FILE).is_file():
            raise ValueError(f"{checkpoint}: has no style bank ({STYLE_BANK_FILE}); pass an art style code file "
                             "(a .npy W+ code) as the style")
    if models is None:
        models = resolve_models(checkpoint, cfg=cfg, seed=seed)
        if shipped is not None:
            models.source = f"shipped weights trained on synthetic data ({shipped})"
    if style_name is not None:
        if style_name not in models.style_names:
            raise ValueError(f"--style {style_name!r}: no such file and no art style of that name; this model's "
                             f"styles are {', '.join(models.style_names)} (or pass an index or a .npy W+ code)")
        inputs = dataclasses.replace(inputs, style=models.style_names.index(style_name))
    if text_encoder is not None:
        from jaxtalk.style2talker.loading import with_text_encoder

        models = with_text_encoder(models, text_encoder)
    if parsing is not None and models.uses_parsing:
        logits = np.asarray(parsing)
        if logits.ndim == 2:
            from jaxtalk.faces.geometry import parsing_logits

            logits = parsing_logits(logits, models.config.style_a.in_size)
        inputs = dataclasses.replace(inputs, parsing=logits)
        validate_inputs(models.config, inputs, CLIPTokenizer(context_length=models.config.clip.max_length))
    write = jax.process_index() == 0 if write is None else write
    pipe = Style2TalkerPipeline(models, progress=progress and write, on_progress=on_progress)
    result = pipe(inputs, seed=seed)
    frames = face_inputs.paste_frames(result.frames, paste) if paste_back else result.frames
    paths: dict[str, Any] = write_outputs(out, frames, result.audio, result.fps, result.config) if write else {}
    summary = media.result_summary("style2talker", out, frames, result.fps, models.source)
    return {**paths, "result": result, "frames": frames, "models": models, "summary": summary}


def parse_style(value: str | None) -> str | int | None:
    """A `--style` argument: a style-bank index (digits) or a code file path."""
    if value is None:
        return None
    return int(value) if value.isdigit() and not Path(value).exists() else value


def write_strip(path: str | os.PathLike, frames: np.ndarray, caption: str, count: int = 8, scale: int = 2) -> Path:
    """A PNG of `count` evenly spaced frames side by side (nearest-upscaled by `scale`) under a caption."""
    from PIL import ImageDraw, ImageFont

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    row = np.concatenate([frames[i] for i in picks], axis=1)
    row = np.asarray(Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST))
    bar = Image.new("RGB", (row.shape[1], 16), (255, 255, 255))
    ImageDraw.Draw(bar).text((4, 2), caption, fill=(0, 0, 0), font=ImageFont.load_default())
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate([np.asarray(bar), row], axis=0)).save(tmp, format="PNG")
    return path


def write_demo(out_dir: str | os.PathLike, *, seed: int = 0, config: str | os.PathLike | None = None,
               checkpoint: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Style2Talker on a HELD-OUT synthetic identity (the evaluation split's first identity, never trained on)
    speaking a held-out utterance, under two emotion texts in held-out phrasings (happy, sad) and once more with
    the first text and the "cartoon" art style (the bank's style 1 when it has no such name). Weights: the shipped
    ones unless `checkpoint` or `config` is given. The identity frame, speech, head-pose track and the identity's
    expression are written beside the videos, so the returned `command` lines reproduce them; a PNG strip of
    frames is written beside every mp4."""
    import soundfile

    from jaxtalk.data import synthetic
    from jaxtalk.style2talker.emotion_phrases import descriptions
    from jaxtalk.training.style2talker_data import SplitConfig

    out_dir = Path(out_dir)
    split = SplitConfig.eval()
    identity = synthetic.make_identity(split.identity_seed, 0)
    clip = synthetic.generate_clip(identity, "neutral", 1, seed=split.utterance_seed + 17, num_frames=75,
                                   fps=25.0, resolution=split.resolution)
    files = {"identity": out_dir / "style2talker_identity.png", "audio": out_dir / "style2talker_audio.wav",
             "pose": out_dir / "style2talker_pose.npy", "identity_exp": out_dir / "style2talker_identity_exp.npy"}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(files["identity"]) as tmp:
        Image.fromarray(clip.frames[0]).save(tmp, format="PNG")
    with atomic_path(files["audio"]) as tmp:
        soundfile.write(tmp, clip.audio, clip.sample_rate, format="WAV")
    for name, array in (("pose", clip.pose), ("identity_exp", clip.expression[0])):
        with atomic_path(files[name]) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(array, np.float32))
    texts = {"happy": descriptions("happy", 3, identity.gender, "heldout")[0],
             "sad": descriptions("sad", 3, identity.gender, "heldout")[1]}
    runs = [("happy", texts["happy"], None), ("sad", texts["sad"], None), ("happy_cartoon", texts["happy"], "cartoon")]
    outputs: dict[str, Any] = {f"style2talker_{k}": v for k, v in files.items()}
    commands, models, result = [], None, None
    for name, text, style in runs:
        out = out_dir / f"style2talker_{name}.mp4"
        if style is not None and models is not None and style not in models.style_names:
            style = "1"
        commands.append(
            f"jaxtalk generate --system style2talker --image {files['identity']} --audio {files['audio']} "
            f"--emotion \"{text}\" --pose {files['pose']} --identity-exp {files['identity_exp']} --seed {seed} --face off "
            f"--out {out}" + (f" --style {style}" if style else "") + (f" --checkpoint {checkpoint}" if checkpoint
                                                                          else "") + (f" --config {config}" if config else ""))
        got = generate(files["identity"], files["audio"], text, out, style=parse_style(style), checkpoint=checkpoint,
                       config=config, seed=seed, pose=files["pose"], identity_expression=files["identity_exp"],
                       face="off", models=models, progress=progress)
        models, result = got["models"], got["result"]
        outputs[f"style2talker_{name}_video"] = got["video"]
        outputs[f"style2talker_{name}_strip"] = write_strip(out.with_suffix(".png"), result.frames,
                                                            f"{text} | style: {style or 'photo'}")
    return {**outputs, "command": "\n".join(commands), "models": models, "result": result}


# One name per role, the same in both products: `Pipeline(models, *, progress, mesh, on_progress)` called on one
# `Inputs` (or a sequence) with a seed, returning a `Result` (or a list); `generate()` from files.
Pipeline = Style2TalkerPipeline
Inputs = Style2TalkerInputs
Result = Style2TalkerResult
