"""Formant speech synthesis for the synthetic talking faces.

Speech is a random sequence of consonant+vowel syllables grouped into words and phrases. A glottal pulse train
(Rosenberg pulse, differentiated for lip radiation) at a pitch contour shaped by the emotion excites a cascade of
three time-varying formant resonators (Klatt-style two-pole sections); fricatives and stop bursts add filtered
noise. The same phoneme timeline produces the mouth visemes, so lips, jaw and sound stay in sync:
bilabials (p, b, m) close the lips, open vowels (a, ae) open the jaw, rounded vowels (o, u) and /w/ pucker.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import signal

SAMPLE_RATE = 16000
CONTROL_RATE = 200  # Hz; phoneme parameters are defined on 5 ms hops and interpolated to samples
_HOP = SAMPLE_RATE // CONTROL_RATE


@dataclasses.dataclass(frozen=True)
class Phoneme:
    """One phoneme: sound class, source, formants (Hz) and mouth shape (jaw, press, stretch, pucker)."""

    name: str
    kind: str  # vowel | stop | nasal | fricative | approximant
    voiced: bool
    formants: tuple[float, float, float]
    noise_hz: float  # centre of the frication / burst noise (0: none)
    viseme: tuple[float, float, float, float]


# Vowel formants: adult averages (Peterson & Barney style); visemes from the jaw height and lip rounding.
PHONEMES: tuple[Phoneme, ...] = (
    Phoneme("a", "vowel", True, (730, 1090, 2440), 0, (1.00, 0.0, 0.10, 0.00)),
    Phoneme("ae", "vowel", True, (660, 1720, 2410), 0, (0.85, 0.0, 0.35, 0.00)),
    Phoneme("e", "vowel", True, (530, 1840, 2480), 0, (0.55, 0.0, 0.45, 0.00)),
    Phoneme("i", "vowel", True, (270, 2290, 3010), 0, (0.22, 0.0, 0.75, 0.00)),
    Phoneme("o", "vowel", True, (570, 840, 2410), 0, (0.60, 0.0, 0.00, 0.75)),
    Phoneme("u", "vowel", True, (300, 870, 2240), 0, (0.20, 0.0, 0.00, 1.00)),
    Phoneme("@", "vowel", True, (640, 1190, 2390), 0, (0.55, 0.0, 0.15, 0.00)),
    Phoneme("p", "stop", False, (400, 1100, 2400), 1200, (0.00, 1.0, 0.00, 0.00)),
    Phoneme("b", "stop", True, (300, 1100, 2400), 1200, (0.00, 1.0, 0.00, 0.00)),
    Phoneme("m", "nasal", True, (250, 1100, 2300), 0, (0.00, 1.0, 0.00, 0.00)),
    Phoneme("f", "fricative", False, (400, 1400, 2500), 6500, (0.10, 0.55, 0.10, 0.00)),
    Phoneme("v", "fricative", True, (300, 1400, 2500), 6500, (0.10, 0.55, 0.10, 0.00)),
    Phoneme("t", "stop", False, (400, 1700, 2600), 4200, (0.20, 0.0, 0.20, 0.00)),
    Phoneme("d", "stop", True, (300, 1700, 2600), 4200, (0.20, 0.0, 0.20, 0.00)),
    Phoneme("n", "nasal", True, (250, 1700, 2600), 0, (0.18, 0.0, 0.20, 0.00)),
    Phoneme("s", "fricative", False, (400, 1700, 2600), 5500, (0.15, 0.0, 0.35, 0.00)),
    Phoneme("z", "fricative", True, (300, 1700, 2600), 5500, (0.15, 0.0, 0.35, 0.00)),
    Phoneme("sh", "fricative", False, (400, 1800, 2500), 3000, (0.15, 0.0, 0.00, 0.60)),
    Phoneme("l", "approximant", True, (360, 1300, 2700), 0, (0.22, 0.0, 0.15, 0.00)),
    Phoneme("r", "approximant", True, (420, 1300, 1600), 0, (0.25, 0.0, 0.00, 0.40)),
    Phoneme("w", "approximant", True, (300, 700, 2200), 0, (0.12, 0.0, 0.00, 0.90)),
    Phoneme("k", "stop", False, (400, 1900, 2500), 2200, (0.30, 0.0, 0.10, 0.00)),
    Phoneme("g", "stop", True, (300, 1900, 2500), 2200, (0.30, 0.0, 0.10, 0.00)),
    Phoneme("h", "fricative", False, (600, 1400, 2500), 1500, (0.30, 0.0, 0.00, 0.00)),
)
PHONEME_INDEX: dict[str, int] = {p.name: i for i, p in enumerate(PHONEMES)}
VOWELS = tuple(i for i, p in enumerate(PHONEMES) if p.kind == "vowel")
CONSONANTS = tuple(i for i, p in enumerate(PHONEMES) if p.kind != "vowel")
BILABIALS = tuple(PHONEME_INDEX[n] for n in ("p", "b", "m"))
OPEN_VOWELS = tuple(PHONEME_INDEX[n] for n in ("a", "ae"))
ROUNDED_VOWELS = tuple(PHONEME_INDEX[n] for n in ("o", "u"))
SILENCE = -1
# Relative frequency of each consonant in the random syllables (rough English rates; bilabials kept common
# because they are the most visible visemes).
_CONSONANT_WEIGHTS = {"p": 1.2, "b": 1.2, "m": 1.5, "f": 0.8, "v": 0.6, "t": 1.5, "d": 1.2, "n": 1.5, "s": 1.3,
                      "z": 0.5, "sh": 0.5, "l": 1.0, "r": 1.0, "w": 0.8, "k": 1.1, "g": 0.6, "h": 0.6}
_CONSONANT_P = np.array([_CONSONANT_WEIGHTS[PHONEMES[i].name] for i in CONSONANTS])
_CONSONANT_P = _CONSONANT_P / _CONSONANT_P.sum()

_VISEMES = np.array([p.viseme for p in PHONEMES] + [(0.0, 0.0, 0.0, 0.0)], np.float32)  # last row: silence
_BANDWIDTHS = np.array([80.0, 100.0, 150.0])


@dataclasses.dataclass(frozen=True)
class Prosody:
    """Speaker and emotion dependent speech settings."""

    f0: float = 120.0  # mean pitch, Hz
    f0_range: float = 0.18  # relative pitch excursion of accents and declination
    energy: float = 1.0  # loudness factor (RMS scale)
    rate: float = 4.5  # syllables per second
    tremor: float = 0.0  # relative 6 Hz pitch tremor (fear)


@dataclasses.dataclass
class Speech:
    """Synthesised speech and its frame-rate descriptors."""

    audio: np.ndarray  # (S,) float32 in [-1, 1], 16 kHz
    phonemes: np.ndarray  # (F,) int32 phoneme index at each frame centre, -1 for silence
    visemes: np.ndarray  # (F, 4) float32 smoothed (jaw_open, lip_press, lip_stretch, lip_pucker)
    stress: np.ndarray  # (F,) float32 accent envelope in [0, 1] (drives brows and nods)
    f0: np.ndarray  # (F,) float32 pitch at the frame centre, 0 where unvoiced


def _syllable_timeline(rng: np.random.Generator, duration: float, rate: float) -> list[tuple[int, float, float, float]]:
    """Random (phoneme, start_s, end_s, stress) segments: words of 1-3 CV syllables with short pauses."""
    segments: list[tuple[int, float, float, float]] = []
    t = float(rng.uniform(0.08, 0.2))
    end = duration - 0.08
    while True:
        n_syll = int(rng.integers(1, 4))
        stressed = int(rng.integers(0, n_syll))
        word: list[tuple[int, float, float]] = []
        for k in range(n_syll):
            syl = float(rng.uniform(0.8, 1.2)) / rate
            stress = 1.0 if k == stressed else 0.55
            if rng.random() > 0.15:
                consonant = int(rng.choice(CONSONANTS, p=_CONSONANT_P))
                frac = 0.4 if PHONEMES[consonant].kind in ("stop", "nasal") else 0.35
                word.append((consonant, syl * frac, stress))
                word.append((int(rng.choice(VOWELS)), syl * (1 - frac), stress))
            else:
                word.append((int(rng.choice(VOWELS)), syl, stress))
        length = sum(d for _, d, _ in word)
        if t + length > end:
            if segments or end - t < 0.06:
                break
            word = [(ph, d * (end - t) / length, stress) for ph, d, stress in word]  # short clip: squeeze in
        for ph, d, stress in word:
            segments.append((ph, t, t + d, stress))
            t += d
        if rng.random() < 0.35:
            t += float(rng.uniform(0.08, 0.25))
    return segments


def _rosenberg(phase: np.ndarray, open_q: float = 0.45, close_q: float = 0.16) -> np.ndarray:
    """Rosenberg glottal flow pulse of a cycle phase in [0, 1)."""
    rise = 0.5 * (1.0 - np.cos(np.pi * phase / open_q))
    fall = np.cos(0.5 * np.pi * (phase - open_q) / close_q)
    return np.where(phase < open_q, rise, np.where(phase < open_q + close_q, fall, 0.0))


def _resonate(x: np.ndarray, freq: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Two-pole resonator with per-hop frequency / bandwidth, unity gain at DC, state carried across hops."""
    out = np.empty_like(x)
    zi = np.zeros(2)
    t = 1.0 / SAMPLE_RATE
    for h in range(len(freq)):
        c = -np.exp(-2.0 * np.pi * bw[h] * t)
        b = 2.0 * np.exp(-np.pi * bw[h] * t) * np.cos(2.0 * np.pi * freq[h] * t)
        seg = slice(h * _HOP, (h + 1) * _HOP)
        out[seg], zi = signal.lfilter([1.0 - b - c], [1.0, -b, -c], x[seg], zi=zi)
    return out


