"""grain pipelines over a clip-record directory: F-frame windows with their aligned audio, batched as numpy.

Order of operations (a `grain.MapDataset`, random access all the way, so the iterator state is just a position):
windows of every clip -> this JAX process's shard -> shuffle by seed (a fresh permutation each epoch) -> repeat ->
batch with drop_remainder. The audio window of frames [s, s + F) at `fps` is samples
[round(s * 16000 / fps), + round(F * 16000 / fps)), zero-padded past the end of the clip.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import Any

import grain
import numpy as np

from jaxtalk.data import facs
from jaxtalk.data.records import SAMPLE_RATE, ClipRecord, RecordError, read_index, read_record


class ClipWindowSource:
    """Random-access source of F-frame windows over the clips listed in a dataset's `index.json`.

    Element: dict of numpy arrays — frames uint8 (F, H, W, 3), audio float32 (S_w,), expression (F, 64),
    pose (F, 6), head_kps (F, 8, 2), and int32 scalars identity (position in the index's sorted identity list),
    emotion (position in facs.EMOTIONS), intensity, clip_index, start_frame; emotion_text is a str scalar array
    (one of the clip's texts, picked by window position).
    """

    def __init__(self, directory: str | os.PathLike, window: int, stride: int | None = None,
                 cache_clips: int = 8):
        self.directory = Path(directory)
        index = read_index(self.directory)
        self.entries: list[dict[str, Any]] = index["clips"]
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.window, self.stride = int(window), int(stride or window)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1 frame, got {stride}")
        where = self.directory / "index.json"
        if not self.entries:
            raise RecordError(f"{where}: the dataset has no clips")
        for key in ("fps", "height", "width"):
            values = sorted({e[key] for e in self.entries})
            if len(values) > 1:
                raise RecordError(f"{where}: clips mix {key} values {values[:4]}; a batch needs one {key}, so "
                                  f"resample the clips or split them into one dataset per {key}")
        self.fps = float(self.entries[0]["fps"])
        self.audio_window = int(round(self.window * SAMPLE_RATE / self.fps))
        self.identities: list[str] = list(index["identities"])
        self._identity_id = {name: i for i, name in enumerate(self.identities)}
        windows = [(c, s) for c, e in enumerate(self.entries)
                   for s in range(0, e["num_frames"] - self.window + 1, self.stride)]
        if not windows:
            longest = max(e["num_frames"] for e in self.entries)
            raise RecordError(f"{where}: no clip has {self.window} frames (longest: {longest}); use a shorter "
                              "window")
        self.windows = np.asarray(windows, np.int64)
        self._cache: collections.OrderedDict[int, ClipRecord] = collections.OrderedDict()
        self._cache_size = max(1, cache_clips)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.windows)

    def __repr__(self) -> str:
        return f"ClipWindowSource({str(self.directory)!r}, window={self.window}, stride={self.stride})"

    def _clip(self, c: int) -> ClipRecord:
        with self._lock:
            if c in self._cache:
                self._cache.move_to_end(c)
                return self._cache[c]
        record = read_record(self.directory / self.entries[c]["file"])
        with self._lock:
            self._cache[c] = record
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return record

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        c, s = (int(v) for v in self.windows[i])
        r = self._clip(c)
        f = slice(s, s + self.window)
        a0 = int(round(s * SAMPLE_RATE / self.fps))
        audio = np.zeros(self.audio_window, np.float32)
        chunk = r.audio[a0:a0 + self.audio_window]
        audio[:len(chunk)] = chunk
        return {
            "frames": r.frames[f],
            "audio": audio,
            "expression": r.expression[f],
            "pose": r.pose[f],
            "head_kps": r.head_kps[f],
            "identity": np.int32(self._identity_id[r.identity]),
            "emotion": np.int32(facs.EMOTIONS.index(r.emotion)),
            "intensity": np.int32(r.intensity),
            "clip_index": np.int32(c),
            "start_frame": np.int32(s),
            "emotion_text": np.asarray(r.emotion_texts[(s // self.stride) % len(r.emotion_texts)]),
        }


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    return int(process_index), int(process_count)


def make_dataset(directory: str | os.PathLike, window: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, stride: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, drop_remainder: bool = True) -> grain.MapDataset:
    """Batched window dataset for this process (defaults: `jax.process_index()` of `jax.process_count()`).

    Every process keeps the same number of windows (the tail that does not divide evenly is dropped) so all
    processes run the same number of steps. `num_epochs=None` repeats forever. `batch_size` is per process.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index, count = _process(process_index, process_count)
    source = ClipWindowSource(directory, window, stride)
    per_process = len(source) // count
    if per_process == 0:
        raise RecordError(f"{directory}: {len(source)} windows cannot feed {count} processes; add clips or use "
                          "a shorter window / stride")
    ds = grain.MapDataset.source(source)[index:per_process * count:count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if drop_remainder and num_epochs is not None and len(ds) < batch_size:
        raise RecordError(f"{directory}: {len(ds)} windows per process are fewer than batch_size={batch_size}")
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def make_iterator(directory: str | os.PathLike, window: int, batch_size: int, seed: int = 0,
                  num_threads: int = 2, **kwargs: Any) -> grain.DatasetIterator:
    """Checkpointable iterator (`get_state()` / `set_state()`) over `make_dataset(...)` batches."""
    ds = make_dataset(directory, window, batch_size, seed=seed, **kwargs)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * max(num_threads, 1))
    return iter(ds.to_iter_dataset(read_options=options))


# ------------------------------------------------------------------------------------------------ global batches

def default_batch_rows(global_batch: int, process_index: int | None = None,
                       process_count: int | None = None) -> np.ndarray:
    """The rows of each global batch a process reads when no mesh says otherwise: an equal contiguous share in
    process order (what a batch axis laid over the processes' devices in order holds)."""
    index, count = _process(process_index, process_count)
    if global_batch % count:
        raise ValueError(f"global batch {global_batch} does not divide over {count} processes; use a multiple "
                         f"of {count}")
    share = global_batch // count
    return np.arange(index * share, (index + 1) * share, dtype=np.int64)


class _ReadRows:
    """Window indices of one global batch -> this process's rows read from the source and stacked."""

    def __init__(self, source: ClipWindowSource, rows: np.ndarray):
        self.source, self.rows = source, rows

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        picked = np.asarray(indices)[self.rows]
        elements = [self.source[int(i)] for i in picked]
        out = {k: np.stack([e[k] for e in elements]) for k in elements[0]}
        out["window_index"] = picked.astype(np.int64)
        out["batch_row"] = self.rows.astype(np.int32)
        return out


def global_batches(directory: str | os.PathLike, window: int, global_batch: int, seed: int = 0,
                   shuffle: bool = True, num_epochs: int | None = None, stride: int | None = None,
                   rows: Any = None) -> grain.MapDataset:
    """Global batches of windows, of which this process reads only `rows` (default: `default_batch_rows`).

    The order of windows — every window of every clip, shuffled by `seed` with a fresh permutation each epoch,
    repeated, cut into batches of `global_batch` — is the same for any number of processes, so the global batch
    assembled from the processes' rows equals what one process reading all rows gets, and the iterator position
    (the global batch count) means the same thing whatever the process count. Elements: the stacked window fields
    of `ClipWindowSource` for the rows read, plus `window_index` (source index) and `batch_row` (row in the
    global batch) of each.
    """
    if global_batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {global_batch}")
    source = ClipWindowSource(directory, window, stride)
    rows = default_batch_rows(global_batch) if rows is None else np.asarray(rows, np.int64).reshape(-1)
    if rows.size == 0 or np.any(rows < 0) or np.any(rows >= global_batch) or np.any(np.diff(rows) <= 0):
        raise ValueError(f"batch rows {rows.tolist()[:8]} must be increasing indices in [0, {global_batch})")
    order = grain.MapDataset.range(len(source))
    if shuffle:
        order = order.shuffle(seed=seed)
    order = order.repeat(num_epochs)
    if num_epochs is not None and len(order) < global_batch:
        raise RecordError(f"{directory}: {len(order)} windows are fewer than batch_size={global_batch}")
    return order.batch(global_batch, drop_remainder=True).map(_ReadRows(source, rows))
