"""The speech-encoder config both products share, and Whisper-tiny audio features per video frame, as SVP's audio cross-attention consumes them (1920 = 5 x 384).

Steps (the MuseTalk / EchoMimic recipe, research/svp_architecture.md §4):

1. `whisper_audio_states`: 16 kHz audio is cut into 30 s segments; each is padded to 30 s, turned into log-mel
   features and encoded; the S = L+1 hidden states of every 20 ms frame are kept, segments are concatenated in
   time and trimmed to `num_samples // 320` frames (the audio's length at 50 Hz). The last state has the final
   LayerNorm (`final_layer_norm=True`, transformers' `output_hidden_states`, MuseTalk v1.5) or not
   (`False`, the openai-whisper `include_embeddings` fork of MuseTalk v1 / EchoMimic). Result (T, S, D).
2. `frame_windows`: video frame i at `fps` gets a window of W = 2 * (left + right + 1) audio frames (10 by
   default) around audio frame i * 50 / fps. Two alignment rules:
   - `"musetalk"` (v1.5 `get_whisper_chunk`): start = floor(i * (50 / int(fps))) - floor(50 / int(fps)) * left,
     frames outside the audio are zeros;
   - `"echomimic"` (`get_sliced_feature`): start = int(i * 50 / fps) - 2 * left, indices clamped to the audio.
   At 25 fps both give audio frames 2i-4 ... 2i+5. Result (F, W, S, D).
3. `as_tokens`: `"frames"` -> (F, W, S * D), e.g. (F, 10, 1920): the five states concatenated on channels per
   audio frame; `"states"` -> (F, W * S, D), e.g. (F, 50, 384), ordered (audio frame, state) as MuseTalk /
   EchoMimic reshape it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import numpy as np

from jaxtalk import config as cfg
from jaxtalk.backbones.wav2vec2 import Wav2Vec2Config
from jaxtalk.backbones.whisper import (
    HOP_LENGTH,
    N_SAMPLES,
    SAMPLE_RATE,
    WhisperEncoder,
    WhisperEncoderConfig,
    log_mel_spectrogram,
)
from jaxtalk.compile_cache import memoized

AUDIO_FPS = 50  # whisper encoder frames per second (20 ms)
SAMPLES_PER_FRAME = SAMPLE_RATE // AUDIO_FPS  # 320
Rule = Literal["musetalk", "echomimic"]


@dataclasses.dataclass(frozen=True)
class AudioEncoderConfig:
    """The frozen speech encoder whose 50 Hz states feed SVP's audio projection and style extractor, and whose
    features the trainers cache per clip (one config for sampling and training).

    `wav2vec2`: V-Express (wav2vec2-base-960h `last_hidden_state`, 768-d at 50 Hz, waveform normalised first).
    `whisper`: SVP (Whisper-Tiny, all L+1 hidden states concatenated: 5 x 384 = 1920-d at 50 Hz).
    `logmel`: no learned encoder: Whisper's log-mel with two 10 ms frames stacked per 20 ms (2 x n_mels at 50 Hz,
    `logmel_frames`); the models trained on the synthetic faces use it.
    `checkpoint`: a `whisper_encoder` / `wav2vec2` interop source (file or converted folder) for the encoder's
    weights; None leaves them to the model bundle (sampling) or draws them from `seed` (training tests).
    """

    encoder: Literal["wav2vec2", "whisper", "logmel"] = "whisper"
    wav2vec2: Wav2Vec2Config = cfg.field(default_factory=Wav2Vec2Config)
    whisper: WhisperEncoderConfig = cfg.field(default_factory=WhisperEncoderConfig)
    normalize: bool = cfg.field(True, doc="wav2vec2: zero-mean / unit-variance waveform (Wav2Vec2Processor)")
    whisper_final_layer_norm: bool = cfg.field(True, doc="whisper: last state after the final LayerNorm (HF)")
    checkpoint: str | None = None
    seed: int = cfg.field(0, min=0, doc="random weights when checkpoint is None (training tests)")
    n_mels: int = cfg.field(80, min=8, doc="logmel: mel bands (features are 2 x n_mels wide)")

    @property
    def feature_dim(self) -> int:
        """Channels per 50 Hz audio frame."""
        if self.encoder == "logmel":
            return 2 * self.n_mels
        if self.encoder == "wav2vec2":
            return self.wav2vec2.width
        return (self.whisper.layers + 1) * self.whisper.width


def logmel_frames(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """16 kHz mono audio (N,) -> float32 (N // 320, 2 * n_mels): Whisper's log-mel spectrogram (10 ms hop), two
    consecutive frames stacked per 20 ms, so the features sit on the same 50 Hz grid as the encoders' states.

    A fixed signal-processing front end with no learned weights: what it carries about the speech (formants,
    energy, voicing) is real by construction, and the trained audio projection learns what to read from it.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    frames = audio.shape[0] // SAMPLES_PER_FRAME
    if frames < 1:
        raise ValueError(f"audio of {audio.shape[0]} samples is shorter than one 20 ms frame ({SAMPLES_PER_FRAME})")
    mel = log_mel_spectrogram(audio, n_mels=n_mels, n_samples=frames * SAMPLES_PER_FRAME)[0]  # (>= 2T, n_mels)
    mel = np.pad(mel, ((0, max(0, 2 * frames - mel.shape[0])), (0, 0)), mode="edge")[: 2 * frames]
    return mel.reshape(frames, 2 * n_mels).astype(np.float32)


def whisper_audio_states(module: WhisperEncoder, params: Any, audio: np.ndarray, *, final_layer_norm: bool = True,
                         batch_size: int = 4) -> np.ndarray:
    """Per-20 ms hidden states of 16 kHz mono audio (N,) -> float32 (N // 320, L+1, D), 30 s segment by segment."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 16 kHz audio of shape (samples,), got {audio.shape}")
    total = audio.shape[0] // SAMPLES_PER_FRAME
    if total == 0:
        raise ValueError(f"audio of {audio.shape[0]} samples is shorter than one 20 ms whisper frame")
    if module.config.max_positions * 2 * HOP_LENGTH != N_SAMPLES:
        raise ValueError(f"whisper_audio_states needs an encoder with 1500 positions (30 s), got "
                         f"{module.config.max_positions}")
    segments = [audio[i:i + N_SAMPLES] for i in range(0, audio.shape[0], N_SAMPLES)]
    encode = _encoder_fn(module, final_layer_norm)
    outputs = []
    for start in range(0, len(segments), batch_size):
        mel = log_mel_spectrogram(np.stack([_pad(s) for s in segments[start:start + batch_size]]))
        states = np.asarray(encode(params, mel), np.float32)  # (S, b, 1500, D)
        outputs.extend(np.moveaxis(states, 0, 2))  # b x (1500, S, D)
    return np.concatenate(outputs, axis=0)[:total]


@memoized("backbones.whisper_encoder", maxsize=8)
def _encoder_fn(module: WhisperEncoder, final_layer_norm: bool):
    """One jitted encoder per (module, variant), so repeated calls do not recompile."""
    return jax.jit(lambda p, x: module.apply({"params": p}, x, final_layer_norm=final_layer_norm))


def _pad(segment: np.ndarray) -> np.ndarray:
    return np.pad(segment, (0, N_SAMPLES - segment.shape[0]))


def frame_indices(num_frames: int, fps: float, num_audio_frames: int, *, rule: Rule = "musetalk", left: int = 2,
                  right: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(indices (F, W) into the audio frames, valid (F, W) bool) for each video frame; invalid entries are zeros
    (MuseTalk's padding) — EchoMimic clamps instead, so all its entries are valid."""
    if fps <= 0 or num_frames < 0:
        raise ValueError(f"need fps > 0 and num_frames >= 0, got fps={fps}, num_frames={num_frames}")
    width = 2 * (left + right + 1)
    offsets = np.arange(width)
    if rule == "musetalk":
        multiplier = AUDIO_FPS / int(fps)
        pad = math.floor(multiplier) * left
        starts = np.array([math.floor(i * multiplier) - pad for i in range(num_frames)], np.int64)
        idx = starts[:, None] + offsets[None, :]
        valid = (idx >= 0) & (idx < num_audio_frames)
        return np.clip(idx, 0, max(num_audio_frames - 1, 0)), valid
    if rule == "echomimic":
        starts = np.array([int(i * AUDIO_FPS / fps) - 2 * left for i in range(num_frames)], np.int64)
        idx = np.clip(starts[:, None] + offsets[None, :], 0, max(num_audio_frames - 1, 0))
        return idx, np.ones_like(idx, dtype=bool)
    raise ValueError(f"unknown alignment rule {rule!r}; choose 'musetalk' or 'echomimic'")


def frame_windows(states: np.ndarray, fps: float, num_frames: int | None = None, *, rule: Rule = "musetalk",
                  left: int = 2, right: int = 2) -> np.ndarray:
    """Audio states (T, S, D) -> per-video-frame windows (F, W, S, D); F defaults to the audio's length at `fps`
    (floor(T * fps / 50))."""
    states = np.asarray(states)
    if states.ndim != 3:
        raise ValueError(f"expected audio states (frames, states, width), got shape {states.shape}")
    t = states.shape[0]
    if num_frames is None:
        num_frames = int(math.floor(t * fps / AUDIO_FPS))
    idx, valid = frame_indices(num_frames, fps, t, rule=rule, left=left, right=right)
    return np.where(valid[..., None, None], states[idx], np.zeros((), states.dtype))


def as_tokens(windows: np.ndarray, layout: Literal["frames", "states"] = "frames") -> np.ndarray:
    """(F, W, S, D) -> (F, W, S*D) for `"frames"` or (F, W*S, D) for `"states"`."""
    f, w, s, d = windows.shape
    if layout == "frames":
        return windows.reshape(f, w, s * d)
    if layout == "states":
        return windows.reshape(f, w * s, d)
    raise ValueError(f"unknown token layout {layout!r}; choose 'frames' or 'states'")


def svp_audio_features(module: WhisperEncoder, params: Any, audio: np.ndarray, fps: float,
                       num_frames: int | None = None, *, rule: Rule = "musetalk", final_layer_norm: bool = True,
                       layout: Literal["frames", "states"] = "frames", left: int = 2, right: int = 2) -> np.ndarray:
    """Audio (N,) at 16 kHz -> per-video-frame whisper tokens, (F, 10, 1920) for whisper-tiny by default."""
    states = whisper_audio_states(module, params, audio, final_layer_norm=final_layer_norm)
    return as_tokens(frame_windows(states, fps, num_frames, rule=rule, left=left, right=right), layout)
