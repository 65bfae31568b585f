"""Style2Talker's labour-free emotion-text annotation (paper §"Data Preparation"), with templates in place of GPT-3.

Per clip:
1. Action units → level words. The clip's intensity of an AU is the MEDIAN over frames of its per-frame intensity
   (OpenFace's 0–5 scale): the sustained expression, not blinks or single syllables. An AU is ACTIVATED at >= 1.0
   (FACS trace level); activated AUs get one of three levels: [1, 2) "slight", [2, 3.5) "clear", >= 3.5 "strong"
   (`LEVEL_BOUNDS`). AU25 (lips part) and AU26 (jaw drop) move with every syllable in a talking clip, so they
   describe the speech, not the emotion, and are left out by default (`exclude`).
2. Candidate sentences (what GPT-3 produced in the paper): every template × every synonym of the emotion at the
   clip's MEAD intensity × the first 1, 2 and 3 activated AUs by intensity, each AU as a level adverb plus one of its
   phrasings — so every candidate names the clip's dominant AU. A clip without activated AUs gets "relaxed face"
   sentences.
3. Ranking by CLIP: the projected features of each candidate (text tower) and of up to `num_frames` evenly spaced
   frames (image tower) are L2-normalised; a candidate's score is its mean cosine similarity over those frames.
   Candidates are sorted by score (descending, ties by candidate order) and the top 5 are kept; training then draws
   one of them per iteration.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.backbones.clip_text import CLIPTextEncoder
from jaxtalk.backbones.clip_tokenizer import CLIPTokenizer
from jaxtalk.backbones.clip_vision import CLIPVisionModelWithProjection, preprocess
from jaxtalk.data import facs

ACTIVATION_THRESHOLD = 1.0
LEVEL_BOUNDS = (2.0, 3.5)  # slight < 2.0 <= clear < 3.5 <= strong
LEVELS = ("slight", "clear", "strong")
LEVEL_ADVERBS = {"slight": "slightly", "clear": "noticeably", "strong": "strongly"}
SPEECH_AUS = ("AU25", "AU26")
TOP_K = 5

# Several phrasings per AU (gerund phrases that follow a level adverb), the synonyms GPT-3 supplied in the paper.
AU_PHRASINGS: dict[str, tuple[str, ...]] = {
    "AU1": ("raising the inner brows", "lifting the inner corners of the eyebrows"),
    "AU2": ("raising the outer brows", "lifting the outer eyebrows"),
    "AU4": ("furrowing the brows", "drawing the eyebrows together"),
    "AU5": ("widening the eyes", "raising the upper eyelids"),
    "AU6": ("raising the cheeks", "lifting the cheeks"),
    "AU7": ("tightening the eyelids", "narrowing the eyes"),
    "AU9": ("wrinkling the nose", "scrunching the nose"),
    "AU10": ("raising the upper lip", "curling the upper lip"),
    "AU12": ("pulling up the lip corners", "lifting the corners of the mouth"),
    "AU14": ("tightening one lip corner", "dimpling one corner of the mouth"),
    "AU15": ("pulling down the lip corners", "turning down the corners of the mouth"),
    "AU17": ("raising the chin", "pushing up the chin"),
    "AU20": ("stretching the lips", "pulling the lips sideways"),
    "AU23": ("tightening the lips", "pressing the lips tight"),
    "AU25": ("parting the lips", "opening the lips"),
    "AU26": ("dropping the jaw", "letting the jaw fall open"),
    "AU43": ("closing the eyes", "shutting the eyes"),
}

# Adjective synonyms per MEAD emotion and intensity level 1..3 (neutral has one level).
EMOTION_WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "neutral": (("calm", "neutral", "composed"),),
    "angry": (("annoyed", "irritated", "cross"), ("angry", "mad", "indignant"), ("furious", "enraged", "livid")),
    "contempt": (("dismissive", "unimpressed", "disdainful"), ("contemptuous", "scornful", "sneering"),
                 ("utterly contemptuous", "deeply scornful", "withering")),
    "disgusted": (("displeased", "put off", "distasteful"), ("disgusted", "repulsed", "sickened"),
                  ("revolted", "nauseated", "appalled")),
    "fear": (("uneasy", "nervous", "worried"), ("afraid", "scared", "frightened"),
             ("terrified", "panicked", "horrified")),
    "happy": (("pleased", "content", "cheerful"), ("happy", "glad", "joyful"), ("elated", "delighted", "ecstatic")),
    "sad": (("downcast", "glum", "low"), ("sad", "unhappy", "sorrowful"), ("grief-stricken", "heartbroken",
                                                                         "despairing")),
    "surprised": (("mildly surprised", "curious", "intrigued"), ("surprised", "startled", "amazed"),
                  ("astonished", "stunned", "astounded")),
}

TEMPLATES: tuple[str, ...] = (
    "The person is speaking with a {adj} look, {aus}.",
    "The speaker looks {adj}, {aus}.",
    "{an_adj} person talking while {aus}.",
    "Feeling {adj}, the person speaks while {aus}.",
    "This person seems {adj} when talking, {aus}.",
)
RELAXED_TEMPLATES: tuple[str, ...] = (
    "The person is speaking with a {adj} look and a relaxed face.",
    "The speaker looks {adj}, with a relaxed face.",
    "{an_adj} person talking with a relaxed expression.",
)


@dataclasses.dataclass(frozen=True)
class AUActivation:
    name: str
    intensity: float  # median over frames, 0-5
    level: str  # one of LEVELS


@dataclasses.dataclass(frozen=True)
class Candidate:
    text: str
    aus: tuple[str, ...]  # the AUs the sentence mentions, dominant first


@dataclasses.dataclass(frozen=True)
class EmotionAnnotation:
    """`sentences`: the kept top-k texts, best first; `scores` their mean cosine similarity; `candidates`, `similarity`
    (all candidates, candidate order) and `ranking` (candidate indices, best first) for inspection."""

    sentences: list[str]
    scores: np.ndarray
    activations: list[AUActivation]
    candidates: list[Candidate]
    similarity: np.ndarray
    ranking: np.ndarray


def au_level(intensity: float) -> str | None:
    """Level word of a clip-level AU intensity, None when not activated."""
    if intensity < ACTIVATION_THRESHOLD:
        return None
    return LEVELS[int(np.searchsorted(LEVEL_BOUNDS, intensity, side="right"))]


def au_activations(action_units: np.ndarray, au_names: Sequence[str] = facs.AU_NAMES,
                   exclude: Sequence[str] = SPEECH_AUS) -> list[AUActivation]:
    """Activated AUs of a clip, strongest first: `action_units` (F, A) per frame (median over frames) or (A,)
    already per clip."""
    au = np.asarray(action_units, np.float64)
    if au.ndim == 2:
        au = np.median(au, axis=0)
    if au.ndim != 1 or au.shape[0] != len(au_names):
        raise ValueError(f"au_activations: action_units must be (frames, {len(au_names)}) or ({len(au_names)},) "
                         f"for AUs {', '.join(au_names)}; got shape {np.shape(action_units)}")
    unknown = [n for n in au_names if n not in AU_PHRASINGS]
    if unknown:
        raise ValueError(f"au_activations: no phrasing for {unknown}; known AUs: {', '.join(AU_PHRASINGS)}")
    out = [AUActivation(n, float(v), lvl) for n, v in zip(au_names, au)
           if n not in exclude and (lvl := au_level(float(v))) is not None]
    order = sorted(range(len(out)), key=lambda i: -out[i].intensity)  # stable: AU order breaks ties
    return [out[i] for i in order]


def _article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def candidate_sentences(emotion: str, intensity: int, activations: Sequence[AUActivation],
                        max_aus: int = 3) -> list[Candidate]:
    """All template sentences for a clip (see the module docstring), in a fixed order."""
    facs.check_emotion(emotion, intensity)
    levels = EMOTION_WORDS[emotion]
    adjectives = levels[min(intensity, len(levels)) - 1]
    out: list[Candidate] = []
    if not activations:
        for template in RELAXED_TEMPLATES:
            for adj in adjectives:
                out.append(Candidate(template.format(adj=adj, an_adj=f"{_article(adj)} {adj}"), ()))
        return out
    top = list(activations[:max_aus])
    for template in TEMPLATES:
        for a, adj in enumerate(adjectives):
            for count in range(1, len(top) + 1):
                chosen = top[:count]
                # alternate the phrasing with the adjective so both synonyms of each AU appear among the candidates
                phrases = [f"{LEVEL_ADVERBS[x.level]} {AU_PHRASINGS[x.name][(a + i) % len(AU_PHRASINGS[x.name])]}"
                           for i, x in enumerate(chosen)]
                text = template.format(adj=adj, an_adj=f"{_article(adj)} {adj}", aus=_join(phrases))
                out.append(Candidate(text, tuple(x.name for x in chosen)))
    return out


def rank_by_similarity(text_features: np.ndarray, image_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ranking, similarity): similarity[j] = mean over frames of cos(text_j, image_f) (float64); ranking sorts it
    descending, ties by candidate index."""
    t = np.asarray(text_features, np.float64)
    v = np.asarray(image_features, np.float64)
    if t.ndim != 2 or v.ndim != 2 or t.shape[1] != v.shape[1]:
        raise ValueError(f"rank_by_similarity: need (candidates, P) and (frames, P) features, got {t.shape}, {v.shape}")
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = (t @ v.T).mean(axis=1)
    return np.argsort(-sim, kind="stable"), sim


