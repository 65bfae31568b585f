"""Audio, image and video I/O for talking-head data.

- `load_audio`: any rate / channel count / container (wav, flac, ogg via soundfile; mp3, mp4, m4a, ... via PyAV)
  -> 16 kHz mono float32. Missing, empty, undecodable or silent input raises one `MediaError` line.
- `load_image` / `to_rgb_uint8`: RGB, RGBA, grey, palette, 16-bit or float images -> RGB uint8.
- `write_video`: uint8 frames (+ optional audio) -> mp4 (H.264 `libx264` where available, else MPEG-4 Part 2;
  AAC audio), written to a temporary file and renamed at the end, so a failure never leaves a partial file.
- `read_video_frames` / `read_video_audio` / `probe_video`: read an mp4 back (used by tests and tools).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps
from scipy import signal

from jaxtalk.data.atomic import atomic_path

SAMPLE_RATE = 16000
_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".w64", ".caf"}
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this everywhere the file holds no usable speech


class MediaError(ValueError):
    """An input or output media file that cannot be used; the message names the file, the problem and a fix."""


def _soundfile_read(path: Path) -> tuple[np.ndarray, int] | None:
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile ships with librosa
        return None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception:  # fall back to PyAV for anything libsndfile cannot parse
        return None
    return data, int(rate)


def _av_read(path: Path) -> tuple[np.ndarray, int]:
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                raise MediaError(f"{path}: has no audio stream; pass a file with speech audio "
                                 "(wav, flac, mp3, or a video with sound)")
            stream = streams[0]
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=stream.rate or SAMPLE_RATE)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray()[0])
            rate = int(stream.rate or SAMPLE_RATE)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise MediaError(f"{path}: cannot be decoded as audio ({type(e).__name__}: {e}); "
                         "re-export it as 16-bit wav or check that the file is complete") from None
    if not chunks:
        raise MediaError(f"{path}: audio stream has no samples; re-export the recording")
    return np.concatenate(chunks).astype(np.float32)[:, None], rate


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (Kaiser-windowed FIR) of a 1-d float signal from `rate` to `target`."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    g = np.gcd(int(rate), int(target))
    return signal.resample_poly(audio.astype(np.float64), target // g, rate // g).astype(np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate` (channels averaged). Raises MediaError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: audio file not found; check the path")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: audio file is empty (0 bytes); re-export or re-download it")
    # libsndfile for the PCM / lossless containers it knows (fast); FFmpeg (PyAV) for the rest, and as fallback.
    decoded = _soundfile_read(path) if path.suffix.lower() in _SOUNDFILE_SUFFIXES else None
    data, rate = decoded if decoded is not None else _av_read(path)
    if data.size == 0:
        raise MediaError(f"{path}: audio has no samples; re-export the recording")
    mono = data.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise MediaError(f"{path}: audio contains NaN or inf samples; re-export it as 16-bit PCM")
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise MediaError(f"{path}: audio is silent (peak {peak:.1e}, {len(mono) / rate:.2f} s); "
                         "pass a recording with speech or check the microphone / mute settings")
    return resample(mono, rate, sample_rate)


def to_rgb_uint8(image: Any, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a PIL image or array: grey (H, W) / (H, W, 1), RGB, or RGBA (composited over
    `background`); float arrays are taken as [0, 1]; 16-bit arrays are scaled down."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image)
        elif image.mode != "RGB":
            image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise MediaError(f"image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        wide = np.clip(arr, 0, 65535).astype(np.float64)
        if wide.max() > 255:  # 16-bit data
            wide = wide / 257.0
        arr = np.clip(wide + 0.5, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        bg = np.asarray(background, np.float32)
        arr = np.clip(arr[..., :3] * alpha + bg * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); transparency is composited over `background`."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: image file not found; check the path")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # phone photos: pixels stored sideways, EXIF says how to turn them
            return to_rgb_uint8(im, background)
    except MediaError as e:
        raise MediaError(f"{path}: {e}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"{path}: cannot be read as an image ({e}); re-save it as PNG or JPEG") from None


def _video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = SAMPLE_RATE, crf: int = 18) -> Path:
    """Write uint8 (F, H, W, 3) frames and optional mono float audio to an mp4 (atomic). Odd sizes are padded
    by one edge pixel (yuv420p needs even sizes)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise MediaError(f"{path}: frames must be uint8 (F, H, W, 3) with F > 0, got "
                         f"{frames.dtype} {frames.shape}")
    if not fps > 0:
        raise MediaError(f"{path}: fps must be positive, got {fps}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    if audio is not None:
        audio = np.asarray(audio, np.float32).reshape(-1)
        if audio.size == 0 or not np.all(np.isfinite(audio)):
            raise MediaError(f"{path}: audio must be a non-empty finite mono float array")
    rate = Fraction(fps).limit_denominator(1001)
    codec = _video_codec()
    try:
        with atomic_path(path) as tmp:
            with av.open(str(tmp), mode="w", format="mp4") as out:
                vs = out.add_stream(codec, rate=rate)
                vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
                if codec == "libx264":
                    vs.options = {"crf": str(crf), "preset": "veryfast"}
                else:
                    vs.bit_rate = 4_000_000
                astream = None
                if audio is not None:
                    astream = out.add_stream("aac", rate=int(sample_rate))
                    astream.layout = "mono"
                for img in frames:
                    for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        out.mux(packet)
                for packet in vs.encode():
                    out.mux(packet)
                if astream is not None:
                    chunk = 1024
                    for k, start in enumerate(range(0, len(audio), chunk)):
                        block = np.clip(audio[start:start + chunk], -1.0, 1.0)[None, :]
                        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="mono")
                        af.sample_rate, af.pts = int(sample_rate), k * chunk
                        for packet in astream.encode(af):
                            out.mux(packet)
                    for packet in astream.encode():
                        out.mux(packet)
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: writing the video failed ({type(e).__name__}: {e}); check free disk space "
                         "and write permission") from None
    return Path(path)