def _smooth(x: np.ndarray, sigma_hops: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with edge padding."""
    radius = int(np.ceil(3 * sigma_hops))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_hops) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(radius, radius)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    if x.ndim == 1:
        return np.convolve(pad, k, mode="valid")
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def synthesize(rng: np.random.Generator, num_frames: int, fps: float, prosody: Prosody) -> Speech:
    """Speech for a clip of `num_frames` at `fps`: audio of round(num_frames / fps * 16000) samples."""
    duration = num_frames / fps
    num_samples = int(round(duration * SAMPLE_RATE))
    num_hops = -(-num_samples // _HOP) + 1
    segments = _syllable_timeline(rng, duration, prosody.rate)

    hop_t = np.arange(num_hops) / CONTROL_RATE
    phone = np.full(num_hops, SILENCE, np.int32)
    stress = np.zeros(num_hops)
    release = np.zeros(num_hops)  # stop bursts
    phrase_pos = np.zeros(num_hops)  # position within the utterance for declination
    for ph, t0, t1, s in segments:
        sel = (hop_t >= t0) & (hop_t < t1)
        phone[sel] = ph
        stress[sel] = s
        phrase_pos[sel] = t0 / duration
        if PHONEMES[ph].kind == "stop":
            rel = min(int(t1 * CONTROL_RATE), num_hops - 1)
            release[max(rel - 2, 0):rel] = 1.0
    is_voice = np.array([p.voiced for p in PHONEMES] + [False])[phone]
    kind = np.array([p.kind for p in PHONEMES] + ["silence"])[phone]
    is_vowel = kind == "vowel"

    # Source amplitudes per hop: vowels loudest, nasals/approximants softer, voiced closures a faint voice bar.
    voice_amp = np.select(
        [is_vowel, (kind == "nasal") | (kind == "approximant"), is_voice & (kind == "stop"), is_voice],
        [1.0, 0.45, 0.08, 0.3], 0.0) * (0.65 + 0.35 * stress)
    noise_amp = np.select([kind == "fricative", kind == "stop"], [0.35, 0.0], 0.0) + 0.6 * release
    noise_amp *= 0.6 + 0.4 * stress
    formants = np.array([p.formants for p in PHONEMES] + [PHONEMES[PHONEME_INDEX["@"]].formants])[phone]
    noise_hz = np.array([p.noise_hz for p in PHONEMES] + [0.0])[phone]
    noise_hz = np.where(noise_hz > 0, noise_hz, 3000.0)

    formants = _smooth(formants, 4.0) * (1.0 + 0.04 * (prosody.f0 > 165))  # shorter tract for high voices
    voice_amp = _smooth(voice_amp, 2.0)
    noise_amp = _smooth(noise_amp, 1.0)
    accent = _smooth(stress * is_vowel, 8.0)
    accent = accent / max(accent.max(), 1e-6)

    # Pitch: declination over the utterance, accents on stressed syllables, slow drift, optional tremor.
    drift = _smooth(rng.standard_normal(num_hops), 30.0)
    drift = drift / max(np.abs(drift).max(), 1e-6)
    rel = (prosody.f0_range * (0.5 - phrase_pos) * 0.6 + prosody.f0_range * 1.2 * (accent - 0.5)
           + 0.03 * drift + prosody.tremor * np.sin(2 * np.pi * 6.0 * hop_t))
    f0_hops = prosody.f0 * np.exp(rel)

    t_samp = np.arange(num_hops * _HOP) / SAMPLE_RATE
    f0_s = np.interp(t_samp, hop_t, f0_hops)
    f0_s *= 1.0 + 0.004 * rng.standard_normal(f0_s.shape)  # jitter
    phase = np.mod(np.cumsum(f0_s) / SAMPLE_RATE, 1.0)
    glottal = np.diff(_rosenberg(phase), prepend=0.0)
    voice = glottal * np.interp(t_samp, hop_t, voice_amp) * 8.0
    voice += 0.03 * rng.standard_normal(voice.shape) * np.interp(t_samp, hop_t, voice_amp)  # aspiration
    tract = voice
    for k in range(3):
        tract = _resonate(tract, formants[:, k], np.full(num_hops, _BANDWIDTHS[k]))
    # Frication: unit-RMS band noise at the phoneme's centre, scaled relative to the vowel level.
    fric = np.diff(_resonate(rng.standard_normal(t_samp.shape), noise_hz, noise_hz * 0.35), prepend=0.0)
    fric /= np.sqrt(np.mean(fric**2)) + 1e-12
    env = np.interp(t_samp, hop_t, voice_amp)
    vowel_rms = np.sqrt(np.mean(tract[env > 0.5] ** 2)) if np.any(env > 0.5) else 1.0
    wave = tract + 0.7 * vowel_rms * fric * np.interp(t_samp, hop_t, noise_amp)

    # Fixed loudness: voiced RMS of 0.08 times the emotion / speaker energy, soft-limited to [-1, 1].
    voiced = env > 0.3
    rms = np.sqrt(np.mean(wave[voiced] ** 2)) if voiced.any() else np.sqrt(np.mean(wave**2)) + 1e-9
    wave = np.tanh(wave * (0.08 * prosody.energy / max(rms, 1e-9)))
    audio = wave[:num_samples].astype(np.float32)

    # Frame-rate descriptors sampled at frame centres.
    centres = (np.arange(num_frames) + 0.5) / fps
    hop_at_frame = np.clip(np.round(centres * CONTROL_RATE).astype(int), 0, num_hops - 1)
    targets = _VISEMES[phone].copy()  # silence (-1) takes the last, all-zero row
    targets[:, 0] *= 0.75 + 0.25 * stress  # stressed syllables open wider
    visemes = _smooth(targets, 3.0)
    stress_f = accent[hop_at_frame].astype(np.float32)
    f0_frames = np.where(is_voice & (voice_amp > 0.3), f0_hops, 0.0)[hop_at_frame]
    return Speech(
        audio=audio,
        phonemes=phone[hop_at_frame].astype(np.int32),
        visemes=visemes[hop_at_frame].astype(np.float32),
        stress=stress_f,
        f0=f0_frames.astype(np.float32),
    )
