"""The offline CLIP tokenizer gives transformers' CLIPTokenizer ids, built from the same merge list."""

import gzip
import json

import numpy as np
import pytest
import transformers

from jaxtalk.backbones.clip_tokenizer import BOS_ID, EOS_ID, CLIPTokenizer, default_bpe_path

CORPUS = [
    "A photo of a cat.",
    "The woman smiles warmly, her eyes crinkling with joy.",
    "He frowns deeply; his brows knit together in anger!",
    "A surprised face: wide-open eyes, raised eyebrows and a dropped jaw.",
    "Sad expression with drooping lip corners and a slightly lowered gaze...",
    "Disgusted — the upper lip raises and the nose wrinkles.",
    "Fearful, tense, with stretched lips and raised inner brows?",
    "contempt: one corner of the mouth tightens and rises (unilaterally).",
    "neutral",
    "HAPPY!!! VERY HAPPY!!!",
    "She's happy, they're calm, we've won, I'm fine, you'll see, he'd go, isn't it?",
    "Intensity level 3 of 3 at 25 fps, 1920-d features, 0.5 s windows.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 -42 +7 1e-5 2024-06-01",
    "email me at someone@example.com or visit https://example.org/path?q=1&x=2",
    "tabs\tand\nnewlines\r\nand    multiple   spaces",
    "   leading and trailing whitespace   ",
    "Café crème brûlée à la française, naïve coöperation.",
    "Ünïcödé ÄÖÜ ß ẞ ñ Ñ ø Ø å Å æ Æ œ Œ",
    "Greek: Καλημέρα ΣΟΦΙΑ, ΟΔΟΣ",
    "Русский текст: улыбка и грусть.",
    "中文：她在微笑。日本語：彼は怒っている。한국어: 행복해요",
    "Emoji: 😀 😢 😡 😱 🤢 😐 👍🏽 ❤️",
    "Arabic: مرحبا بالعالم and Hebrew: שלום",
    "Hindi: नमस्ते दुनिया",
    "Combining: e\u0301 a\u0308 n\u0303 (should be NFC-normalised)",
    "Ligatures ﬁ ﬂ and full-width ＡＢＣ １２３",
    "Quotes “curly” ‘single’ «guillemets» „low“",
    "Dashes – — ‒ and ellipsis … and bullets • ·",
    "Math: x² + y³ = z½, α β γ ∑ ∫ √ ∞ ≠ ≤ ≥",
    "Symbols: © ® ™ § ¶ † ‡ ° € £ ¥ ₹ $ % ^ & * # @ ~ ` | \\ / < > { } [ ]",
    "<|startoftext|> a prompt with special tokens inside <|endoftext|>",
    "it's 'quoted' and \"double quoted\" and o'clock and rock'n'roll",
    "Can't won't shouldn't y'all ma'am",
    "UPPER lower MiXeD CaSe",
    "a" * 120,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "the the the the the the the the",
    "mouth_open=0.8, jaw_drop=0.3; blink_rate=12/min",
    "#hashtag @mention $cashtag",
    "newline at end\n",
    "",
    " ",
    "!!!???...,,,;;;:::",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "Her lips press together tightly while her cheeks raise, showing a restrained, polite smile.",
    "The speaker's eyebrows lift repeatedly as he emphasises each word in surprise and delight.",
    " ".join(["a long description of a very expressive talking face"] * 12),
    "The cat sat on the mat. The dog didn't.",
    "2 × 3 = 6; 7 ÷ 7 = 1; 10 − 4 = 6",
    "Zero-width\u200bspace and non\u00a0breaking\u2003em space",
]


def _hf_tokenizer(tmp_path):
    """transformers' CLIPTokenizer from vocab.json / merges.txt derived here from the shipped merge list."""
    with gzip.open(default_bpe_path(), "rt", encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:49152 - 256 - 2 + 1]]
    byte_chars = [chr(b) for b in range(33, 127)] + [chr(b) for b in range(161, 173)] + [chr(b) for b in range(174, 256)]
    kept = {ord(c) for c in byte_chars}
    extra = [chr(256 + i) for i in range(256 - len(byte_chars))]
    symbols, it = [], iter(extra)
    for b in range(256):
        symbols.append(chr(b) if b in kept else next(it))
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>",
                                                                                       "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                         encoding="utf-8")
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    return transformers.CLIPTokenizer(vocab=vocab, merges=[tuple(x.split()) for x in lines if x])


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return CLIPTokenizer(), _hf_tokenizer(tmp_path_factory.mktemp("clip_vocab"))


def test_ids_match_transformers_on_corpus(tokenizers):
    ours, hf = tokenizers
    assert len(CORPUS) >= 50
    got = ours(CORPUS)
    want = np.asarray(hf(CORPUS, padding="max_length", max_length=77, truncation=True)["input_ids"])
    assert got.shape == want.shape == (len(CORPUS), 77)
    mismatched = [CORPUS[i] for i in range(len(CORPUS)) if not np.array_equal(got[i], want[i])]
    assert not mismatched, f"{len(mismatched)} texts differ, first: {mismatched[:3]}"
    for text in CORPUS[:10]:  # unpadded, no special tokens
        assert ours.encode(text) == hf(text, add_special_tokens=False)["input_ids"]


def test_framing_truncation_and_padding(tokenizers):
    ours, _ = tokenizers
    ids = ours(["a face", "word " * 200])
    assert ids.dtype == np.int32 and ids[0, 0] == BOS_ID and ids[1, 0] == BOS_ID
    assert ids[1, -1] == EOS_ID and (ids[1, 1:-1] != EOS_ID).all()  # truncated, end token kept
    n = len(ours.encode("a face"))
    assert ids[0, n + 1] == EOS_ID and (ids[0, n + 1:] == EOS_ID).all()
    zero_pad = CLIPTokenizer(pad_token_id=0)(["a face"], context_length=12)
    assert zero_pad.shape == (1, 12) and (zero_pad[0, n + 2:] == 0).all() and zero_pad[0, n + 1] == EOS_ID
    with pytest.raises(ValueError, match="more than the 75 that fit"):
        ours(["word " * 200], truncate=False)
    assert ours.decode(ours(["A smiling face, eyes closed!"])[0]) == "a smiling face , eyes closed !"
