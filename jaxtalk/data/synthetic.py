"""Synthetic talking-face clips: procedural identities speaking formant-synthesised syllables with MEAD emotions.

Everything is a pure function of integer seeds (no downloads, no global state):

- an **identity** (`make_identity(seed, index)`) fixes the appearance (face shape, skin, hair, eye spacing, nose,
  lips, background, clothes) and the speaking habits (mouth amplitude, brow motion while speaking, blink rate, nod
  and sway amplitude, speech rate, pitch and loudness);
- a **clip** (`generate_clip`) adds one of MEAD's 22 emotion conditions. The emotion sets a static control target
  (facs.EMOTION_CONTROLS), the prosody (pitch level and range, loudness, rate, tremor) and a head-pose offset;
  the speech's phonemes drive the mouth controls (visemes); blinks, saccades and a smooth 6-d head pose are added.
  Controls give the 64-d expression coefficients (fixed basis), the action units and the rendered frames.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from jaxtalk.data import facs, render, speech
from jaxtalk.data.facs import CONTROL_INDEX as _CI

MIN_RESOLUTION, MAX_RESOLUTION = 64, 512

# Emotion prosody factors at full intensity: (pitch, pitch range, energy, rate, tremor).
EMOTION_PROSODY: dict[str, tuple[float, float, float, float, float]] = {
    "neutral": (1.0, 1.0, 1.0, 1.0, 0.0),
    "angry": (1.12, 1.3, 1.6, 1.08, 0.0),
    "contempt": (0.95, 0.85, 0.9, 0.92, 0.0),
    "disgusted": (0.93, 0.8, 0.95, 0.88, 0.0),
    "fear": (1.22, 0.9, 0.85, 1.12, 0.04),
    "happy": (1.18, 1.45, 1.25, 1.05, 0.0),
    "sad": (0.9, 0.55, 0.65, 0.82, 0.01),
    "surprised": (1.28, 1.7, 1.3, 1.0, 0.0),
}
# Emotion head-pose offsets at full intensity: (pitch, yaw, roll) radians; pitch > 0 lifts the chin.
EMOTION_POSE: dict[str, tuple[float, float, float]] = {
    "neutral": (0.0, 0.0, 0.0),
    "angry": (-0.05, 0.0, 0.0),
    "contempt": (0.06, 0.06, 0.03),
    "disgusted": (0.03, -0.05, 0.0),
    "fear": (0.04, 0.0, 0.0),
    "happy": (0.02, 0.0, 0.05),
    "sad": (-0.1, 0.0, -0.03),
    "surprised": (0.06, 0.0, 0.0),
}

_SKINS = np.array([[0.98, 0.84, 0.72], [0.93, 0.74, 0.6], [0.8, 0.6, 0.45], [0.62, 0.44, 0.3],
                   [0.45, 0.3, 0.2], [0.96, 0.8, 0.68]])
_HAIRS = np.array([[0.1, 0.07, 0.05], [0.3, 0.18, 0.1], [0.6, 0.45, 0.25], [0.85, 0.7, 0.45],
                   [0.5, 0.2, 0.1], [0.55, 0.55, 0.55], [0.2, 0.2, 0.25]])
_IRISES = np.array([[0.3, 0.18, 0.08], [0.2, 0.35, 0.55], [0.25, 0.45, 0.3], [0.15, 0.1, 0.06]])


@dataclasses.dataclass(frozen=True)
class Identity:
    """A synthetic person: appearance (`style`) and speaking habits."""

    name: str
    gender: str  # "female" | "male" (text pronouns, pitch range)
    style: render.FaceStyle
    mouth_amplitude: float  # scale of speech jaw / lip motion
    brow_speech: float  # brow raise on stressed syllables
    blink_rate: float  # blinks per minute
    nod_amplitude: float  # radians of pitch per accent
    sway_amplitude: float  # radians of idle head motion
    speech_rate: float  # syllables per second
    f0: float  # neutral mean pitch, Hz
    loudness: float


@dataclasses.dataclass
class SyntheticClip:
    """One generated clip; shapes per the clip record schema (records.ClipRecord)."""

    frames: np.ndarray | None  # (F, H, W, 3) uint8, None when rendering was skipped
    audio: np.ndarray  # (S,) float32, 16 kHz
    expression: np.ndarray  # (F, 64) float32
    pose: np.ndarray  # (F, 6) float32 (pitch, yaw, roll, tx, ty, tz)
    head_kps: np.ndarray  # (F, 8, 2) float32 pixels (x, y)
    controls: np.ndarray  # (F, NUM_CONTROLS) float32
    action_units: np.ndarray  # (F, len(AU_NAMES)) float32, 0-5
    phonemes: np.ndarray  # (F,) int32, speech.PHONEMES index, -1 silence
    f0: np.ndarray  # (F,) float32 Hz, 0 where unvoiced
    identity: str
    emotion: str
    intensity: int
    emotion_texts: list[str]
    fps: float
    sample_rate: int = speech.SAMPLE_RATE


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def _colour(rng, palette: np.ndarray, jitter: float = 0.04) -> tuple[float, float, float]:
    c = palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3)
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


def make_identity(seed: int, index: int) -> Identity:
    """Identity `index` of the population drawn from `seed` (independent of how many are made)."""
    rng = _rng(seed, index, 0x1D)
    gender = "female" if rng.random() < 0.5 else "male"
    bg = rng.uniform(0.15, 0.9, 3)
    style = render.FaceStyle(
        face_width=float(rng.uniform(0.2, 0.25)),
        face_aspect=float(rng.uniform(1.2, 1.42)),
        jaw_width=float(rng.uniform(0.8, 1.05) if gender == "male" else rng.uniform(0.72, 0.92)),
        skin=_colour(rng, _SKINS),
        hair=_colour(rng, _HAIRS),
        hair_style=int(rng.choice([0, 1, 3]) if gender == "female" else rng.choice([0, 0, 2, 3])),
        hair_volume=float(rng.uniform(0.0, 1.0)),
        fringe=float(rng.uniform(0.0, 1.0)),
        eye_spacing=float(rng.uniform(0.33, 0.47)),
        eye_height=float(rng.uniform(-0.22, -0.08)),
        eye_size=float(rng.uniform(0.85, 1.2)),
        iris=_colour(rng, _IRISES),
        brow_thickness=float(rng.uniform(0.04, 0.08) if gender == "male" else rng.uniform(0.03, 0.055)),
        nose_length=float(rng.uniform(0.32, 0.45)),
        nose_width=float(rng.uniform(0.12, 0.2)),
        mouth_width=float(rng.uniform(0.28, 0.4)),
        mouth_offset=float(rng.uniform(0.2, 0.28)),
        lip=tuple(float(v) for v in np.clip(np.array([0.75, 0.35, 0.38]) + rng.uniform(-0.12, 0.08, 3), 0, 1)),
        lip_thickness=float(rng.uniform(0.035, 0.065)),
        background=tuple(float(v) for v in bg),
        background2=tuple(float(v) for v in np.clip(bg + rng.uniform(-0.35, 0.35, 3), 0, 1)),
        pattern=int(rng.integers(4)),
        pattern_scale=float(rng.uniform(1.5, 5.0)),
        shirt=tuple(float(v) for v in rng.uniform(0.05, 0.9, 3)),
    )
    return Identity(
        name=f"id{index:04d}",
        gender=gender,
        style=style,
        mouth_amplitude=float(rng.uniform(0.6, 1.3)),
        brow_speech=float(rng.uniform(0.0, 0.45)),
        blink_rate=float(rng.uniform(8.0, 30.0)),
        nod_amplitude=float(rng.uniform(0.015, 0.08)),
        sway_amplitude=float(rng.uniform(0.3, 1.0)),
        speech_rate=float(rng.uniform(3.6, 5.4)),
        f0=float(rng.uniform(175.0, 240.0) if gender == "female" else rng.uniform(95.0, 140.0)),
        loudness=float(rng.uniform(0.8, 1.2)),
    )


def make_identities(num: int, seed: int) -> list[Identity]:
    """The first `num` identities of the population drawn from `seed`."""
    return [make_identity(seed, i) for i in range(num)]


def emotion_prosody(identity: Identity, emotion: str, intensity: int) -> speech.Prosody:
    """Speaker prosody shifted towards the emotion's factors by the intensity scale."""
    facs.check_emotion(emotion, intensity)
    s = facs.INTENSITY_SCALE[intensity] if emotion != "neutral" else 0.0
    f0, f0_range, energy, rate = (1.0 + (v - 1.0) * s for v in EMOTION_PROSODY[emotion][:4])
    return speech.Prosody(f0=identity.f0 * f0, f0_range=0.18 * f0_range, energy=identity.loudness * energy,
                          rate=identity.speech_rate * rate, tremor=EMOTION_PROSODY[emotion][4] * s)