def frame_indices(num_frames: int, count: int) -> np.ndarray:
    """Up to `count` evenly spaced frame indices (first and last included)."""
    if num_frames < 1:
        raise ValueError("frame_indices: the clip has no frames")
    return np.unique(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(np.int64))


@dataclasses.dataclass
class CLIPScorer:
    """CLIP towers for scoring: `encode_text(sentences)` → (N, P), `encode_images(uint8 frames)` → (F, P), both
    the projected (un-normalised) features. The two towers must share the projection width P."""

    text_module: CLIPTextEncoder
    text_params: Any
    vision_module: CLIPVisionModelWithProjection
    vision_params: Any
    tokenizer: CLIPTokenizer = dataclasses.field(default_factory=CLIPTokenizer)
    bucket: int = 16  # batches are padded to a multiple of this, so a dataset compiles each tower a few times

    def __post_init__(self) -> None:
        p_text = self.text_module.config.projection_dim
        p_vision = self.vision_module.config.projection_dim
        if p_text != p_vision:
            raise ValueError(f"CLIPScorer: text projection {p_text} and image projection {p_vision} differ; "
                             "use the two towers of one CLIP model")

    @functools.cached_property
    def _text_fn(self) -> Callable:
        return jax.jit(lambda p, ids: self.text_module.apply({"params": p}, ids)[1])

    @functools.cached_property
    def _image_fn(self) -> Callable:
        size = self.vision_module.config.image_size
        return jax.jit(lambda p, frames: self.vision_module.apply({"params": p}, preprocess(frames, size))[1])

    def tokenize(self, sentences: Sequence[str]) -> np.ndarray:
        return self.tokenizer(list(sentences), context_length=self.text_module.config.max_length)

    def encode_text(self, sentences: Sequence[str]) -> np.ndarray:
        ids = _pad_rows(self.tokenize(sentences), self.bucket)  # fixed batch buckets: few compilations
        return np.asarray(self._text_fn(self.text_params, jnp.asarray(ids)), np.float32)[: len(sentences)]

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        out = self._image_fn(self.vision_params, jnp.asarray(_pad_rows(frames, self.bucket)))
        return np.asarray(out, np.float32)[: frames.shape[0]]


