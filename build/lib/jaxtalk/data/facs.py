"""Semantic face controls, the fixed 3DMM-like expression basis, FACS action units and emotion texts.

The synthetic generator describes every frame's expression by a small set of interpretable *controls* in [0, 1]
(jaw open, lip corners up, brow furrow, ...). Everything downstream is a fixed function of them:

- 64-d expression coefficients = ``controls @ expression_basis().T``, one fixed orthonormal basis drawn from a fixed
  seed, so the coefficients behave like 3DMM codes (dense, entangled, linear in the underlying muscles) while the
  controls stay recoverable (``controls_from_expression``).
- FACS action-unit intensities on the 0-5 scale, each tied to the control that produces it.
- emotion text descriptions built from templates of action-unit phrases ("She is joyful, pulling up the lip
  corners."), the form Style2Talker's text conditioning expects.
"""

from __future__ import annotations

import functools

import numpy as np

EMOTIONS: tuple[str, ...] = (
    "neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised",
)
"""MEAD's eight emotions, in MEAD's alphabetical order after neutral."""

INTENSITIES: tuple[int, ...] = (1, 2, 3)
"""MEAD intensity levels; ``neutral`` only has level 1."""

CONTROL_NAMES: tuple[str, ...] = (
    "jaw_open",          # 0  jaw drop (speech and surprise)
    "lip_press",         # 1  lips pressed together (bilabials, anger)
    "lip_stretch",       # 2  lips pulled sideways (fear, /i/)
    "lip_pucker",        # 3  lips rounded forward (/o/, /u/, /w/)
    "lip_corner_up",     # 4  smile
    "lip_corner_down",   # 5  sadness, disgust
    "lip_corner_asym",   # 6  one-sided corner pull (contempt)
    "upper_lip_raise",   # 7  disgust
    "chin_raise",        # 8  pout of the chin boss (sadness, anger)
    "brow_inner_raise",  # 9  sadness, fear, surprise
    "brow_outer_raise",  # 10 surprise, fear, emphatic speech
    "brow_furrow",       # 11 anger, fear, disgust
    "eye_widen",         # 12 upper lid raise (surprise, fear)
    "eye_close",         # 13 blinks and drooping lids
    "lid_tighten",       # 14 narrowed eyes (anger, smile)
    "cheek_raise",       # 15 Duchenne smile
    "nose_wrinkle",      # 16 disgust
)
CONTROL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CONTROL_NAMES)}
NUM_CONTROLS = len(CONTROL_NAMES)
EXPRESSION_DIM = 64
_BASIS_SEED = 20240905

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
    "AU23", "AU25", "AU26", "AU43",
)
"""The requested FACS subset plus AU14 (dimpler), which contempt needs."""

# Each action unit but AU25 is the (scaled) intensity of one control; AU12 also takes half of the one-sided pull.
_AU_FROM_CONTROL: dict[str, tuple[tuple[str, float], ...]] = {
    "AU1": (("brow_inner_raise", 1.0),),
    "AU2": (("brow_outer_raise", 1.0),),
    "AU4": (("brow_furrow", 1.0),),
    "AU5": (("eye_widen", 1.0),),
    "AU6": (("cheek_raise", 1.0),),
    "AU7": (("lid_tighten", 1.0),),
    "AU9": (("nose_wrinkle", 1.0),),
    "AU10": (("upper_lip_raise", 1.0),),
    "AU12": (("lip_corner_up", 1.0), ("lip_corner_asym", 0.5)),
    "AU14": (("lip_corner_asym", 1.0),),
    "AU15": (("lip_corner_down", 1.0),),
    "AU17": (("chin_raise", 1.0),),
    "AU20": (("lip_stretch", 1.0),),
    "AU23": (("lip_press", 1.0),),
    "AU26": (("jaw_open", 1.0),),
    "AU43": (("eye_close", 1.0),),
}

AU_PHRASES: dict[str, str] = {
    "AU1": "raising the inner brows",
    "AU2": "raising the outer brows",
    "AU4": "furrowing the brows",
    "AU5": "widening the eyes",
    "AU6": "raising the cheeks",
    "AU7": "tightening the eyelids",
    "AU9": "wrinkling the nose",
    "AU10": "raising the upper lip",
    "AU12": "pulling up the lip corners",
    "AU14": "tightening one lip corner",
    "AU15": "pulling down the lip corners",
    "AU17": "raising the chin",
    "AU20": "stretching the lips",
    "AU23": "tightening the lips",
    "AU26": "dropping the jaw",
}

# Prototype control targets at full intensity (EMFACS-style prototypes; neutral has none).
EMOTION_CONTROLS: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {"brow_furrow": 0.9, "lid_tighten": 0.7, "eye_widen": 0.35, "lip_press": 0.55,
              "upper_lip_raise": 0.2, "chin_raise": 0.3},
    "contempt": {"lip_corner_asym": 0.85, "lid_tighten": 0.15},
    "disgusted": {"nose_wrinkle": 0.9, "upper_lip_raise": 0.75, "lip_corner_down": 0.35, "brow_furrow": 0.4,
                  "lid_tighten": 0.3, "chin_raise": 0.2},
    "fear": {"brow_inner_raise": 0.8, "brow_outer_raise": 0.5, "brow_furrow": 0.45, "eye_widen": 0.85,
             "lip_stretch": 0.75, "jaw_open": 0.15},
    "happy": {"cheek_raise": 0.85, "lip_corner_up": 0.95, "lid_tighten": 0.25, "lip_stretch": 0.2},
    "sad": {"brow_inner_raise": 0.8, "brow_furrow": 0.35, "lip_corner_down": 0.75, "chin_raise": 0.45,
            "eye_close": 0.2},
    "surprised": {"brow_inner_raise": 0.75, "brow_outer_raise": 0.9, "eye_widen": 0.9, "jaw_open": 0.3},
}