def _smooth_noise(rng, n: int, fps: float, hz: float) -> np.ndarray:
    """Sum of three random sinusoids around `hz`, unit peak amplitude: a smooth idle motion."""
    t = np.arange(n) / fps
    freqs = hz * rng.uniform(0.5, 1.5, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    return (np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]) * np.array([0.5, 0.3, 0.2])[:, None]).sum(0)


def _blinks(rng, n: int, fps: float, rate_per_min: float) -> np.ndarray:
    """Eye closure curve: raised-cosine blinks (~0.2 s) at Poisson times."""
    out = np.zeros(n)
    t, dur = float(rng.exponential(60.0 / rate_per_min)) * 0.5, n / fps
    while t < dur:
        length = float(rng.uniform(0.15, 0.25))
        tt = np.arange(n) / fps - t
        inside = (tt >= 0) & (tt <= length)
        out[inside] = np.maximum(out[inside], 0.5 - 0.5 * np.cos(2 * np.pi * tt[inside] / length))
        t += length + float(rng.exponential(60.0 / rate_per_min)) + 0.3
    return out


def motion(identity: Identity, emotion: str, intensity: int, seed: int, num_frames: int, fps: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, speech.Speech]:
    """Controls (F, C), pose (F, 6), gaze (F, 2) and the speech for one clip, without rendering."""
    facs.check_emotion(emotion, intensity)
    emo_i = facs.EMOTIONS.index(emotion)
    name_key = zlib.crc32(identity.name.encode())  # stable across processes, unlike hash()
    r_speech, r_face, r_pose, r_eye = (_rng(seed, emo_i, intensity, name_key, k) for k in range(4))
    spc = speech.synthesize(r_speech, num_frames, fps, emotion_prosody(identity, emotion, intensity))
    n = num_frames

    target = facs.emotion_controls(emotion, intensity)
    c = np.tile(target, (n, 1)) * (1.0 + 0.08 * _smooth_noise(r_face, n, fps, 0.3)[:, None])
    jaw_v, press_v, stretch_v, pucker_v = (spc.visemes[:, k] for k in range(4))
    amp = identity.mouth_amplitude
    speaking = np.clip(2.0 * jaw_v, 0.0, 1.0)
    c[:, _CI["jaw_open"]] = np.clip(c[:, _CI["jaw_open"]] + amp * jaw_v, 0, 1) * (1.0 - press_v)
    c[:, _CI["lip_press"]] = np.maximum(c[:, _CI["lip_press"]] * (1.0 - speaking), press_v)
    c[:, _CI["lip_stretch"]] += amp * stretch_v
    c[:, _CI["lip_pucker"]] += amp * pucker_v
    c[:, _CI["brow_outer_raise"]] += identity.brow_speech * spc.stress
    c[:, _CI["brow_inner_raise"]] += 0.5 * identity.brow_speech * spc.stress
    blink_rate = identity.blink_rate * {"surprised": 0.5, "sad": 1.3, "fear": 1.4}.get(emotion, 1.0)
    c[:, _CI["eye_close"]] = np.maximum(c[:, _CI["eye_close"]], _blinks(r_eye, n, fps, blink_rate))
    controls = np.clip(c, 0.0, 1.0).astype(np.float32)

    # Pose: idle sway + nods on accents + the emotion's offset; translations follow the rotations.
    s = facs.INTENSITY_SCALE[intensity] if emotion != "neutral" else 0.0
    offset = np.array(EMOTION_POSE[emotion]) * s
    sway = identity.sway_amplitude * np.array([0.03, 0.06, 0.03])
    rot = np.stack([offset[k] + sway[k] * _smooth_noise(r_pose, n, fps, 0.25) for k in range(3)], axis=1)
    rot[:, 0] -= identity.nod_amplitude * spc.stress
    trans = np.stack([0.015 * _smooth_noise(r_pose, n, fps, 0.15) + 0.1 * rot[:, 1],
                      0.01 * _smooth_noise(r_pose, n, fps, 0.2) - 0.05 * rot[:, 0],
                      0.03 * _smooth_noise(r_pose, n, fps, 0.1)], axis=1)
    pose = np.concatenate([rot, trans], axis=1).astype(np.float32)

    # Gaze: fixations with small saccades, eased over two frames.
    gaze = np.zeros((n, 2))
    t = 0
    while t < n:
        hold = int(r_eye.integers(max(1, int(0.4 * fps)), max(2, int(1.5 * fps))))
        gaze[t:t + hold] = r_eye.uniform(-1, 1, 2) * (0.3 if emotion in ("fear", "contempt") else 0.6)
        t += hold
    gaze = np.stack([np.convolve(np.pad(g, 1, mode="edge"), [0.25, 0.5, 0.25], "valid") for g in gaze.T], 1)
    return controls, pose, gaze.astype(np.float32), spc


