"""Whisper audio encoder and its log-mel front end.

Front end (`log_mel_spectrogram`, numpy, equal to transformers' `WhisperFeatureExtractor`): audio at 16 kHz is
zero-padded or trimmed to 30 s, a centred STFT (reflect padding, n_fft 400, hop 160, periodic Hann window) gives
the power spectrum, the last frame is dropped (3000 frames), 80 slaney mel filters over 0-8 kHz are applied, then
`log10(max(mel, 1e-10))`, clamped below at its maximum - 8, and mapped by `(x + 4) / 4`. Output is channels-last
(B, 3000, n_mels), the jaxtalk sequence layout.

Encoder (`WhisperEncoder`): conv1 (k3, pad 1) + GELU, conv2 (k3, stride 2, pad 1) + GELU, plus the fixed sinusoidal
`embed_positions` table (kept as a param so checkpoints round trip), pre-LN layers (q/v/out projections biased,
k_proj without bias), final `layer_norm`. It returns every hidden state stacked (L+1, B, T, D): the embedding, the
outputs of layers 1..L-1, and the last layer's output after `layer_norm` (transformers' `output_hidden_states`),
or before it with `final_layer_norm=False` (the openai-whisper `include_embeddings` fork used by MuseTalk v1 and
EchoMimic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.nn import layers, transformer

Dtype = Any

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames -> 1500 encoder frames (50 Hz)


# ----------------------------------------------------------------------------------------------------------------
# log-mel front end


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above (27 mel per factor 6.4)."""
    f = np.asarray(f, np.float64)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(f >= 1000.0, log_part, 3.0 * f / 200.0)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0), 200.0 * m / 3.0)


def mel_filters(n_mels: int = 80, *, n_fft: int = N_FFT, sampling_rate: int = SAMPLE_RATE, f_min: float = 0.0,
                f_max: float = 8000.0) -> np.ndarray:
    """Slaney-normalised triangular mel filters on the slaney scale, (n_fft // 2 + 1, n_mels) float64."""
    fft_freqs = np.linspace(0.0, sampling_rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2))
    widths = np.diff(edges)
    offsets = edges[None, :] - fft_freqs[:, None]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """Zero-pad or cut the last axis to `length` samples."""
    audio = np.asarray(audio)
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])])


