"""Character and word vocabularies (ids 0 = pad, 1 = unk), with jieba word boundaries."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

PAD, UNK = 0, 1
SPECIALS = ["[PAD]", "[UNK]"]


class Vocab:
    """A token <-> id map built from counts; tokens below `min_count` map to UNK."""

    def __init__(self, tokens: list[str]):
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls, counts: Counter, min_count: int = 1, max_size: int | None = None, specials: list[str] = SPECIALS
    ) -> Vocab:
        items = [(t, c) for t, c in counts.items() if c >= min_count and t not in specials]
        items.sort(key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            items = items[: max(0, max_size - len(specials))]
        return cls(list(specials) + [t for t, _ in items])

    def __len__(self) -> int:
        return len(self.itos)

    def id(self, token: str) -> int:
        return self.stoi.get(token, UNK)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, UNK) for t in tokens]

    def to_list(self) -> list[str]:
        return list(self.itos)


def normalize_char(ch: str) -> str:
    """Fold full-width ASCII to half-width and lower-case Latin, so vocab lookups generalise."""
    code = ord(ch)
    if 0xFF01 <= code <= 0xFF5E:
        ch = chr(code - 0xFEE0)
    elif code == 0x3000:
        ch = " "
    return ch.lower()


@lru_cache(maxsize=1)
def _t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


@lru_cache(maxsize=1)
def _t2s_table() -> dict[int, str]:
    """Traditional -> simplified one character to one character: OpenCC's t2s of every CJK char alone."""
    chars = [chr(i) for i in range(0x3400, 0xA000)]
    out = _t2s().convert("\n".join(chars)).split("\n")
    return {ord(a): b for a, b in zip(chars, out) if a != b and len(b) == 1}


def to_simplified(text: str) -> str:
    """Traditional characters folded to simplified ones with offsets kept, so traditional-Chinese data
    (DRCD) and input share the simplified characters' embeddings and jieba words. OpenCC's phrase-aware
    conversion (乾隆 stays 乾隆) when it keeps the length, else char by char."""
    out = _t2s().convert(text)
    return out if len(out) == len(text) else text.translate(_t2s_table())


# normalize_char's folding of full-width ASCII and the ideographic space, as one str.translate table.
_FOLD = {code: chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)} | {0x3000: " "}


def char_tokens(text: str) -> list[str]:
    """One token per character (offsets stay character offsets): normalize_char of each, done on the whole
    text when lower-casing keeps its length (a few characters, such as İ, lower-case to two)."""
    folded = to_simplified(text).translate(_FOLD)
    lowered = folded.lower()
    return list(lowered) if len(lowered) == len(folded) else [c.lower() for c in folded]


@lru_cache(maxsize=1)
def _jieba() -> Any:
    """jieba, imported the first time a model uses words, with its dictionary from $NLPCLI_HOME/jieba (read a
    first character at a time: `jieba_dict`), written there the first time."""
    import jieba

    from ..models.cache import home
    from .jieba_dict import install

    jieba.setLogLevel(logging.WARNING)
    where = home() / "jieba"
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        jieba.initialize()  # an unwritable home: jieba's own cache in the temp dir
        return jieba
    if not jieba.dt.initialized:
        install(jieba.dt, where)
    return jieba


def words(text: str) -> list[str]:
    """jieba segmentation (HMM off: deterministic and faster) of the text folded to simplified characters
    (`to_simplified`: same length, so the words still cover the text's offsets)."""
    return _jieba().lcut(to_simplified(text), HMM=False)


def char_word_tokens(text: str) -> list[str]:
    """For every character, the jieba word it belongs to (so word vectors align with chars)."""
    out: list[str] = []
    for w in words(text):
        out.extend([w] * len(w))
    return out


# What follows a text's last character in its last bigram (not a character: it never meets one in a text).
END = "[END]"


def bigram_tokens(chars: list[str]) -> list[str]:
    """For every character token, the pair it starts with the next one (the last one's pairs with END)."""
    return [a + b for a, b in zip(chars, [*chars[1:], END])]


def normalized_words(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct words of a word list as char_tokens reads text (simplified, full-width folded, lower-cased),
    and the row of the list each came from (the first, where several normalise alike). Words holding whitespace,
    or normalised to another length, are left out."""
    out: list[str] = []
    rows: list[int] = []
    seen: set[str] = set()
    for row, w in enumerate(words):
        if not w or any(c.isspace() for c in w):
            continue
        n = "".join(char_tokens(w))
        if len(n) != len(w) or n in seen:
            continue
        seen.add(n)
        out.append(n)
        rows.append(row)
    return out, rows


def build_bigram_vocab(texts: Iterable[str], min_count: int = 2, max_size: int = 100000) -> Vocab:
    counts: Counter = Counter()
    for t in texts:
        counts.update(bigram_tokens(char_tokens(t)))
    return Vocab.build(counts, min_count=min_count, max_size=max_size)


def build_char_vocab(texts: Iterable[str], min_count: int = 1) -> Vocab:
    counts: Counter = Counter()
    for t in texts:
        counts.update(char_tokens(t))
    return Vocab.build(counts, min_count=min_count)


def build_word_vocab(texts: Iterable[str], min_count: int = 2, max_size: int = 50000) -> Vocab:
    counts: Counter = Counter()
    for t in texts:
        counts.update(words(t))
    return Vocab.build(counts, min_count=min_count, max_size=max_size)


class CharWordVocab:
    """The char vocabulary plus, optionally, the jieba-word vocabulary of char+word models (ner, ie, qa) and the
    char-bigram vocabulary (ner).

    Assets: {"chars": [...], "words": [...], "bigrams": [...]} ("words", "bigrams" absent or empty when off), and
    a lexicon: {"lexicon": {"words": [...], ...}} (`lexicon.Lexicon`; absent when off).
    """

    def __init__(self, assets: dict):
        from .lexicon import Lexicon

        self.chars = Vocab(assets["chars"])
        self.words = Vocab(assets["words"]) if assets.get("words") else None
        self.bigrams = Vocab(assets["bigrams"]) if assets.get("bigrams") else None
        self.lexicon = Lexicon(assets["lexicon"]["words"]) if assets.get("lexicon") else None

    @staticmethod
    def build_assets(
        texts: list[str],
        char_min_count: int,
        use_words: bool,
        word_min_count: int,
        word_vocab_size: int,
        bigrams: tuple[int, int] | None = None,
    ) -> dict:
        """`bigrams`: (min_count, vocab_size) of a char-bigram vocabulary, None for none."""
        assets = {"chars": build_char_vocab(texts, char_min_count).to_list()}
        if use_words:
            assets["words"] = build_word_vocab(texts, word_min_count, word_vocab_size).to_list()
        if bigrams is not None:
            assets["bigrams"] = build_bigram_vocab(texts, *bigrams).to_list()
        return assets

    def encode(self, text: str) -> dict[str, list[int]]:
        """char_ids; word_ids (the id of each char's jieba word) when words are on; bigram_ids (the id of the
        pair each char starts) when bigrams are on; lexicon_ids (lexicon.SLOTS per char) with a lexicon."""
        chars = char_tokens(text)
        ids = {"char_ids": self.chars.ids(chars)}
        if self.words is not None:
            ids["word_ids"] = self.words.ids(char_word_tokens(text))
        if self.bigrams is not None:
            ids["bigram_ids"] = self.bigrams.ids(bigram_tokens(chars))
        if self.lexicon is not None:
            ids["lexicon_ids"] = self.lexicon.match(chars)
        return ids
