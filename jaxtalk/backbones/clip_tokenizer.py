"""CLIP's byte-level BPE tokenizer, offline, giving the same ids as transformers' `CLIPTokenizer`.

The merge list is OpenAI's `bpe_simple_vocab_16e6.txt.gz` (MIT), shipped in `jaxtalk/assets/` (see
`LICENSE-clip-bpe.txt` there), so nothing is downloaded. The pipeline follows transformers 5's CLIPTokenizer (which is
what CLIPTokenizer does without ftfy):

1. text cleaning: Unicode NFC, every whitespace run -> one space, lowercase;
2. pre-tokenisation with CLIP's pattern: the special tokens, English contractions ('s 't 're 've 'm 'll 'd), letter
   runs, single digits, runs of other non-space characters;
3. each piece as bytes mapped to printable characters (GPT-2's byte table), the last character tagged `</w>`,
   then greedy BPE by merge rank;
4. `<|startoftext|>` (49406) + ids + `<|endoftext|>` (49407), truncated to `context_length` (the end token kept)
   and padded with `pad_token_id` (49407 as transformers; OpenAI's `clip.tokenize` pads with 0 — either works with
   the `clip_text` pooling, which takes the first end token / the maximal id).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import os
import unicodedata
from collections.abc import Sequence

import numpy as np
import regex as _regex  # Unicode classes \p{L} / \p{N}, which CLIP's pattern needs and `re` lacks

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_WHITESPACE = r"\s+"


def default_bpe_path() -> str:
    """Path of the shipped OpenAI CLIP merge list."""
    return str(importlib.resources.files("jaxtalk") / "assets" / "clip_bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_merges(bpe_path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The 48,894 merges of the CLIP vocabulary (the file's first line is a header)."""
    path = default_bpe_path() if bpe_path is None else os.fspath(bpe_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP BPE merge list not found at {path}; reinstall jaxtalk (it ships the file)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path}: expected {_NUM_MERGES} merge lines of two symbols after the header")
    return merges


def build_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: 256 byte symbols, the same with `</w>`, one token per merge, then the two special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}


class CLIPTokenizer:
    """Text -> CLIP token ids. `tokenizer(["a smiling face"])` gives an int32 array (B, context_length)."""

    def __init__(self, bpe_path: str | os.PathLike | None = None, *, context_length: int = CONTEXT_LENGTH,
                 pad_token_id: int = EOS_ID):
        if context_length < 2:
            raise ValueError(f"context_length must hold at least the start and end tokens, got {context_length}")
        merges = read_merges(bpe_path)
        self.encoder = build_vocab(merges)
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self.pad_token_id = pad_token_id
        self._pattern = _regex.compile(_PATTERN)
        self._whitespace = _regex.compile(_WHITESPACE)
        self._bpe = functools.lru_cache(maxsize=1 << 16)(self._bpe_uncached)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def clean(self, text: str) -> str:
        """NFC, whitespace runs -> one space, lowercase (transformers' CLIPTokenizer normaliser). Lowercasing is
        per character, as the Rust normaliser does: a word-final capital sigma becomes σ, not str.lower's ς."""
        text = self._whitespace.sub(" ", unicodedata.normalize("NFC", text))
        return "".join(ch.lower() for ch in text)

    def _bpe_uncached(self, piece: str) -> tuple[str, ...]:
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word[:-1], word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without the start / end tokens."""
        ids: list[int] = []
        for piece in self._pattern.findall(self.clean(text)):
            if piece in (BOS_TOKEN, EOS_TOKEN):
                ids.append(self.encoder[piece])
                continue
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (special tokens and padding dropped; `</w>` becomes a space)."""
        tokens = "".join(self.decoder[int(i)] for i in ids if int(i) not in (BOS_ID, EOS_ID))
        raw = bytearray(32 if c == " " else self.byte_decoder[c] for c in tokens.replace("</w>", " "))
        return raw.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: str | Sequence[str], *, context_length: int | None = None,
                 truncate: bool = True) -> np.ndarray:
        """Start + ids + end, truncated (keeping the end token) and padded: int32 (B, context_length).

        With `truncate=False` a text longer than `context_length - 2` tokens is an error (as `clip.tokenize`).
        """
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else int(context_length)
        out = np.full((len(texts), length), self.pad_token_id, dtype=np.int32)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > length - 2:
                if not truncate:
                    raise ValueError(f"text {row} has {len(ids)} tokens, more than the {length - 2} that fit in "
                                     f"context_length={length}; shorten it or pass truncate=True")
                ids = ids[:length - 2]
            seq = [BOS_ID, *ids, EOS_ID]
            out[row, :len(seq)] = seq
        return out