def probe_video(path: str | os.PathLike) -> dict[str, Any]:
    """Stream summary of a video file: frames, fps, size, codec, audio presence and rate."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        return {"num_frames": v.frames, "fps": float(v.average_rate), "width": v.codec_context.width,
                "height": v.codec_context.height, "video_codec": v.codec_context.name, "has_audio": a is not None,
                "audio_codec": a.codec_context.name if a else None, "sample_rate": a.rate if a else None,
                "duration_s": float(c.duration / av.time_base) if c.duration else None}


def read_video_frames(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames of the first video stream as uint8 (F, H, W, 3) RGB, and the stream's fps."""
    path = Path(path)
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
            fps = float(stream.average_rate)
    except (av.FFmpegError, OSError, IndexError) as e:
        raise MediaError(f"{path}: cannot read video frames ({type(e).__name__}: {e})") from None
    if not frames:
        raise MediaError(f"{path}: video has no frames")
    return np.stack(frames), fps


def read_video_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio track of a video as mono float32 at `sample_rate`."""
    return load_audio(path, sample_rate)


def result_summary(system: str, path: str | os.PathLike, frames: np.ndarray, fps: float, weights: str
                   ) -> dict[str, Any]:
    """What `jaxtalk generate --json` prints for a generated video (both products): paths, weights, frames, size."""
    path = Path(path)
    return {"system": system, "video": str(path), "config": str(path.with_suffix(".yaml")), "weights": str(weights),
            "frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "fps": float(fps)}


def write_outputs(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, fps: float, cfg: Any
                  ) -> dict[str, Path]:
    """A product's result on disk: `path` (mp4 with the audio) and the resolved config beside it (`.yaml`); both
    atomic, and the video is removed again if the config cannot be written, so a failure leaves neither.

    In a multi-process run (`jaxtalk.distributed`) only process 0 writes; the others return the same paths."""
    from jaxtalk import config as config_lib
    from jaxtalk import distributed

    path = Path(path)
    yaml_path = path.with_suffix(".yaml")
    if not distributed.is_main():
        return {"video": path, "config": yaml_path}
    video = write_video(path, frames, fps, audio)
    try:
        with atomic_path(yaml_path) as tmp:
            config_lib.save(cfg, tmp)
    except BaseException:
        video.unlink(missing_ok=True)
        raise
    return {"video": video, "config": yaml_path}
