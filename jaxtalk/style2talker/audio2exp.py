"""SadTalker audio2exp (Style2Talker's audio encoder): mel front end + `SimpleWrapperV2`.

Front end (numpy, OpenTalker/SadTalker `src/utils/audio.py` + `hparams.py` + `generate_batch.py`; research §7.1):
  16 kHz mono; the waveform is cut / zero-padded to a whole number of 25 fps video frames (640 samples each);
  pre-emphasis y[n] = x[n] − 0.97·x[n−1];  |STFT| with n_fft = win = 800 (periodic Hann), hop 200, centred frames
  (reflect padding of 400 samples, the default of the librosa 0.6/0.7 the originals pin) → 80 mel frames / s;
  Slaney mel filterbank (80 bins, 55–7600 Hz, Slaney area normalisation, librosa's default);
  S = 20·log10(max(1e-5, mel)) − 20 dB;  normalised symmetrically: clip(8·(S + 100)/100 − 4, −4, 4).
  Video frame i takes the 16 mel frames starting at int(80·(i − 2)/25) (truncated toward zero, as Python's `int`),
  indices clamped to the spectrogram, as an (80 mel bins, 16 mel frames) window.

Network (`SimpleWrapperV2`, torch keys `audio_encoder.{0..12}.conv_block.{0,1}.*`, `mapping1.*`): the Wav2Lip
audio encoder — 13 units of Conv2d + BatchNorm (+ identity residual) + ReLU over the (80, 16) window, NHWC here —
gives a 512-d vector per frame; `mapping1: Linear(512 + 64 + 1 → 64)` maps [audio, ref expression, blink ratio]
to the frame's 64-d expression. BatchNorm runs on its running statistics (eval mode) unless
`use_running_average=False`; they live in the 'batch_stats' collection.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.compile_cache import memoized
from jaxtalk.nn import layers

Dtype = Any

SAMPLE_RATE = 16000
FPS = 25
N_FFT = 800
HOP_SIZE = 200
WIN_SIZE = 800
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_STEP_SIZE = 16  # mel frames per video frame window (`syncnet_mel_step_size`)
MEL_FPS = SAMPLE_RATE / HOP_SIZE  # 80 mel frames per second
EXP_DIM = 64
BATCH_NORM_EPS = 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Mel front end


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels / 200 Hz), logarithmic above."""
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    safe = np.maximum(f, min_log_hz)
    return np.where(f >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@memoized("style2talker.audio2exp.mel_filterbank", maxsize=8)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, num_mels: int = NUM_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(num_mels, n_fft//2 + 1) float32 triangular filters on the Slaney mel scale, area-normalised (Slaney)."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"mel_filterbank: need 0 <= fmin < fmax <= sample_rate/2, got {fmin}, {fmax}, {sample_rate}")
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), num_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def preemphasis(wav: np.ndarray, k: float = PREEMPHASIS) -> np.ndarray:
    """y[n] = x[n] − k·x[n−1] (y[0] = x[0]), float64."""
    x = np.asarray(wav, np.float64)
    y = x.copy()
    y[1:] -= k * x[:-1]
    return y


def stft_magnitude(wav: np.ndarray, n_fft: int = N_FFT, hop: int = HOP_SIZE, win: int = WIN_SIZE) -> np.ndarray:
    """|STFT| (n_fft//2 + 1, 1 + len//hop) with centred frames (reflect padding n_fft//2) and a periodic Hann
    window of length `win` zero-padded to `n_fft` in the middle."""
    x = np.asarray(wav, np.float64)
    if x.ndim != 1:
        raise ValueError(f"stft_magnitude: expected a mono waveform (samples,), got shape {x.shape}")
    if x.shape[0] <= n_fft // 2:
        raise ValueError(f"stft_magnitude: need more than {n_fft // 2} samples for reflect padding, got {x.shape[0]}")
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    lpad = (n_fft - win) // 2
    window = np.pad(window, (lpad, n_fft - win - lpad))
    padded = np.pad(x, n_fft // 2, mode="reflect")
    num = 1 + (padded.shape[0] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(num)[:, None]
    return np.abs(np.fft.rfft(padded[idx] * window[None], axis=-1)).T


def melspectrogram(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """SadTalker `audio.melspectrogram(wav).T`: (mel frames, 80) float32 in [−4, 4]."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"melspectrogram: audio must be {SAMPLE_RATE} Hz mono (resample first), got {sample_rate} Hz")
    spec = stft_magnitude(preemphasis(wav))
    mel = mel_filterbank() @ spec
    min_level = np.exp(MIN_LEVEL_DB / 20.0 * np.log(10.0))
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    norm = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).T.astype(np.float32)


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> tuple[int, int]:
    """(audio length cut to whole video frames, number of video frames), as SadTalker's `parse_audio_length`."""
    per_frame = sample_rate / fps
    frames = int(num_samples / per_frame)
    return int(frames * per_frame), frames


def mel_windows(mel: np.ndarray, num_frames: int, fps: float = FPS, step: int = MEL_STEP_SIZE) -> np.ndarray:
    """(num_frames, 80, 16) float32: per video frame i the mel frames int(80·(i−2)/fps) … +15, clamped."""
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2:
        raise ValueError(f"mel_windows: mel must be (mel frames, mel bins), got shape {mel.shape}")
    i = np.arange(num_frames, dtype=np.float64)
    start = np.trunc(MEL_FPS * ((i - 2) / float(fps))).astype(np.int64)
    idx = np.clip(start[:, None] + np.arange(step)[None, :], 0, mel.shape[0] - 1)
    return np.ascontiguousarray(np.transpose(mel[idx], (0, 2, 1)))


def audio_to_mel_windows(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> np.ndarray:
    """SadTalker `get_data` audio path: waveform (samples,) → per-video-frame mel windows (F, 80, 16)."""
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"audio_to_mel_windows: expected mono audio (samples,), got shape {wav.shape}")
    length, frames = num_video_frames(wav.shape[0], sample_rate, fps)
    if frames < 1:
        raise ValueError(f"audio_to_mel_windows: {wav.shape[0]} samples is shorter than one video frame at {fps} fps")
    wav = wav[:length] if wav.shape[0] >= length else np.pad(wav, (0, length - wav.shape[0]))
    return mel_windows(melspectrogram(wav, sample_rate), frames, fps)


def blink_ratio(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(num_frames,) float32 eye-blink ratio: SadTalker's `generate_blink_seq_randomly` with a numpy generator —
    gaps drawn uniformly from [min(10, F), min(F//2, 70)), each followed by a 0.5/0.9/1/0.9/0.5 pulse; zeros when
    F <= 20."""
    ratio = np.zeros(num_frames, np.float32)
    if num_frames <= 20:
        return ratio
    pulse = np.array([0.5, 0.9, 1.0, 0.9, 0.5], np.float32)
    lo, hi = min(10, num_frames), min(int(num_frames / 2), 70)
    frame = 0
    while frame < num_frames:
        start = int(rng.integers(lo, hi))
        if frame + start + 5 <= num_frames - 1:
            ratio[frame + start: frame + start + 5] = pulse
            frame += start + 5
        else:
            break
    return ratio


# ----------------------------------------------------------------------------------------------------------------
# Network

# (out channels at full width, kernel, stride, padding, residual) of the 13 units.
ENCODER_UNITS: tuple[tuple[int, int, tuple[int, int], int, bool], ...] = (
    (32, 3, (1, 1), 1, False), (32, 3, (1, 1), 1, True), (32, 3, (1, 1), 1, True),
    (64, 3, (3, 1), 1, False), (64, 3, (1, 1), 1, True), (64, 3, (1, 1), 1, True),
    (128, 3, (3, 3), 1, False), (128, 3, (1, 1), 1, True), (128, 3, (1, 1), 1, True),
    (256, 3, (3, 2), 1, False), (256, 3, (1, 1), 1, True),
    (512, 3, (1, 1), 0, False), (512, 1, (1, 1), 0, False),
)


class ConvUnit(nn.Module):
    """Wav2Lip `Conv2d`: conv_block.0 (Conv2d) → conv_block.1 (BatchNorm2d) (+ input) → ReLU."""

    features: int
    kernel: int
    stride: tuple[int, int]
    padding: int
    residual: bool
    use_running_average: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = layers.conv(self.features, (self.kernel, self.kernel), strides=self.stride, padding=self.padding,
                        name="conv_block_0", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        y = nn.BatchNorm(
            use_running_average=self.use_running_average, momentum=0.9, epsilon=BATCH_NORM_EPS, dtype=self.dtype,
            param_dtype=self.param_dtype, use_fast_variance=False,
            scale_init=layers.partitioned(nn.initializers.ones_init(), ("norm",)),
            bias_init=layers.partitioned(nn.initializers.zeros_init(), ("norm",)), name="conv_block_1",
        )(y)
        if self.residual:
            y = y + x
        return nn.relu(y)


class SimpleWrapperV2(nn.Module):
    """`apply(v, mels[N,80,16], ref[N,64], ratio[N]) → exp[N,64]`; `width_scale` scales the conv widths
    (1.0 official; the golden fixture uses 0.125)."""

    width_scale: float = 1.0
    use_running_average: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def widths(self) -> list[int]:
        return [int(c * self.width_scale) for c, *_ in ENCODER_UNITS]

    @nn.compact
    def __call__(self, mels: jax.Array, ref: jax.Array, ratio: jax.Array) -> jax.Array:
        if mels.ndim == 3:
            mels = mels[..., None]
        if mels.ndim != 4 or mels.shape[1:] != (NUM_MELS, MEL_STEP_SIZE, 1):
            raise ValueError(f"SimpleWrapperV2: mels must be (N, {NUM_MELS}, {MEL_STEP_SIZE}) mel windows, "
                             f"got {mels.shape}")
        n = mels.shape[0]
        ref = ref.reshape(n, -1)
        ratio = ratio.reshape(n, -1)
        if ref.shape[1] != EXP_DIM or ratio.shape[1] != 1:
            raise ValueError(f"SimpleWrapperV2: ref must give {EXP_DIM} and ratio 1 value per window, got "
                             f"{ref.shape} and {ratio.shape}")
        x = mels.astype(self.dtype)
        for i, (width, (_, k, stride, pad, res)) in enumerate(zip(self.widths(), ENCODER_UNITS)):
            x = ConvUnit(width, k, stride, pad, res, self.use_running_average, self.dtype, self.param_dtype,
                         name=f"audio_encoder_{i}")(x)
        x = x.reshape(n, -1)
        h = jnp.concatenate([x, ref.astype(x.dtype), ratio.astype(x.dtype)], axis=-1)
        return layers.dense(EXP_DIM, name="mapping1", axes=("mlp", None), dtype=self.dtype,
                            param_dtype=self.param_dtype)(h)


class FoldedEncoder(NamedTuple):
    """SimpleWrapperV2 for inference (`fold_batch_norm`): per unit the Conv2d kernel and bias with the eval-mode
    BatchNorm folded in, then mapping1's kernel and bias."""

    kernels: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    mapping_kernel: jax.Array
    mapping_bias: jax.Array


def fold_batch_norm(module: SimpleWrapperV2, variables: Any) -> FoldedEncoder:
    """Fold every unit's running-statistics BatchNorm into its convolution: BN(conv(x) + b) = conv'(x) + b' with
    W' = W·s, b' = (b − mean)·s + beta, s = gamma / sqrt(var + eps) — the same sums up to float rounding, one pass
    over each activation fewer."""
    dt = module.dtype
    params, stats = nn.unbox(variables["params"]), variables["batch_stats"]
    kernels, biases = [], []
    for i in range(len(ENCODER_UNITS)):
        conv, bn = params[f"audio_encoder_{i}"]["conv_block_0"], params[f"audio_encoder_{i}"]["conv_block_1"]
        st = stats[f"audio_encoder_{i}"]["conv_block_1"]
        scale = bn["scale"].astype(jnp.float32) * jax.lax.rsqrt(st["var"].astype(jnp.float32) + BATCH_NORM_EPS)
        kernels.append((conv["kernel"].astype(jnp.float32) * scale).astype(dt))
        biases.append(((conv["bias"].astype(jnp.float32) - st["mean"]) * scale + bn["bias"]).astype(dt))
    m = params["mapping1"]
    return FoldedEncoder(tuple(kernels), tuple(biases), m["kernel"].astype(dt), m["bias"].astype(dt))


def folded_forward(folded: FoldedEncoder, mels: jax.Array, ref: jax.Array, ratio: jax.Array) -> jax.Array:
    """`SimpleWrapperV2.apply` in eval mode from `fold_batch_norm`'s weights: mels (N, 80, 16), ref (N, 64),
    ratio (N,) → (N, 64)."""
    dt = folded.mapping_kernel.dtype
    x = mels.astype(dt)[..., None]
    for (_, _, stride, pad, residual), kernel, bias in zip(ENCODER_UNITS, folded.kernels, folded.biases):
        y = jax.lax.conv_general_dilated(x, kernel, stride, [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
        x = nn.relu(y + x if residual else y)
    n = x.shape[0]
    h = jnp.concatenate([x.reshape(n, -1), ref.astype(dt), ratio.reshape(n, 1).astype(dt)], axis=-1)
    return jnp.dot(h, folded.mapping_kernel) + folded.mapping_bias


AUDIO2EXP_CHUNK = 32  # frames per encoder call: keeps the 80x16x32 activations (164 KB a frame) in cache


def audio2exp(module: SimpleWrapperV2, variables: Any, indiv_mels: jax.Array, ref: jax.Array,
              ratio: jax.Array | None = None, *, chunk: int | None = AUDIO2EXP_CHUNK) -> jax.Array:
    """SadTalker / Style2Talker `AudioEncoder.forward`: per-frame expression (B, T, 64) from mel windows
    (B, T, 80, 16), the identity's expression `ref` (B, ≥64) or (B, 1, ≥64) — its first 64 values are used,
    repeated over T — and the blink ratio (B, T) (zeros when None). Traceable; wrap in `jax.jit`.

    With running-average BatchNorm (inference) the BatchNorms are folded into the convolutions (`fold_batch_norm`)
    and every frame is independent, so the B·T frames go through the encoder `chunk` at a time under `lax.map`
    (None: all at once); the result is the same per frame, while the activations of one chunk stay in cache. The
    encoder is ~188 MFLOP a frame at full width (8x Style-E's work per frame): it is most of this stage's time."""
    indiv_mels = jnp.asarray(indiv_mels)
    if indiv_mels.ndim == 5 and indiv_mels.shape[2] == 1:  # torch layout (B, T, 1, 80, 16)
        indiv_mels = indiv_mels[:, :, 0]
    if indiv_mels.ndim != 4:
        raise ValueError(f"audio2exp: indiv_mels must be (batch, frames, 80, 16), got {indiv_mels.shape}")
    b, t = indiv_mels.shape[:2]
    ref = jnp.asarray(ref)
    ref = ref.reshape(b, -1)[:, :EXP_DIM] if ref.ndim == 3 and ref.shape[1] == 1 else ref[..., :EXP_DIM]
    if ref.shape != (b, EXP_DIM):
        raise ValueError(f"audio2exp: ref must be (batch={b}, >= {EXP_DIM}) or (batch, 1, >= {EXP_DIM}), "
                         f"got {ref.shape}")
    ratio = jnp.zeros((b, t), jnp.float32) if ratio is None else jnp.asarray(ratio, jnp.float32).reshape(b, t)
    ref_rep = jnp.broadcast_to(ref[:, None, :], (b, t, EXP_DIM))
    mels = indiv_mels.reshape(b * t, *indiv_mels.shape[2:])
    refs, ratios = ref_rep.reshape(b * t, EXP_DIM), ratio.reshape(b * t)
    n = b * t
    if not module.use_running_average:  # training-mode BatchNorm: batch statistics, one call
        return module.apply(variables, mels, refs, ratios).reshape(b, t, EXP_DIM)
    if mels.shape[1:] != (NUM_MELS, MEL_STEP_SIZE):
        raise ValueError(f"audio2exp: mel windows must be ({NUM_MELS}, {MEL_STEP_SIZE}), got {indiv_mels.shape}")
    folded = fold_batch_norm(module, variables)
    if chunk is None or chunk >= n:
        return folded_forward(folded, mels, refs, ratios).reshape(b, t, EXP_DIM)
    k = -(-n // chunk)
    pad = k * chunk - n
    padded = [jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)) for a in (mels, refs, ratios)]
    out = jax.lax.map(lambda a: folded_forward(folded, *a), tuple(a.reshape(k, chunk, *a.shape[1:]) for a in padded))
    return out.reshape(k * chunk, EXP_DIM)[:n].reshape(b, t, EXP_DIM)
