"""Training the whole Style2Talker stack from nothing on synthetic clips of the training identities.

    python train/style2talker.py --config train_style2talker_synthetic --workdir outputs/train/s2t

Stages (each a `Task` run by the generic loop: sharded, orbax checkpoints in `<workdir>/<stage>/checkpoints`,
resumable — rerunning the command continues where it stopped and skips finished stages):

1. `text` (`EmotionTextTask`): a CLIP-architecture text tower (small) and an expression-window encoder trained
   CLIP-style: InfoNCE between the projected text feature and the window feature, every pair of the batch with
   the same (emotion, intensity) condition counted as a positive. Texts are the training sentence frames of
   `emotion_phrases` (the held-out frames are never seen).
2. `audio2exp` (`Audio2ExpTask`): SadTalker's audio2exp (mel windows + the identity's expression `ref` + blink
   ratio -> 64-d expression) regressed on the ground-truth expression (MSE). Its BatchNorms stay at their
   identity statistics (eval mode: an affine layer each), so inference equals training.
3. `style_e` (`SyntheticStyleETask`): the Style-E x0 diffusion (`jaxtalk.training.style_e` loss) on 32-frame
   windows, conditioned on the trained audio2exp's prediction for the same window (what inference feeds it) and
   the trained text tower's feature of a random training description of the clip's condition.
4. `style_a` (`jaxtalk.training.style_a.StyleATask`).
5. `style_a_expression` (when `style_a_expression.steps` > 0): the same task started from the `style_a` stage's
   Style-A, pSp and art-style bank (`init_run`), a fresh discriminator and expression probe, and the loss with
   `expression = style_a_expression_weight` — the fine-tune that gave the shipped Style-A its readable emotion.
   The export takes its Style-A, pSp and bank.

Then `<workdir>/export/` holds the weights as a bundle (`jaxtalk.interop.bundle`, written by
`style2talker.loading.save_models`: orbax params + config.yaml + the art-style bank) whose `manifest.json` also
records the command, commit, seeds, split, steps, wall times and final losses; `<workdir>/curves/*.png` the loss
curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import config as config_lib
from jaxtalk import parallel
from jaxtalk.backbones.clip_text import CLIPTextConfig, CLIPTextEncoder
from jaxtalk.backbones.clip_tokenizer import CLIPTokenizer
from jaxtalk.config import MeshConfig
from jaxtalk.data import facs
from jaxtalk.style2talker import art_styles, emotion_phrases
from jaxtalk.style2talker.audio2exp import EXP_DIM, SimpleWrapperV2
from jaxtalk.training import loop
from jaxtalk.training import style2talker_data as sd
from jaxtalk.training.config import LoopConfig, StyleEDataConfig, TextFeaturesConfig
from jaxtalk.training.state import OptimizerConfig
from jaxtalk.training.style2talker_config import TrainStyle2TalkerConfig, TrainStyleAConfig
from jaxtalk.training.style_a import StyleATask
from jaxtalk.training.style_e import StyleETask

log = logging.getLogger(__name__)
STAGES = ("text", "audio2exp", "style_e", "style_a", "style_a_expression")


# ------------------------------------------------------------------------------------------------ text encoder


class WindowEncoder(nn.Module):
    """Expression window (B, T, 64) -> (B, dim): per-frame MLP, mean and std over time, MLP."""

    dim: int
    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.gelu(nn.Dense(self.hidden, name="frame_0")(x))
        h = nn.Dense(self.hidden, name="frame_1")(h)
        pooled = jnp.concatenate([h.mean(axis=1), h.std(axis=1)], axis=-1)
        return nn.Dense(self.dim, name="out")(nn.gelu(nn.Dense(self.hidden, name="pool")(pooled)))


def training_texts() -> tuple[list[str], np.ndarray]:
    """(texts, condition index) the text encoder and Style-E train on: the training sentence frames of
    `emotion_phrases` plus the generator's own annotations (`facs.emotion_texts`), deduplicated, sorted."""
    pairs = dict(emotion_phrases.all_descriptions("train"))
    for c, (emotion, intensity) in enumerate(emotion_phrases.CONDITIONS):
        for gender in ("female", "male"):
            pairs.update({t: c for t in facs.emotion_texts(emotion, intensity, gender)})
    texts = sorted(pairs)
    return texts, np.asarray([pairs[t] for t in texts], np.int32)