def log_mel_spectrogram(audio: np.ndarray, *, n_mels: int = 80, n_samples: int | None = N_SAMPLES,
                        sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Whisper's log-mel features of 16 kHz mono audio (N,) or (B, N) -> float32 (B, frames, n_mels).

    `n_samples`: pad / trim length (30 s by default, giving 3000 frames; None keeps the audio's own length).
    """
    if sampling_rate != SAMPLE_RATE:
        raise ValueError(f"whisper features need {SAMPLE_RATE} Hz audio, got {sampling_rate} Hz; resample first")
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise ValueError(f"expected mono audio (N,) or a batch (B, N), got shape {audio.shape}")
    if n_samples is not None:
        audio = pad_or_trim(audio, n_samples)
    if audio.shape[-1] <= N_FFT // 2:
        raise ValueError(f"audio of {audio.shape[-1]} samples is too short for a centred {N_FFT}-point STFT")
    x = np.pad(audio.astype(np.float64), [(0, 0), (N_FFT // 2, N_FFT // 2)], mode="reflect")
    n_frames = 1 + (x.shape[-1] - N_FFT) // HOP_LENGTH
    index = np.arange(N_FFT)[None, :] + HOP_LENGTH * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(x[:, index] * window, n=N_FFT, axis=-1)) ** 2  # (B, frames, bins)
    mel = power[:, :-1] @ mel_filters(n_mels, sampling_rate=sampling_rate)  # drop the last frame
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# encoder


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """Sizes of a Whisper audio encoder (defaults: whisper-tiny)."""

    n_mels: int = 80
    width: int = 384
    heads: int = 6
    layers: int = 4
    ffn_dim: int = 1536
    max_positions: int = 1500
    activation: str = "gelu"


WHISPER_PRESETS: dict[str, WhisperEncoderConfig] = {
    "tiny": WhisperEncoderConfig(),
    "base": WhisperEncoderConfig(width=512, heads=8, layers=6, ffn_dim=2048),
    "small": WhisperEncoderConfig(width=768, heads=12, layers=12, ffn_dim=3072),
    "medium": WhisperEncoderConfig(width=1024, heads=16, layers=24, ffn_dim=4096),
    "large-v2": WhisperEncoderConfig(width=1280, heads=20, layers=32, ffn_dim=5120),
    "large-v3": WhisperEncoderConfig(n_mels=128, width=1280, heads=20, layers=32, ffn_dim=5120),
}

def config_from_dict(config: Mapping[str, Any]) -> WhisperEncoderConfig:
    """transformers `WhisperConfig.to_dict()` or openai-whisper `dims` (`n_mels`, `n_audio_state`, ...; the openai
    MLP is always 4 x width)."""
    if "d_model" in config:
        return WhisperEncoderConfig(
            n_mels=int(config.get("num_mel_bins", 80)), width=int(config["d_model"]),
            heads=int(config["encoder_attention_heads"]), layers=int(config["encoder_layers"]),
            ffn_dim=int(config["encoder_ffn_dim"]), max_positions=int(config.get("max_source_positions", 1500)),
            activation=str(config.get("activation_function", "gelu")),
        )
    if "n_audio_state" in config:
        width = int(config["n_audio_state"])
        return WhisperEncoderConfig(
            n_mels=int(config["n_mels"]), width=width, heads=int(config["n_audio_head"]),
            layers=int(config["n_audio_layer"]), ffn_dim=4 * width, max_positions=int(config["n_audio_ctx"]),
        )
    raise ValueError("whisper config must be transformers' WhisperConfig.to_dict() (d_model, encoder_layers, ...) "
                     "or openai-whisper dims (n_mels, n_audio_state, n_audio_head, n_audio_layer, n_audio_ctx)")


def config_from_state(state: Mapping[str, np.ndarray]) -> WhisperEncoderConfig:
    """Sizes read off canonical (transformers WhisperEncoder) weights; heads = width / 64 as every Whisper."""
    needed = ("conv1.weight", "embed_positions.weight", "layers.0.fc1.weight")
    if any(k not in state for k in needed):
        raise ValueError(f"cannot infer the whisper config: {[k for k in needed if k not in state]} missing; "
                         "pass transformers' WhisperConfig.to_dict() or openai-whisper dims as config")
    width, n_mels = (int(s) for s in state["conv1.weight"].shape[:2])
    if width % 64:
        raise ValueError(f"cannot infer the head count of a width-{width} whisper encoder; pass a config")
    return WhisperEncoderConfig(
        n_mels=n_mels, width=width, heads=width // 64,
        layers=1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers.")),
        ffn_dim=int(state["layers.0.fc1.weight"].shape[0]), max_positions=int(state["embed_positions.weight"].shape[0]),
    )


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's fixed positional table: [sin | cos] of positions times geometric inverse timescales."""
    if channels % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {channels}")
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class WhisperEncoderLayer(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + fc2(act(fc1(ln(x))))."""

    heads: int
    ffn_dim: int
    activation: str = "gelu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.layer_norm(name="self_attn_layer_norm", **kw)(x)
        x = x + transformer.SelfAttention(self.heads, key_bias=False, name="self_attn", **kw)(h)
        h = layers.layer_norm(name="final_layer_norm", **kw)(x)
        x = x + transformer.feed_forward(h, self.ffn_dim, self.activation, **kw)
        return layers.constrain(x, ("act_batch", "act_length", "act_embed"))


class WhisperEncoder(nn.Module):
    """`apply(v, features[B, T_mel, n_mels], final_layer_norm=True) -> hidden states (L+1, B, T_mel/2, D)`.

    `T_mel` is 3000 for the released models (30 s); shorter inputs use the first positions of the table (the
    originals require exactly 3000).
    """

    config: WhisperEncoderConfig = WhisperEncoderConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, final_layer_norm: bool = True) -> jax.Array:
        c = self.config
        transformer.activation(c.activation, "whisper")
        if features.ndim != 3 or features.shape[-1] != c.n_mels:
            raise ValueError(f"whisper_encoder expects log-mel features (batch, frames, {c.n_mels}) channels-last, "
                             f"got {features.shape}; transformers' (B, n_mels, frames) needs a transpose")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.gelu_exact(layers.conv(c.width, (3,), padding=1, name="conv1", **kw)(features))
        x = layers.gelu_exact(layers.conv(c.width, (3,), strides=2, padding=1, name="conv2", **kw)(x))
        if x.shape[1] > c.max_positions:
            raise ValueError(f"whisper_encoder: {features.shape[1]} mel frames give {x.shape[1]} positions, more than "
                             f"the {c.max_positions} of the table; split the audio into 30 s segments")
        table = nn.Embed(c.max_positions, c.width, dtype=self.dtype, param_dtype=self.param_dtype,
                         embedding_init=layers.partitioned(
                             lambda key, shape, dtype: jnp.asarray(sinusoids(*shape), dtype), (None, "embed")),
                         name="embed_positions")
        x = x + table.embedding[: x.shape[1]].astype(x.dtype)[None]
        states = [x]
        for i in range(c.layers):
            x = WhisperEncoderLayer(c.heads, c.ffn_dim, c.activation, name=f"layers_{i}", **kw)(x)
            states.append(x)
        last = layers.layer_norm(name="layer_norm", **kw)(x)
        if final_layer_norm:
            states[-1] = last
        return jnp.stack(states)

    def init_params(self, rng: jax.Array) -> Any:
        """Randomly initialised (boxed) variables."""
        return self.init(rng, jnp.zeros((1, 2 * self.config.max_positions, self.config.n_mels)))
