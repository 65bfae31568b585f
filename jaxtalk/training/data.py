"""Training batches on the host: the audio-feature cache and the per-trainer batch preparation (grain transforms).

Audio features. Every clip's audio goes once through the frozen speech encoder (`AudioFeaturesConfig`: Whisper
states concatenated per 20 ms frame, or wav2vec2 `last_hidden_state`), and the (T, D) 50 Hz features are stored as
`<feature_dir>/<clip file stem>.npy` with a `features.json` naming the encoder settings. Batches then take
- audio windows for the audio projection exactly as `AudioProjectionConfig.windows` forms them over the whole clip
  (linear resampling to `vectors_per_frame` vectors per frame, zero padding of `num_pad_audio_frames` frames each
  side, frame f takes frames f-P .. f+P) — `audio_windows`;
- one vector per video frame for the style extractor (the first round(N * 50 / fps) features resampled linearly to
  N frames, as `jaxtalk.svp.models` does for a style clip) — `per_frame_features`.

Batch preparation runs as a grain map over the global batches of `jaxtalk.data.pipeline.global_batches`, one row at
a time, so the per-sample randomness (frame offsets, reference frames, partners) is a function of the seed, the
batch's position and the row: a resumed iterator reproduces it, and so does any number of processes.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np

from jaxtalk import config as config_lib
from jaxtalk.data import pipeline
from jaxtalk.data.kps import box_masks, draw_head_kps, draw_v_kps, mouth_boxes, v_kps_from_head_kps
from jaxtalk.data.records import RecordError, read_index
from jaxtalk.training.config import AudioFeaturesConfig

AUDIO_FPS = 50
FEATURES_META = "features.json"


# ------------------------------------------------------------------------------------------------ feature cache

def audio_encoder_fn(cfg: AudioFeaturesConfig) -> Callable[[np.ndarray], np.ndarray]:
    """16 kHz mono audio (N,) -> float32 (N // 320, D) features of the configured frozen encoder."""
    from jaxtalk.training import sources

    if cfg.encoder == "logmel":
        from jaxtalk.backbones.audio_features import logmel_frames

        return lambda audio: logmel_frames(audio, cfg.n_mels)
    if cfg.encoder == "whisper":
        from jaxtalk.backbones.audio_features import whisper_audio_states
        from jaxtalk.backbones.whisper import WhisperEncoder

        module = WhisperEncoder(cfg.whisper)
        params = sources.component_params(module, cfg.checkpoint, "whisper_encoder", cfg.seed)

        def whisper(audio: np.ndarray) -> np.ndarray:
            states = whisper_audio_states(module, params, audio, final_layer_norm=cfg.whisper_final_layer_norm)
            return states.reshape(states.shape[0], -1)

        return whisper
    from jaxtalk.backbones.wav2vec2 import Wav2Vec2Model, normalize_waveform

    module = Wav2Vec2Model(cfg.wav2vec2)
    params = sources.component_params(module, cfg.checkpoint, "wav2vec2", cfg.seed)
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, output="last_hidden_state"))

    def wav2vec2(audio: np.ndarray) -> np.ndarray:
        x = normalize_waveform(audio) if cfg.normalize else np.asarray(audio, np.float32)
        return np.asarray(encode(params, x[None]), np.float32)[0]

    return wav2vec2


def feature_dir_of(record_dir: str | os.PathLike, feature_dir: str | None, cfg: AudioFeaturesConfig) -> Path:
    return Path(feature_dir) if feature_dir else Path(record_dir) / f"features_{cfg.encoder}"