INTENSITY_SCALE: dict[int, float] = {1: 0.45, 2: 0.72, 3: 1.0}

_ADJECTIVES: dict[str, tuple[str, str, str]] = {
    "neutral": ("calm", "calm", "calm"),
    "angry": ("annoyed", "angry", "furious"),
    "contempt": ("dismissive", "contemptuous", "scornful"),
    "disgusted": ("displeased", "disgusted", "revolted"),
    "fear": ("uneasy", "afraid", "terrified"),
    "happy": ("pleased", "happy", "joyful"),
    "sad": ("downcast", "sad", "grief-stricken"),
    "surprised": ("mildly surprised", "surprised", "astonished"),
}


def check_emotion(emotion: str, intensity: int) -> None:
    """Raise one ValueError if (emotion, intensity) is not one of MEAD's 22 conditions."""
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    allowed = (1,) if emotion == "neutral" else INTENSITIES
    if intensity not in allowed:
        raise ValueError(f"emotion {emotion!r} has intensity levels {allowed}, got {intensity!r}")


def emotion_conditions() -> list[tuple[str, int]]:
    """All 22 (emotion, intensity) pairs of MEAD: neutral once, the seven others at three levels."""
    return [("neutral", 1)] + [(e, i) for e in EMOTIONS[1:] for i in INTENSITIES]


def emotion_controls(emotion: str, intensity: int) -> np.ndarray:
    """Static control target (NUM_CONTROLS,) float32 of an emotion at a MEAD intensity level."""
    check_emotion(emotion, intensity)
    out = np.zeros(NUM_CONTROLS, np.float32)
    for name, value in EMOTION_CONTROLS[emotion].items():
        out[CONTROL_INDEX[name]] = value * INTENSITY_SCALE[intensity]
    return out


@functools.cache
def _basis() -> np.ndarray:
    rng = np.random.default_rng(_BASIS_SEED)
    q, r = np.linalg.qr(rng.standard_normal((EXPRESSION_DIM, NUM_CONTROLS)))
    q = q * np.sign(np.diag(r))[None, :]  # unique QR sign convention
    # Decreasing column norms mimic the decaying variance of a PCA-based 3DMM expression space.
    gains = np.linspace(3.0, 1.0, NUM_CONTROLS)
    out = (q * gains[None, :]).astype(np.float32)
    out.setflags(write=False)
    return out


def expression_basis() -> np.ndarray:
    """The fixed (64, NUM_CONTROLS) float32 basis; columns are orthogonal with norms from 3 down to 1."""
    return _basis()


def expression_from_controls(controls: np.ndarray) -> np.ndarray:
    """(..., NUM_CONTROLS) controls -> (..., 64) float32 expression coefficients (a fixed linear map)."""
    controls = np.asarray(controls, np.float32)
    if controls.shape[-1] != NUM_CONTROLS:
        raise ValueError(f"controls: expected last axis {NUM_CONTROLS} ({', '.join(CONTROL_NAMES)}), "
                         f"got shape {controls.shape}")
    return controls @ _basis().T


def controls_from_expression(expression: np.ndarray) -> np.ndarray:
    """Least-squares inverse of `expression_from_controls` (exact on its image)."""
    b = _basis().astype(np.float64)
    pinv = np.linalg.solve(b.T @ b, b.T)
    return (np.asarray(expression, np.float64) @ pinv.T).astype(np.float32)


def action_units(controls: np.ndarray) -> np.ndarray:
    """(..., NUM_CONTROLS) controls -> (..., len(AU_NAMES)) float32 AU intensities on the FACS 0-5 scale.

    AU25 (lips part) is the visible lip gap, jaw opening not cancelled by pressing, saturating early.
    """
    c = np.clip(np.asarray(controls, np.float32), 0.0, 1.0)
    out = np.zeros(c.shape[:-1] + (len(AU_NAMES),), np.float32)
    for j, au in enumerate(AU_NAMES):
        if au == "AU25":
            gap = c[..., CONTROL_INDEX["jaw_open"]] * (1.0 - c[..., CONTROL_INDEX["lip_press"]])
            out[..., j] = np.clip(3.0 * gap, 0.0, 1.0)
        else:
            out[..., j] = np.clip(sum(w * c[..., CONTROL_INDEX[n]] for n, w in _AU_FROM_CONTROL[au]), 0.0, 1.0)
    return 5.0 * out


def emotion_texts(emotion: str, intensity: int, gender: str = "female") -> list[str]:
    """Three template sentences describing the emotion through its strongest action units."""
    check_emotion(emotion, intensity)
    pronoun, noun = ("She", "woman") if gender == "female" else ("He", "man")
    adjective = _ADJECTIVES[emotion][intensity - 1]
    aus = action_units(emotion_controls(emotion, intensity))
    ranked = [AU_NAMES[j] for j in np.argsort(-aus, kind="stable") if AU_NAMES[j] in AU_PHRASES and aus[j] >= 1.0]
    if not ranked:
        return [
            f"{pronoun} is {adjective}, with a relaxed face.",
            f"{pronoun} looks {adjective} and speaks with a relaxed face.",
            f"A {noun} talking with a {adjective}, neutral expression.",
        ]
    first = AU_PHRASES[ranked[0]]
    both = first if len(ranked) == 1 else f"{first} and {AU_PHRASES[ranked[1]]}"
    return [
        f"{pronoun} is {adjective}, {first}.",
        f"{pronoun} looks {adjective}, {both}.",
        f"A {adjective} {noun} talking, {both}.",
    ]
