"""Emotion descriptions for training and evaluating the Style2Talker text encoder on synthetic data.

The synthetic generator annotates every clip with three template sentences (`facs.emotion_texts`): a pronoun,
an intensity adjective ("annoyed" / "angry" / "furious") and the clip's strongest action units in words. This
module widens that family into sentence frames with two disjoint parts:

- `TRAIN_FRAMES`: the generator's own three frames plus more frames, used to train the text encoder and Style-E;
- `HELDOUT_FRAMES`: paraphrases with sentence structures (and a few filler words) never seen in training, used
  only for evaluation ("paraphrase" emotion accuracy).

Both parts use the same vocabulary of emotion words (adjectives and action-unit phrases): a text encoder trained
from scratch cannot know synonyms it never saw, so the paraphrase test measures robustness to new phrasing of
known emotion words, not world knowledge.
"""

from __future__ import annotations

import numpy as np

from jaxtalk.data import facs

# Frames: {P} pronoun, {p} lower-case pronoun, {n} noun, {a} adjective, {f} strongest AU phrase, {b} two phrases.
TRAIN_FRAMES: tuple[str, ...] = (
    "{P} is {a}, {f}.",  # the generator's three
    "{P} looks {a}, {b}.",
    "A {a} {n} talking, {b}.",
    "{P} speaks and is {a}, {b}.",
    "A {n} who is {a}, {f}.",
    "{P} is talking, {a}, {b}.",
    "The {n} looks {a} while talking, {f}.",
    "{a} {n}, {b}.",
)
HELDOUT_FRAMES: tuple[str, ...] = (
    "With {b}, {p} seems {a}.",
    "This {n} appears {a} and keeps {f}.",
    "{P} sounds {a} as {p} speaks, {b}.",
    "Speaking, the {n} is clearly {a}: {b}.",
)
NEUTRAL_PHRASES = ("with a relaxed face", "keeping a relaxed face")
CONDITIONS: tuple[tuple[str, int], ...] = tuple(
    [("neutral", 1)] + [(e, i) for e in facs.EMOTIONS if e != "neutral" for i in (1, 2, 3)])


def condition_index(emotion: str, intensity: int) -> int:
    """Index of a MEAD (emotion, intensity) condition in `CONDITIONS` (neutral is one condition)."""
    return CONDITIONS.index(("neutral", 1) if emotion == "neutral" else (emotion, int(intensity)))


def _fields(emotion: str, intensity: int, gender: str) -> dict[str, str]:
    facs.check_emotion(emotion, intensity)
    pronoun, noun = ("She", "woman") if gender == "female" else ("He", "man")
    adjective = facs._ADJECTIVES[emotion][intensity - 1]
    aus = facs.action_units(facs.emotion_controls(emotion, intensity))
    ranked = [facs.AU_NAMES[j] for j in np.argsort(-aus, kind="stable")
              if facs.AU_NAMES[j] in facs.AU_PHRASES and aus[j] >= 1.0]
    if ranked:
        first = facs.AU_PHRASES[ranked[0]]
        both = first if len(ranked) == 1 else f"{first} and {facs.AU_PHRASES[ranked[1]]}"
    else:
        first, both = NEUTRAL_PHRASES
    return {"P": pronoun, "p": pronoun.lower(), "n": noun, "a": adjective, "f": first, "b": both}


def _fill(frame: str, fields: dict[str, str]) -> str:
    text = frame.format(**fields)
    return text[0].upper() + text[1:]


def descriptions(emotion: str, intensity: int, gender: str = "female", split: str = "train") -> list[str]:
    """Every description of the condition in the `split` ("train" or "heldout") sentence frames."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    fields = _fields(emotion, intensity, gender)
    return [_fill(f, fields) for f in (TRAIN_FRAMES if split == "train" else HELDOUT_FRAMES)]


def all_descriptions(split: str = "train") -> list[tuple[str, int]]:
    """(text, condition index) for every condition, both genders and every frame of the split."""
    out = []
    for c, (emotion, intensity) in enumerate(CONDITIONS):
        for gender in ("female", "male"):
            out += [(t, c) for t in descriptions(emotion, intensity, gender, split)]
    return out