def ensure_audio_features(record_dir: str | os.PathLike, cfg: AudioFeaturesConfig,
                          feature_dir: str | None = None) -> Path:
    """Write the feature cache for every clip of `record_dir` unless it is there for the same encoder settings."""
    from jaxtalk.data.records import read_record

    out = feature_dir_of(record_dir, feature_dir, cfg)
    meta = {"encoder": config_lib.to_dict(cfg), "dim": cfg.feature_dim, "fps": AUDIO_FPS}
    meta_path = out / FEATURES_META
    if meta_path.is_file():
        have = json.loads(meta_path.read_text())
        if have != meta:
            raise RecordError(f"{out}: the cached audio features were made with other encoder settings; delete the "
                              "folder or point data.feature_dir elsewhere")
        return out
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        encode = audio_encoder_fn(cfg)
        for entry in read_index(record_dir)["clips"]:
            features = encode(read_record(Path(record_dir) / entry["file"]).audio)
            tmp = out / (Path(entry["file"]).stem + ".tmp.npy")
            np.save(tmp, features.astype(np.float32))
            os.replace(tmp, out / (Path(entry["file"]).stem + ".npy"))
        tmp = meta_path.with_name(FEATURES_META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, meta_path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxtalk_audio_features")
    return out


class FeatureStore:
    """LRU cache of per-clip features (T, D) from a feature folder, by clip index in the dataset index."""

    def __init__(self, record_dir: str | os.PathLike, feature_dir: Path, dim: int, cache: int = 32):
        self.entries = read_index(record_dir)["clips"]
        self.dir, self.dim = Path(feature_dir), dim
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._size, self._lock = cache, threading.Lock()

    def __call__(self, c: int) -> np.ndarray:
        with self._lock:
            if c in self._cache:
                self._cache.move_to_end(c)
                return self._cache[c]
        path = self.dir / (Path(self.entries[c]["file"]).stem + ".npy")
        if not path.is_file():
            raise RecordError(f"{path}: no cached audio features for clip {c}; rebuild the cache (delete "
                              f"{self.dir / FEATURES_META})")
        x = np.load(path)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RecordError(f"{path}: features of shape {x.shape}, expected (T, {self.dim})")
        with self._lock:
            self._cache[c] = x
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return x


def interpolate_rows(x: np.ndarray, size: int) -> np.ndarray:
    """(T, D) -> (size, D): `F.interpolate(mode='linear', align_corners=False)` over T (float32)."""
    t = x.shape[0]
    src = np.maximum((np.arange(size, dtype=np.float32) + 0.5) * np.float32(t / size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), t - 1)
    i1 = np.minimum(i0 + 1, t - 1)
    lam = (src - i0.astype(np.float32))[:, None]
    return ((1.0 - lam) * x[i0].astype(np.float32) + lam * x[i1].astype(np.float32)).astype(np.float32)


def audio_windows(features: np.ndarray, clip_frames: int, start: int, count: int, num_pad: int,
                  vectors_per_frame: int) -> np.ndarray:
    """Rows [start, start+count) of `AudioProjectionConfig.windows` over the whole clip: (count, v(2P+1), D)."""
    v = vectors_per_frame
    emb = interpolate_rows(features, v * clip_frames)
    emb = np.pad(emb, ((v * num_pad, v * num_pad), (0, 0)))
    win = v * (2 * num_pad + 1)
    return np.stack([emb[v * f:v * f + win] for f in range(start, start + count)])


def per_frame_features(features: np.ndarray, clip_frames: int, fps: float) -> np.ndarray:
    """One feature vector per video frame (clip_frames, D), the style extractor's audio input."""
    used = max(1, min(features.shape[0], int(round(clip_frames * AUDIO_FPS / fps))))
    return interpolate_rows(features[:used], clip_frames)


# ------------------------------------------------------------------------------------------------ image helpers

def box_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., size, size, 3) by averaging k x k blocks (k = H / size)."""
    h, w = frames.shape[-3:-1]
    if h != w or h % size:
        raise RecordError(f"frames of {h}x{w} cannot be box-resized to {size}x{size}: records must be square with "
                          "a side that is a multiple of data.image_size")
    k = h // size
    if k == 1:
        return frames
    x = frames.reshape(*frames.shape[:-3], size, k, size, k, 3).astype(np.float32).mean(axis=(-4, -2))
    return np.round(x).astype(np.uint8)


def kps_images(kps: np.ndarray, scale: float, size: int, mode: str) -> np.ndarray:
    """(F, 8, 2) head keypoints in record pixels -> uint8 (F, size, size, 3) Head-Kps (or V-Kps) images."""
    kps = np.asarray(kps, np.float64) * scale
    if mode == "v":
        return np.stack([draw_v_kps(p, size) for p in v_kps_from_head_kps(kps)])
    return np.stack([draw_head_kps(p, size) for p in kps])


# ------------------------------------------------------------------------------------------------ datasets

_BATCH_ROWS: contextvars.ContextVar[np.ndarray | None] = contextvars.ContextVar("jaxtalk_batch_rows", default=None)


@contextlib.contextmanager
def process_rows(rows: Any) -> Iterator[None]:
    """Within the block, `make_batches` reads these rows of every global batch (the training loop sets the rows
    that this process's devices hold on the mesh, `jaxtalk.parallel.process_batch_rows`)."""
    token = _BATCH_ROWS.set(None if rows is None else np.asarray(rows, np.int64))
    try:
        yield
    finally:
        _BATCH_ROWS.reset(token)


def current_rows() -> np.ndarray | None:
    """The rows of every global batch this process reads (set by `process_rows`; None: all of them)."""
    return _BATCH_ROWS.get()


class _PrepRows:
    """Applies a batch `prep` row by row, each row with its own generator seeded by (seed, global batch position,
    row in the global batch): a sample's preparation does not depend on which process prepares it."""

    def __init__(self, prep: Callable[[dict, np.random.Generator], dict], seed: int):
        self.prep, self.seed = prep, seed

    def __call__(self, index: int, batch: dict) -> dict:
        outs = []
        for r, row in enumerate(batch["batch_row"]):
            one = {k: v[r:r + 1] for k, v in batch.items()}
            outs.append(self.prep(one, np.random.default_rng((self.seed, int(index), int(row)))))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def make_batches(record_dir: str | os.PathLike, window: int, batch_size: int, seed: int,
                 prep: Callable[[dict, np.random.Generator], dict], stride: int | None = None,
                 rows: Any = None) -> grain.MapDataset:
    """Prepared global batches of `batch_size` windows (`pipeline.global_batches`), of which this process reads
    and prepares `rows` (default: those `process_rows` set, else an equal share by process index). `prep` sees
    one row at a time (a batch of 1) with that row's generator, so the global batch is the same for any number
    of processes."""
    rows = _BATCH_ROWS.get() if rows is None else rows
    ds = pipeline.global_batches(record_dir, window, batch_size, seed=seed, stride=stride, rows=rows)
    return ds.map_with_index(_PrepRows(prep, seed + 1))


def make_iterator(ds: grain.MapDataset, num_threads: int) -> grain.DatasetIterator:
    """Checkpointable iterator (`get_state` / `set_state`) over prepared batches."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * max(num_threads, 1))
    return iter(ds.to_iter_dataset(read_options=options))


def _group_windows(source: pipeline.ClipWindowSource, key: Callable[[Mapping[str, Any]], Any]) -> dict:
    groups: dict[Any, list[int]] = collections.defaultdict(list)
    for i, (c, _) in enumerate(source.windows):
        groups[key(source.entries[int(c)])].append(i)
    return {k: np.asarray(v, np.int64) for k, v in groups.items()}


def _pick_other(rng: np.random.Generator, options: np.ndarray, avoid: int) -> int:
    """A random entry of `options` other than `avoid` (or `avoid` itself when it is the only one)."""
    others = options[options != avoid]
    return int(rng.choice(others)) if len(others) else int(avoid)


class SVPBatchPrep:
    """Raw window batches -> SVP training batches (see `TrainSVPConfig` / `SVPDataConfig`).

    Output per sample: `frames` uint8 (F, S, S, 3); `reference` uint8 (S, S, 3); `kps` uint8 (F, S, S, 3);
    `expression` float32 (F, 64), the frames' true coefficients; `audio` float32 (F, window, D) unless `features`
    is None (stage 1 has no audio); with `style`: `style_exp` (W, 64) and `style_audio` (W, D) over the whole
    source window; with `mouth_masks`: `mouth_mask` float32 (F, S, S), each pixel's cover by the mouth box of
    its frame's Head-Kps (`jaxtalk.data.kps.mouth_boxes`); `identity`, `emotion` int32.
    """

    def __init__(self, record_dir: str | os.PathLike, data: Any, features: FeatureStore | None, num_pad: int,
                 vectors_per_frame: int, style: bool, kps_mode: str = "head", mouth_masks: bool = False):
        self.data, self.features, self.style, self.mouth_masks = data, features, style, mouth_masks
        self.num_pad, self.v, self.kps_mode = num_pad, vectors_per_frame, kps_mode
        self.source = pipeline.ClipWindowSource(record_dir, data.clip_window, data.stride)
        entries = self.source.entries
        self.clips_of: dict[str, list[int]] = collections.defaultdict(list)
        for c, e in enumerate(entries):
            self.clips_of[e["identity"]].append(c)
        self.windows_of = {c: np.flatnonzero(self.source.windows[:, 0] == c) for c in range(len(entries))}

    def _reference(self, rng: np.random.Generator, clip: int, window: np.ndarray, offset: int) -> np.ndarray:
        d = self.data
        if d.reference_source == "same_identity":
            e = self.source.entries[clip]
            mates = [c for c in self.clips_of[e["identity"]] if c != clip and len(self.windows_of[c])]
            other_emotion = [c for c in mates if self.source.entries[c]["emotion"] != e["emotion"]]
            pool = other_emotion or mates
            if pool:
                frames = self.source[int(rng.choice(self.windows_of[int(rng.choice(pool))]))]["frames"]
                return frames[int(rng.integers(len(frames)))]
        outside = np.setdiff1d(np.arange(len(window)), np.arange(offset, offset + d.frames))
        return window[int(rng.choice(outside))] if len(outside) else window[offset]

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        d = self.data
        out: dict[str, list] = collections.defaultdict(list)
        h = batch["frames"].shape[2]
        scale = d.image_size / h
        for i in range(batch["frames"].shape[0]):
            clip, start = int(batch["clip_index"][i]), int(batch["start_frame"][i])
            window = batch["frames"][i]
            offset = int(rng.integers(0, d.clip_window - d.frames + 1))
            frames = box_resize(window[offset:offset + d.frames], d.image_size)
            reference = box_resize(self._reference(rng, clip, window, offset), d.image_size)
            head_kps = batch["head_kps"][i][offset:offset + d.frames]
            kps = kps_images(head_kps, scale, d.image_size, self.kps_mode)
            mouth = box_masks(mouth_boxes(head_kps * scale), d.image_size) if self.mouth_masks else None
            if rng.random() < d.flip_rate:
                frames, reference, kps = frames[..., ::-1, :], reference[:, ::-1], kps[..., ::-1, :]
                mouth = None if mouth is None else mouth[..., ::-1]
            if mouth is not None:
                out["mouth_mask"].append(mouth)
            out["frames"].append(frames)
            out["reference"].append(reference)
            out["kps"].append(kps)
            out["expression"].append(batch["expression"][i][offset:offset + d.frames])
            if self.features is None:
                continue
            feats = self.features(clip)
            n = self.source.entries[clip]["num_frames"]
            out["audio"].append(audio_windows(feats, n, start + offset, d.frames, self.num_pad, self.v))
            if self.style:
                per_frame = per_frame_features(feats, n, self.source.fps)
                out["style_exp"].append(batch["expression"][i])
                out["style_audio"].append(per_frame[start:start + d.clip_window])
        result = {k: np.ascontiguousarray(np.stack(v)) for k, v in out.items()}
        result["identity"], result["emotion"] = batch["identity"], batch["emotion"]
        return result


class StylePriorBatchPrep:
    """Raw window batches -> contrastive batches: each of the B sampled windows with one partner that has the
    same labels. Output: `exp` (B, T, 64), `audio` (B, T, D), `identity`, `emotion`, `clip` (B,) int32, and the
    same fields of the partners as `partner_*`; `contrastive_pairs` stacks them into the 2B windows (the B
    windows, then their partners) that the loss contrasts. Partners are per-row fields, so a batch split over
    processes keeps every pair together and the global 2B layout does not depend on the process count."""

    FIELDS = ("exp", "audio", "identity", "emotion", "clip")

    def __init__(self, record_dir: str | os.PathLike, data: Any, features: FeatureStore):
        self.data, self.features = data, features
        self.source = pipeline.ClipWindowSource(record_dir, data.window, data.stride)
        if data.positives == "clip":
            key = lambda e: e["file"]
        else:
            key = lambda e: (e["identity"], e["emotion"])
        self.key = key
        self.groups = _group_windows(self.source, key)
        self.window_of = {(int(c), int(s)): i for i, (c, s) in enumerate(self.source.windows)}

    def _audio(self, clip: int, start: int) -> np.ndarray:
        n = self.source.entries[clip]["num_frames"]
        return per_frame_features(self.features(clip), n, self.source.fps)[start:start + self.data.window]

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        rows: dict[str, list] = collections.defaultdict(list)

        def add(prefix: str, exp: np.ndarray, clip: int, start: int, identity: Any, emotion: Any) -> None:
            rows[prefix + "exp"].append(exp)
            rows[prefix + "audio"].append(self._audio(clip, start))
            rows[prefix + "identity"].append(identity)
            rows[prefix + "emotion"].append(emotion)
            rows[prefix + "clip"].append(clip)

        for i in range(batch["expression"].shape[0]):
            clip, start = int(batch["clip_index"][i]), int(batch["start_frame"][i])
            add("", batch["expression"][i], clip, start, batch["identity"][i], batch["emotion"][i])
            me = self.window_of[(clip, start)]
            el = self.source[_pick_other(rng, self.groups[self.key(self.source.entries[clip])], me)]
            add("partner_", el["expression"], int(el["clip_index"]), int(el["start_frame"]), el["identity"],
                el["emotion"])
        out = {}
        for prefix in ("", "partner_"):
            out[prefix + "exp"] = np.stack(rows[prefix + "exp"]).astype(np.float32)
            out[prefix + "audio"] = np.stack(rows[prefix + "audio"]).astype(np.float32)
            for k in ("identity", "emotion", "clip"):
                out[prefix + k] = np.asarray(rows[prefix + k], np.int32)
        return out


def contrastive_pairs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A `StylePriorBatchPrep` batch as 2B windows: `exp`, `audio`, `identity`, `emotion`, `clip` of the B sampled
    windows followed by those of their partners (numpy or jax arrays)."""
    cat = np.concatenate if isinstance(batch["exp"], np.ndarray) else _jnp_concatenate
    return {k: cat([batch[k], batch["partner_" + k]]) for k in StylePriorBatchPrep.FIELDS}


def _jnp_concatenate(xs: list) -> Any:
    import jax.numpy as jnp

    return jnp.concatenate(xs)


class StyleEBatchPrep:
    """Raw window batches -> Style-E batches: `x0` (B, T, 64) the target window's expression, `sparse` (B, T, 64)
    (see `StyleEDataConfig.sparse`), `text` (B, text_dim) the CLIP feature of the target clip's emotion text."""

    def __init__(self, record_dir: str | os.PathLike, data: Any, window: int, text_features: Mapping[str, np.ndarray]):
        self.data, self.text_features = data, text_features
        self.source = pipeline.ClipWindowSource(record_dir, window, data.stride)
        self.groups = _group_windows(self.source, lambda e: e["identity"])
        self.window_of = {(int(c), int(s)): i for i, (c, s) in enumerate(self.source.windows)}

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        sparse, text = [], []
        for i in range(batch["expression"].shape[0]):
            clip, start = int(batch["clip_index"][i]), int(batch["start_frame"][i])
            if self.data.sparse == "same_window":
                sparse.append(batch["expression"][i])
            else:
                me = self.window_of[(clip, start)]
                pool = self.groups[self.source.entries[clip]["identity"]]
                sparse.append(self.source[_pick_other(rng, pool, me)]["expression"])
            t = str(batch["emotion_text"][i])
            if t not in self.text_features:
                raise RecordError(f"emotion text {t!r} has no precomputed text feature")
            text.append(self.text_features[t])
        return {"x0": batch["expression"].astype(np.float32), "sparse": np.stack(sparse).astype(np.float32),
                "text": np.stack(text).astype(np.float32), "identity": batch["identity"],
                "emotion": batch["emotion"]}


def emotion_texts(record_dir: str | os.PathLike) -> list[str]:
    """Every distinct emotion text of the dataset (sorted), read from the clip records."""
    from jaxtalk.data.records import read_record

    texts: set[str] = set()
    for entry in read_index(record_dir)["clips"]:
        texts.update(read_record(Path(record_dir) / entry["file"]).emotion_texts)
    return sorted(texts)


def ensure_records(data: Any) -> None:
    """Write the synthetic dataset to `data.record_dir` when asked (`generate_synthetic`) and there is none."""
    index = Path(data.record_dir) / "index.json"
    if index.is_file():
        return
    if not data.generate_synthetic:
        raise RecordError(f"{index}: no dataset; write clip records there (jaxtalk.data.records) or set "
                          "data.generate_synthetic=true for the synthetic set")
    from jaxtalk.data.records import write_synthetic_dataset

    s = data.synthetic
    if jax.process_index() == 0:
        write_synthetic_dataset(data.record_dir, s.num_identities, s.clips_per_identity, seed=s.seed,
                                resolution=s.resolution, num_frames=int(round(s.seconds * s.fps)), fps=s.fps)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxtalk_synthetic_records")


def frame_batches(data: Any) -> grain.MapDataset:
    """Batches of frames without audio (`SVPBatchPrep` with no feature store) from an `SVPDataConfig`, writing
    the synthetic records first where the config asks: what the VAE and the expression probe train on."""
    ensure_records(data)
    prep = SVPBatchPrep(data.record_dir, data, None, 0, 1, style=False)
    return make_batches(data.record_dir, data.clip_window, data.batch_size, data.shuffle_seed, prep, data.stride)