def check_resolution(resolution: int) -> None:
    if not (isinstance(resolution, (int, np.integer)) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ValueError(f"resolution must be an int in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution!r}")


def render_frames(identity: Identity, controls: np.ndarray, pose: np.ndarray, gaze: np.ndarray,
                  resolution: int, draw: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Frames (F, R, R, 3) uint8 (None if not `draw`) and head keypoints (F, 8, 2) for per-frame controls/pose."""
    check_resolution(resolution)
    n = len(controls)
    kps = np.zeros((n, 8, 2), np.float32)
    frames = np.empty((n, resolution, resolution, 3), np.uint8) if draw else None
    background = render.render_background(identity.style, resolution, resolution) if draw else None
    for f in range(n):
        geo = render.Geometry(identity.style, pose[f], resolution, resolution)
        kps[f] = render.head_keypoints(identity.style, controls[f], geo, gaze[f])
        if draw:
            img = background.copy()
            render.render_face(img, identity.style, controls[f], geo, gaze[f])
            frames[f] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames, kps


def generate_clip(identity: Identity, emotion: str, intensity: int, seed: int, num_frames: int = 50,
                  fps: float = 25.0, resolution: int = 128, render_video: bool = True) -> SyntheticClip:
    """One clip of `identity` speaking with (emotion, intensity); deterministic in all arguments."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    controls, pose, gaze, spc = motion(identity, emotion, intensity, seed, num_frames, fps)
    frames, kps = render_frames(identity, controls, pose, gaze, resolution, draw=render_video)
    return SyntheticClip(
        frames=frames,
        audio=spc.audio,
        expression=facs.expression_from_controls(controls),
        pose=pose,
        head_kps=kps,
        controls=controls,
        action_units=facs.action_units(controls),
        phonemes=spc.phonemes,
        f0=spc.f0,
        identity=identity.name,
        emotion=emotion,
        intensity=intensity,
        emotion_texts=facs.emotion_texts(emotion, intensity, identity.gender),
        fps=float(fps),
    )


def mouth_landmarks(identity: Identity, controls: np.ndarray, pose: np.ndarray, resolution: int) -> np.ndarray:
    """(F, 8, 2) float32 pixel mouth landmarks (render.MOUTH_LANDMARK_NAMES) of a clip's controls and pose at
    `resolution`, on the same curves the renderer fills; e.g. ``mouth_landmarks(ident, clip.controls, clip.pose,
    clip.frames.shape[1])``."""
    check_resolution(resolution)
    controls, pose = np.asarray(controls, np.float32), np.asarray(pose, np.float32)
    if controls.ndim != 2 or pose.shape != (len(controls), 6):
        raise ValueError(f"controls (F, {facs.NUM_CONTROLS}) and pose (F, 6) expected, got {controls.shape} and "
                         f"{pose.shape}")
    return np.stack([render.mouth_landmarks(identity.style, c, render.Geometry(identity.style, p, resolution,
                                                                               resolution))
                     for c, p in zip(controls, pose)]).reshape(len(controls), 8, 2).astype(np.float32)