def _pad_rows(x: np.ndarray, bucket: int) -> np.ndarray:
    """Repeat the last row up to a multiple of `bucket` rows (the extra rows are sliced off after the model)."""
    pad = -x.shape[0] % bucket
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x


def annotate(action_units: np.ndarray, frames: np.ndarray, emotion: str, intensity: int, scorer: CLIPScorer, *,
             au_names: Sequence[str] = facs.AU_NAMES, exclude: Sequence[str] = SPEECH_AUS, top_k: int = TOP_K,
             num_frames: int = 8, max_aus: int = 3) -> EmotionAnnotation:
    """Emotion texts for one clip: AUs (F, A) per frame, frames uint8 (F, H, W, 3), the MEAD emotion / intensity."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"annotate: frames must be (frames, height, width, 3) RGB, got shape {frames.shape}")
    activations = au_activations(action_units, au_names, exclude)
    candidates = candidate_sentences(emotion, intensity, activations, max_aus)
    text_features = scorer.encode_text([c.text for c in candidates])
    image_features = scorer.encode_images(frames[frame_indices(frames.shape[0], num_frames)])
    ranking, sim = rank_by_similarity(text_features, image_features)
    keep = ranking[:top_k]
    return EmotionAnnotation(sentences=[candidates[i].text for i in keep], scores=sim[keep], activations=activations,
                             candidates=candidates, similarity=sim, ranking=ranking)


def annotate_record(record: Any, scorer: CLIPScorer, **kwargs: Any) -> EmotionAnnotation:
    """`annotate` a `jaxtalk.data.records.ClipRecord` (needs its `action_units`, e.g. from OpenFace)."""
    if getattr(record, "action_units", None) is None:
        name = getattr(record, "clip_id", "") or "the record"
        raise ValueError(f"annotate_record: {name} has no action_units; detect AU intensities (OpenFace, 0-5 scale, "
                         f"columns {', '.join(facs.AU_NAMES)}) and set record.action_units first")
    return annotate(record.action_units, record.frames, record.emotion, int(record.intensity), scorer, **kwargs)


def with_emotion_texts(record: Any, annotation: EmotionAnnotation) -> Any:
    """A copy of the record whose `emotion_texts` are the annotation's kept sentences."""
    return dataclasses.replace(record, emotion_texts=list(annotation.sentences))