def multi_positive_nce(a: jax.Array, b: jax.Array, labels: jax.Array, temperature: float) -> tuple[jax.Array, Any]:
    """Symmetric InfoNCE between L2-normalised rows of a and b where every pair with equal labels is a positive:
    -log(sum over positives of softmax). Returns (loss, top-1 retrieval accuracy of a -> b by label)."""
    a = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + 1e-6)
    b = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + 1e-6)
    logits = a @ b.T / temperature
    pos = labels[:, None] == labels[None, :]

    def one_side(lg):
        return jnp.mean(jax.nn.logsumexp(lg, axis=1) - jax.nn.logsumexp(jnp.where(pos, lg, -1e9), axis=1))

    acc = jnp.mean(labels[jnp.argmax(logits, axis=1)] == labels)
    return 0.5 * (one_side(logits) + one_side(logits.T)), acc


class TextBatches:
    """Text-encoder batches: per row a condition present in the split, a clip of it, an expression window of the
    clip and a training description of the condition. Rows are pure functions of (seed, batch, row), so each
    process makes only its rows of every global batch (`style2talker_data.RowBatches`)."""

    def __init__(self, arrays: dict[str, np.ndarray], ids: np.ndarray, conds: np.ndarray, batch_size: int,
                 window: int, seed: int, rows: Any = None):
        self.a, self.ids, self.window = arrays, ids, window
        self.text_of = {c: np.flatnonzero(conds == c) for c in range(len(emotion_phrases.CONDITIONS))}
        self.present = np.unique(arrays["condition"])  # conditions with clips (all 22 in the full split)
        self.clips_of = {int(c): np.flatnonzero(arrays["condition"] == c) for c in self.present}
        self.batches = sd.RowBatches(self.row, batch_size, seed, rows)

    def row(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = self.a["expression"].shape[1]
        c = int(rng.choice(self.present))
        clip = int(rng.choice(self.clips_of[c]))
        s = int(rng.integers(n - self.window + 1))
        return {"ids": self.ids[int(rng.choice(self.text_of[c]))].astype(np.int32),
                "window": self.a["expression"][clip, s:s + self.window].astype(np.float32),
                "condition": np.int32(c)}

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return self.batches(index)


@dataclasses.dataclass(frozen=True)
class EmotionTextTask(loop.Task):
    """The CLIP text tower for emotion descriptions, trained contrastively against expression windows."""

    clip: CLIPTextConfig
    split: sd.SplitConfig
    cache_dir: str
    batch_size: int = 64
    window: int = 32
    temperature: float = 0.07
    data_seed: int = 0

    name = "text"

    def init_variables(self, rng: jax.Array) -> dict:
        k1, k2 = jax.random.split(rng)
        text = CLIPTextEncoder(self.clip).init(k1, jnp.zeros((1, self.clip.max_length), jnp.int32))
        win = WindowEncoder(self.clip.projection_dim).init(k2, jnp.zeros((1, self.window, EXP_DIM)))
        return {"params": {"clip_text": text["params"], "window_encoder": win["params"]}}

    def trainable_patterns(self) -> None:
        return None

    def dataset(self) -> grain.MapDataset:
        arrays = sd.load_or_build(self.split, self.cache_dir)
        texts, conds = training_texts()
        ids = CLIPTokenizer(context_length=self.clip.max_length)(texts)
        return sd.index_dataset(TextBatches(arrays, ids, conds, self.batch_size, self.window, self.data_seed))

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        text = CLIPTextEncoder(self.clip).apply({"params": params["clip_text"]}, batch["ids"])[1]
        win = WindowEncoder(self.clip.projection_dim).apply({"params": params["window_encoder"]}, batch["window"])
        loss, acc = multi_positive_nce(text, win, batch["condition"], self.temperature)
        return loss, {"nce": loss, "text_to_window_acc": acc}


def encode_texts(clip: CLIPTextConfig, params: Any, texts: list[str]) -> np.ndarray:
    """(N, projection_dim) projected end-token features (what Style-E reads), in chunks of 64."""
    module = CLIPTextEncoder(clip)
    ids = CLIPTokenizer(context_length=clip.max_length)(texts)
    fn = jax.jit(lambda p, x: module.apply({"params": p}, x)[1])
    return np.concatenate([np.asarray(fn(params, ids[i:i + 64]), np.float32) for i in range(0, len(ids), 64)])


# ------------------------------------------------------------------------------------------------ audio2exp


def identity_batch_stats(module: nn.Module, *example: Any) -> Any:
    """BatchNorm statistics at their identity values (mean 0, var 1) for `module`."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example))["batch_stats"]
    return jax.tree_util.tree_map_with_path(
        lambda p, s: jnp.ones(s.shape, s.dtype) if getattr(p[-1], "key", "") == "var" else jnp.zeros(s.shape, s.dtype),
        shapes)


def reference_expressions(arrays: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Per clip: the identity's expression `ref` for audio2exp — frame 0 of a random clip of the same identity."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA2E]))
    ident = arrays["identity"]
    out = np.empty((len(ident), EXP_DIM), np.float32)
    for c in range(len(ident)):
        mates = np.flatnonzero(ident == ident[c])
        out[c] = arrays["expression"][int(rng.choice(mates)), 0]
    return out


class Audio2ExpBatches:
    """audio2exp batches: per row a random frame of a random clip (mel window, blink ratio, target expression)
    and the expression of a random frame of a clip of the same identity as `ref`; rows made per process as
    `TextBatches`."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int, rows: Any = None):
        self.a = arrays
        ident = arrays["identity"]
        self.mates = {int(i): np.flatnonzero(ident == i) for i in np.unique(ident)}
        self.batches = sd.RowBatches(self.row, batch_size, seed, rows)

    def row(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        a = self.a
        num_clips, n = a["expression"].shape[:2]
        c, f = int(rng.integers(num_clips)), int(rng.integers(n))
        ref_clip = int(rng.choice(self.mates[int(a["identity"][c])]))
        ref_frame = int(rng.integers(n))
        return {"mels": a["mel"][c, f].astype(np.float32), "ref": a["expression"][ref_clip, ref_frame],
                "ratio": np.float32(a["eye"][c, f]), "target": a["expression"][c, f]}

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return self.batches(index)


@dataclasses.dataclass(frozen=True)
class Audio2ExpTask(loop.Task):
    """SadTalker audio2exp regressed on ground-truth expression coefficients."""

    width_scale: float
    split: sd.SplitConfig
    cache_dir: str
    batch_size: int = 64
    data_seed: int = 0

    name = "audio2exp"

    def module(self) -> SimpleWrapperV2:
        return SimpleWrapperV2(width_scale=self.width_scale)

    def _example(self) -> tuple:
        return jnp.zeros((1, 80, 16)), jnp.zeros((1, EXP_DIM)), jnp.zeros((1,))

    def init_variables(self, rng: jax.Array) -> dict:
        v = self.module().init(rng, *self._example())
        return {"params": {"audio2exp": v["params"], "audio2exp_stats": identity_batch_stats(self.module(),
                                                                                             *self._example())}}

    def trainable_patterns(self) -> tuple[str, ...]:
        return (r"^audio2exp/",)

    def dataset(self) -> grain.MapDataset:
        return sd.index_dataset(Audio2ExpBatches(sd.load_or_build(self.split, self.cache_dir), self.batch_size,
                                                 self.data_seed))

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        pred = self.module().apply({"params": params["audio2exp"], "batch_stats": params["audio2exp_stats"]},
                                   batch["mels"], batch["ref"], batch["ratio"])
        mse = jnp.mean((pred - batch["target"]) ** 2)
        return mse, {"mse": mse}


def audio2exp_predictions(width_scale: float, variables: Any, arrays: dict[str, np.ndarray],
                          refs: np.ndarray) -> np.ndarray:
    """(clips, F, 64) audio2exp output for every clip (its `ref`, ground-truth blink ratio)."""
    module = SimpleWrapperV2(width_scale=width_scale)
    fn = jax.jit(lambda v, m, r, b: module.apply(v, m, r, b))
    num_clips, n = arrays["expression"].shape[:2]
    out = np.empty((num_clips, n, EXP_DIM), np.float32)
    for c in range(num_clips):
        out[c] = np.asarray(fn(variables, arrays["mel"][c].astype(np.float32), np.repeat(refs[c][None], n, 0),
                               arrays["eye"][c].astype(np.float32)))
    return out


# ------------------------------------------------------------------------------------------------ Style-E


class StyleEBatches:
    """Style-E batches: per row an expression window of a random clip (x0), audio2exp's prediction for the same
    window (sparse) and the text feature of a training description of the clip's condition; rows made per
    process as `TextBatches`."""

    def __init__(self, arrays: dict[str, np.ndarray], sparse: np.ndarray, features: np.ndarray, conds: np.ndarray,
                 batch_size: int, window: int, seed: int, rows: Any = None):
        self.a, self.sparse, self.features, self.window = arrays, sparse, features, window
        self.text_of = {c: np.flatnonzero(conds == c) for c in range(len(emotion_phrases.CONDITIONS))}
        self.batches = sd.RowBatches(self.row, batch_size, seed, rows)

    def row(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        num_clips, n = self.a["expression"].shape[:2]
        c = int(rng.integers(num_clips))
        s = int(rng.integers(n - self.window + 1))
        return {"x0": self.a["expression"][c, s:s + self.window].astype(np.float32),
                "sparse": self.sparse[c, s:s + self.window].astype(np.float32),
                "text": self.features[int(rng.choice(self.text_of[int(self.a["condition"][c])]))].astype(np.float32)}

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return self.batches(index)


@dataclasses.dataclass(frozen=True)
class SyntheticStyleETask(StyleETask):
    """`StyleETask`'s model and loss on the synthetic split: sparse condition = the trained audio2exp's output for
    the same window, text = the trained text tower's feature of a training description (files written by the
    earlier stages)."""

    split: sd.SplitConfig = sd.SplitConfig()
    cache_dir: str = ""
    sparse_file: str = ""
    text_file: str = ""
    batch_size: int = 32
    data_seed: int = 0

    name = "style_e"

    def dataset(self) -> grain.MapDataset:
        arrays = sd.load_or_build(self.split, self.cache_dir)
        sparse = np.load(self.sparse_file, allow_pickle=False)
        with np.load(self.text_file, allow_pickle=False) as z:
            features, conds = z["features"], z["conditions"]
        return sd.index_dataset(StyleEBatches(arrays, sparse, features, conds, self.batch_size, self.model.window,
                                              self.data_seed))


# ------------------------------------------------------------------------------------------------ the run


@dataclasses.dataclass(frozen=True)
class StageRunConfig:
    """What the generic loop reads for one stage (saved as the stage's config.yaml); `batch_size` is the global
    batch, of which each process reads the rows its devices hold (`loop.data_rows`)."""

    stage: str
    batch_size: int
    optimizer: OptimizerConfig
    train: LoopConfig
    mesh: MeshConfig


def _loop_config(cfg: TrainStyle2TalkerConfig, stage: str) -> LoopConfig:
    s = getattr(cfg, stage)
    return LoopConfig(steps=max(s.steps, 1), log_every=s.log_every, checkpoint_every=s.checkpoint_every,
                      seed=cfg.seed, workdir=str(Path(cfg.workdir) / stage), resume=True, progress=cfg.progress,
                      num_threads=0, fast_compile=cfg.fast_compile, distributed=cfg.distributed)


def style_a_config(cfg: TrainStyle2TalkerConfig, stage: str = "style_a") -> TrainStyleAConfig:
    """The standalone `train_style_a` config of the run's Style-A stage or of its expression fine-tune."""
    s = getattr(cfg, stage)
    loss, init_run = cfg.style_a_loss, ""
    if stage == "style_a_expression":
        loss = dataclasses.replace(loss, expression=cfg.style_a_expression_weight)
        init_run = str(Path(cfg.workdir) / "style_a")
    return TrainStyleAConfig(model=cfg.model, split=cfg.train_split, cache_dir=str(Path(cfg.workdir) / "data"),
                             loss=loss, discriminator=cfg.discriminator, batch_size=s.batch_size,
                             data_seed=cfg.seed, init_run=init_run,
                             optimizer=OptimizerConfig(learning_rate=s.learning_rate, weight_decay=0.0),
                             train=_loop_config(cfg, stage), mesh=cfg.mesh)


def build_tasks(cfg: TrainStyle2TalkerConfig) -> dict[str, loop.Task]:
    """The stage tasks of a run (Style-E reads files the earlier stages write, the Style-A fine-tune the
    `style_a` stage's checkpoint)."""
    work, m = Path(cfg.workdir), cfg.model
    cache = str(work / "data")
    return {
        "text": EmotionTextTask(m.clip, cfg.train_split, cache, cfg.text.batch_size, m.style_e.window,
                                cfg.text_temperature, cfg.seed),
        "audio2exp": Audio2ExpTask(m.audio2exp.width_scale, cfg.train_split, cache, cfg.audio2exp.batch_size, cfg.seed),
        "style_e": SyntheticStyleETask(
            model=m.style_e, text=TextFeaturesConfig(clip=m.clip), data=StyleEDataConfig(), diffusion=cfg.diffusion,
            split=cfg.train_split, cache_dir=cache, sparse_file=str(work / "audio2exp" / "sparse.npy"),
            text_file=str(work / "text" / "features.npz"), batch_size=cfg.style_e.batch_size, data_seed=cfg.seed),
        "style_a": StyleATask.from_config(style_a_config(cfg)),
        "style_a_expression": StyleATask.from_config(style_a_config(cfg, "style_a_expression")),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _final(history: list[dict]) -> dict[str, float]:
    return {k: v for k, v in history[-1].items() if k != "steps_per_sec"} if history else {}


def curve_image(rows: list[dict], stage: str) -> np.ndarray:
    """(H, W, 3) uint8: a stage's logged losses against steps, one panel per value (min-max scaled; names and
    ranges in the titles)."""
    from jaxtalk.data.demo import plot_curves

    keys = [k for k in rows[0] if k not in ("step", "steps_per_sec")]
    panels = []
    for k in keys:
        v = np.asarray([r.get(k, np.nan) for r in rows], np.float64)
        title = f"{stage} {k}: {v[0]:.4g} -> {v[-1]:.4g} (steps {rows[0]['step']}..{rows[-1]['step']})"
        panels.append(plot_curves(v[None], 420, 120, title))
    return np.concatenate(panels, axis=0)


def write_curves(workdir: Path) -> list[Path]:
    """One PNG per stage (`curve_image`) in `<workdir>/curves/`."""
    from PIL import Image

    out_dir = workdir / "curves"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in STAGES:
        path = workdir / stage / loop.METRICS_NAME
        if not path.is_file():
            continue
        target = out_dir / f"{stage}.png"
        Image.fromarray(curve_image(loop.read_metrics(workdir / stage), stage)).save(target)
        written.append(target)
    return written


def export(cfg: TrainStyle2TalkerConfig, params: dict[str, Any], out: Path) -> Path:
    """Write the trained components as a Style2Talker bundle (`loading.save_models`: orbax params, config.yaml,
    manifest.json, exstyle_code.npz)."""
    from jaxtalk.style2talker.loading import save_models
    from jaxtalk.style2talker.models import Style2TalkerModels, build_modules

    style_a = params.get("style_a_expression", params["style_a"])  # the fine-tune's when it ran
    models = Style2TalkerModels(
        cfg.model, build_modules(cfg.model),
        {"clip_text": params["text"]["clip_text"], "style_e": params["style_e"]["style_e"],
         "audio2exp": {"params": params["audio2exp"]["audio2exp"],
                       "batch_stats": params["audio2exp"]["audio2exp_stats"]},
         "psp": {"params": style_a["psp"], "batch_stats": style_a["psp_stats"]}, "style_a": style_a["style_a"]},
        np.asarray(style_a["style_bank"], np.float32), art_styles.STYLE_NAMES, source=f"trained ({out})")
    return save_models(models, out)


def restore_params(task: loop.Task, run_cfg: Any) -> tuple[Any, int]:
    """(params, step) of a stage's newest checkpoint, restored on one device without compiling anything."""
    from jax.sharding import SingleDeviceSharding

    from jaxtalk.training.checkpoint import Checkpointer
    from jaxtalk.training.state import create_state

    _, tx = loop.optimizer_of(task, run_cfg.optimizer)
    abstract = jax.eval_shape(lambda p: create_state(p, tx), loop.abstract_params(task))
    device = SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
    ckpt = Checkpointer(Path(run_cfg.train.workdir) / "checkpoints")
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"{run_cfg.train.workdir}: no checkpoint to export; train the stage first")
        state, _ = ckpt.restore(abstract, step)
    finally:
        ckpt.close()
    return jax.device_get(state.params), int(step)


def train_all(cfg: TrainStyle2TalkerConfig, command: str = "", export_only: bool = False,
              only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run (or continue) every stage, then export weights, manifest and curves. Returns the manifest. With
    `export_only`, every stage's newest checkpoint is exported as it is (a run stopped early for its wall
    budget; the manifest records the steps actually trained). With `only`, just those stages run (a later
    stage reads the files of the earlier ones, which must exist) and nothing is exported; returns {}.

    Multi-process runs (after `jaxtalk.distributed.initialize`): every stage is the generic loop's (each process
    reads its rows of every global batch, orbax writes each process's shards); the files between stages
    (`text/features.npz`, `audio2exp/sparse.npy`), the data cache, `config.yaml`, `wall_times.json`, the curves and
    the manifest are written by process 0 alone, the others reading them from the shared workdir after a barrier;
    the export's orbax params are written by all processes together."""
    from jaxtalk import distributed

    unknown = [name for name in only if name not in STAGES]
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: not a stage (stages: {', '.join(STAGES)})")
    cfg.model.validate()
    main_process = distributed.is_main()
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    times_path = work / "wall_times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    show = cfg.progress and main_process
    say = (lambda msg: print(f"[style2talker] {msg}", flush=True)) if show else (lambda msg: None)

    t0 = time.perf_counter()
    if main_process:  # the others read the cache process 0 wrote (or build it alone without shared storage)
        arrays = sd.load_or_build(cfg.train_split, work / "data", progress=show)
    distributed.sync("style2talker data")
    if not main_process:
        arrays = sd.load_or_build(cfg.train_split, work / "data")
    times["data"] = round(times.get("data", 0.0) + time.perf_counter() - t0, 1)
    if cfg.standardize_driving:  # the statistics join the model config, so the export applies them too
        cfg = dataclasses.replace(cfg, model=sd.with_driving_statistics(cfg.model, arrays))
    if main_process:
        config_lib.save(cfg, work / "config.yaml")
    say(f"training split: {len(arrays['condition'])} clips, {len(arrays['clip'])} rendered, "
        f"{len(np.unique(arrays['identity']))} identities")
    tasks = build_tasks(cfg)
    params: dict[str, Any] = {}
    history: dict[str, dict] = {}
    steps_done: dict[str, int] = {}
    for stage in STAGES:
        if only and stage not in only:
            continue
        s = getattr(cfg, stage)
        if stage == "style_a_expression" and s.steps == 0:
            continue  # no fine-tune: the export keeps the style_a stage's Style-A
        if stage in ("style_a", "style_a_expression"):
            run_cfg: Any = style_a_config(cfg, stage)
        else:
            run_cfg = StageRunConfig(stage, s.batch_size, OptimizerConfig(learning_rate=s.learning_rate,
                                                                          weight_decay=0.0),
                                     _loop_config(cfg, stage), cfg.mesh)
        t = time.perf_counter()
        say(f"stage {stage}: {s.steps} steps, batch {s.batch_size}")
        if export_only:
            params[stage], steps_done[stage] = restore_params(tasks[stage], run_cfg)
            history[stage] = _final(loop.read_metrics(work / stage))
            say(f"stage {stage}: restored step {steps_done[stage]}")
            continue
        if s.steps == 0:
            task = tasks[stage]
            mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
            options = loop.FAST_COMPILE if cfg.fast_compile else ()
            params[stage] = distributed.host_copy(loop.init_params(task, mesh, cfg.seed, options))
            history[stage] = {}
        else:
            result = loop.train(tasks[stage], run_cfg)
            params[stage] = distributed.host_copy(result.state.params)
            # metrics.jsonl (process 0's) holds the rows of earlier invocations too; the others keep their own
            history[stage] = _final(loop.read_metrics(work / stage) if main_process else result.history)
        steps_done[stage] = int(history[stage].get("step", 0))
        elapsed = round(time.perf_counter() - t, 1)
        times[stage] = round(times.get(stage, 0.0) + elapsed, 1)  # summed over invocations (resumes)
        if main_process:
            times_path.write_text(json.dumps(times, indent=1))
        if stage == "text":
            texts, conds = training_texts()
            feats = encode_texts(cfg.model.clip, params["text"]["clip_text"], texts)
            if main_process:
                (work / "text").mkdir(parents=True, exist_ok=True)
                np.savez(work / "text" / "features.npz", texts=np.asarray(texts), conditions=conds, features=feats)
        if stage == "audio2exp":
            refs = reference_expressions(arrays, cfg.seed)
            variables = {"params": params["audio2exp"]["audio2exp"],
                         "batch_stats": params["audio2exp"]["audio2exp_stats"]}
            sparse = audio2exp_predictions(cfg.model.audio2exp.width_scale, variables, arrays, refs)
            if main_process:
                (work / "audio2exp").mkdir(parents=True, exist_ok=True)
                np.save(work / "audio2exp" / "sparse.npy", sparse)
        distributed.sync(f"style2talker stage {stage}")  # its files are written before a later stage reads them
        say(f"stage {stage} done in {elapsed} s: {history[stage]}")

    if only:
        say(f"stages {', '.join(only)} done; nothing exported (--only)")
        return {}
    export_dir = work / "export"
    export(cfg, params, export_dir)  # every process: orbax's save is collective
    if not main_process:
        return {}
    curves = write_curves(work)
    manifest = {
        "system": "style2talker",
        "trained_on": "jaxtalk.data.synthetic clips of the training identities only",
        "command": command,
        "commit": _git_commit(),
        "seed": cfg.seed,
        "train_split": dataclasses.asdict(cfg.train_split),
        "eval_split": dataclasses.asdict(cfg.eval_split),
        "steps": steps_done,
        "steps_planned": {stage: getattr(cfg, stage).steps for stage in STAGES},
        "batch_sizes": {stage: getattr(cfg, stage).batch_size for stage in STAGES},
        "wall_seconds": times,
        "final_metrics": history,
        "art_styles": list(art_styles.STYLE_NAMES),
        "text_frames": {"train": list(emotion_phrases.TRAIN_FRAMES), "heldout": list(emotion_phrases.HELDOUT_FRAMES)},
        "curves": [str(p.relative_to(work)) for p in curves],
        "replacements": {
            "VGG/LPIPS perceptual loss": "L1 between features of the jointly trained patch discriminator",
            "face parsing (BiSeNet)": "zeros",
            "pretrained StyleGAN/DualStyleGAN, pSp, CLIP, audio2exp": "trained from scratch on the synthetic split",
            "DualStyleGAN art exemplars": "jaxtalk.style2talker.art_styles filter family",
        },
        "machine": {"cpus": os.cpu_count(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]},
    }
    if "style_a_expression" in steps_done or cfg.style_a_loss.expression > 0:
        manifest["replacements"]["expression-aware perceptual features (the paper's face-trained VGG)"] = (
            "loss.expression: MSE of the 64 expression coefficients read off the generated photo frames by a small "
            "conv probe trained jointly on the real training frames")
    from jaxtalk.interop import bundle

    bundle.update_manifest(export_dir, **{k: v for k, v in manifest.items() if k != "system"})
    say(f"exported to {export_dir}")
    return manifest


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`train/style2talker.py --config PRESET [--workdir DIR] [--export-only] [--only STAGE ...] [--coordinator HOST:PORT
    --num-processes N --process-id I] [key=value ...]`: the one-task trainers' command line and multi-process
    start-up (`loop.entry_parser`, `loop.start`; config keys `distributed.*`)."""
    from jaxtalk import distributed

    parser = loop.entry_parser("Train every Style2Talker component from nothing on synthetic data", steps=False,
                               prefix="")
    parser.add_argument("--export-only", action="store_true",
                        help="export every stage's newest checkpoint without training (a run stopped early)")
    parser.add_argument("--only", nargs="+", default=(), metavar="STAGE",
                        help=f"run only these stages ({', '.join(STAGES)}; later ones read the earlier ones' "
                        "files) and export nothing; put dotted overrides before it")
    args = parser.parse_args(argv)
    with distributed.entry_point(parser.prog):  # bad config / data: one line, exit 2, no traceback
        cfg = loop.start(args, "train_style2talker", prefix="")
        command = " ".join(["python", "train/style2talker.py", *(argv if argv is not None else sys.argv[1:])])
        return train_all(cfg, command, export_only=args.export_only, only=tuple(args.only))
