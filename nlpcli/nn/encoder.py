"""The shared encoder block of the extractive tasks (ner, ie, qa): a from-scratch char+word DGCNN or BiLSTM, or
a Hugging Face encoder. One config section (`[encoder]`), one vocabulary/tokenizer path, one module each."""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..config import DROPOUT, POSITIVE, Section, opt
from ..data import vocab as V
from ..errors import ConfigError
from . import hf
from .bilstm import BiLSTM
from .dgcnn import DGCNN, CharWordEmbedding

SCRATCH = "dgcnn"
BILSTM = "bilstm"  # the other from-scratch encoder: the same char+word embeddings, a BiLSTM for the convolutions
AUTO = "auto"


@dataclass(frozen=True)
class AutoChoice:
    """A candidate of `--encoder auto` (a task lists them best first, as measured): the encoder settings it
    takes, the catalogue entry it needs in the cache, and what it measured (said when it is not pulled)."""

    settings: tuple[tuple[str, Any], ...]
    needs: str
    gain: str


@dataclass
class EncoderConfig(Section):
    """`name` "dgcnn": char (+ jieba word) embeddings and gated dilated convolutions, trained from scratch;
    "bilstm": the same embeddings and a bidirectional LSTM, from scratch; otherwise a Hugging Face encoder (hub
    name or local directory), fine-tuned at `lr`."""

    name: str = opt(
        SCRATCH,
        "dgcnn (char+word convolutions from scratch), bilstm (char+word BiLSTM from scratch), or a pretrained "
        "encoder: m3e-small, e5-small (`nlpcli models pull`), a local Hugging Face directory or a hub name.",
    )
    hidden_size: int = opt(
        256,
        "Width of the from-scratch encoder: the DGCNN's char embeddings and convolutions; the BiLSTM's output "
        "(two directions of half of it, over embeddings of half of it).",
        **POSITIVE,
    )
    dilations: list[int] = opt(
        [1, 2, 4, 8, 1, 1], "Dilation of each gated convolution block (one block each).", **POSITIVE
    )
    kernel_size: int = opt(3, "Width of each convolution.", **POSITIVE)
    dropout: float = opt(0.1, "Dropout inside the DGCNN blocks (on the BiLSTM's output).", **DROPOUT)
    embed_dropout: float = opt(0.2, "Dropout on the char+word embeddings.", **DROPOUT)
    use_words: bool = opt(True, "Add the embedding of the jieba word each char belongs to.")
    word_dim: int = opt(128, "Width of the jieba word embeddings (projected to hidden_size).", **POSITIVE)
    word_min_count: int = opt(2, "Training occurrences a word needs to enter the word vocabulary.")
    word_vocab_size: int = opt(50000, "Most words kept in the word vocabulary (pretrained vectors' words included).")
    # Char pairs mark word boundaries without a segmenter: in a run of names written without separators
    # (王学萍王荣生), the pair across a boundary (萍王) is a rare one.
    use_bigrams: bool = opt(False, "Add embeddings of the two char bigrams each char is in (ner only).")
    bigram_dim: int = opt(50, "Width of the char-bigram embeddings (projected to the char width).", **POSITIVE)
    bigram_min_count: int = opt(2, "Training occurrences a char bigram needs to enter the bigram vocabulary.")
    bigram_vocab_size: int = opt(100000, "Most char bigrams kept in the bigram vocabulary.")
    # All the words of a large word list found in the text, not one segmentation of it: each char reads the
    # mean pretrained vector of the words it begins, is inside, ends and is (SoftLexicon, data/lexicon.py).
    # The vectors and their words go into the model, so it needs nothing at prediction time.
    lexicon: str = opt(
        "",
        "Pretrained word vectors whose words each char is matched against (ner only): word2vec-zhwiki, or a "
        "word2vec text/binary file; empty for none.",
    )
    char_min_count: int = opt(1, "Training occurrences a char needs to enter the char vocabulary.")
    char_dim: int = opt(0, "Char embedding width; 0: hidden_size (pretrained vectors set their own width).")
    # Pretrained vectors initialise the jieba-word embeddings and the char embeddings of the chars they have,
    # and their words join the word vocabulary (up to word_vocab_size), so words never seen in training still
    # get a meaningful vector.
    word_vectors: str = opt(
        "", "Pretrained word vectors for the dgcnn encoder: word2vec-zhwiki, or a word2vec text/binary file."
    )
    freeze_word_vectors: bool = opt(False, "Keep the pretrained word table fixed (its projection still trains).")
    # 2e-4, not the usual 3e-5: in CPU budgets of about 850-1,500 steps m3e-small scored higher with it than with
    # 1e-4 on CLUENER (fp32 and bf16), CMeEE and SKE, and 1e-4 beat 3e-5 by far; 3e-4 was lower again on CMeEE
    # (docs/results.md).
    lr: float = opt(2e-4, "Learning rate of a pretrained encoder (the task's heads use trainer.lr).", low_open=True)

    @property
    def scratch(self) -> bool:
        return self.name in (SCRATCH, BILSTM)

    def vocab_assets(self, texts: list[str]) -> dict[str, Any]:
        """Char (and word, char-bigram) vocabularies of a from-scratch encoder, built from training texts."""
        bigrams = (self.bigram_min_count, self.bigram_vocab_size) if self.use_bigrams else None
        return V.CharWordVocab.build_assets(
            texts, self.char_min_count, self.use_words, self.word_min_count, self.word_vocab_size, bigrams
        )


class ScratchEncoder(nn.Module):
    """Char+word embeddings then a DGCNN or a BiLSTM. Tasks may add their own inputs between the two stages
    (ie: positions; qa: question features), so both are exposed: `embed(...)` and `encode(x, mask)`."""

    out_dim: int

    def __init__(
        self,
        cfg: EncoderConfig,
        num_chars: int,
        num_words: int,
        num_bigrams: int = 0,
        num_lexicon: int = 0,
        lexicon_dim: int = 0,
    ):
        super().__init__()
        word_dim = cfg.word_dim if cfg.use_words and num_words else 0
        bigram_dim = cfg.bigram_dim if cfg.use_bigrams and num_bigrams else 0
        # The BiLSTM reads embeddings half its width wide, as each of its directions is (a wider input buys
        # little for its cost: the LSTM's input product is as large as its recurrent one).
        embed_dim = cfg.hidden_size // 2 if cfg.name == BILSTM else cfg.hidden_size
        self.embed = CharWordEmbedding(
            num_chars,
            embed_dim,
            num_words,
            word_dim,
            cfg.embed_dropout,
            cfg.char_dim,
            num_bigrams,
            bigram_dim,
            num_lexicon,
            lexicon_dim,
        )
        if cfg.freeze_word_vectors and self.embed.words is not None:
            self.embed.words.weight.requires_grad_(False)
        # Two attribute names, so that a DGCNN checkpoint's weights keep their names.
        self.dgcnn = (
            DGCNN(cfg.hidden_size, list(cfg.dilations), cfg.kernel_size, cfg.dropout) if cfg.name != BILSTM else None
        )
        self.bilstm = BiLSTM(embed_dim, cfg.hidden_size, cfg.dropout) if cfg.name == BILSTM else None
        self.out_dim = cfg.hidden_size

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        layers = self.dgcnn if self.dgcnn is not None else self.bilstm
        assert layers is not None
        return layers(x, mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embed(batch["char_ids"], batch.get("word_ids"), batch.get("bigram_ids"), batch.get("lexicon_ids"))
        return self.encode(x, batch["attention_mask"])


class HFEncoder(nn.Module):
    """A Hugging Face encoder's last hidden states."""

    out_dim: int

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.out_dim = model.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch:  # question / passage pairs
            inputs["token_type_ids"] = batch["token_type_ids"]
        return self.model(**inputs).last_hidden_state

    def max_tokens(self, tokenizer: Any = None) -> int:
        """Tokens (special ones included) one input may hold: the position table, less the rows that
        RoBERTa-style models skip (their positions count from padding_idx + 1), and the tokenizer's own limit."""
        n = int(getattr(self.model.config, "max_position_embeddings", 512))
        table = getattr(getattr(self.model, "embeddings", None), "position_embeddings", None)
        pad = getattr(table, "padding_idx", None)
        if pad is not None:
            n -= pad + 1
        return min(n, int(getattr(tokenizer, "model_max_length", None) or n))


Encoder = ScratchEncoder | HFEncoder


@dataclass
class Encoded:
    """Model inputs of one text and, per position, the [start, end) characters it covers.

    Spans move between characters and positions here, the same way for the char vocabulary (one position a
    character) and for a tokenizer (a position a piece; special tokens cover no character)."""

    ids: Mapping[str, Sequence[int]]
    offsets: list[tuple[int, int]]  # (0, 0) marks special tokens, which never start or end a span

    @cached_property
    def _starts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for p, (s, e) in enumerate(self.offsets):
            if e > s:
                out.setdefault(s, p)
        return out

    @cached_property
    def _ends(self) -> dict[int, int]:
        return {e - 1: p for p, (s, e) in enumerate(self.offsets) if e > s}

    def positions(self, start: int, end: int) -> tuple[int, int] | None:
        """Positions of the character span [start, end] (inclusive); None when a piece boundary cuts it."""
        first, last = self._starts.get(start), self._ends.get(end)
        return None if first is None or last is None else (first, last)

    def chars(self, first: int, last: int) -> tuple[int, int]:
        """The character span [start, end] (inclusive) of positions first..last."""
        return self.offsets[first][0], self.offsets[last][1] - 1

    def spannable(self) -> list[bool]:
        """Which positions cover characters (may start or end a span)."""
        return [e > s for s, e in self.offsets]


def pad_id_of(tokenizer: Any) -> int:
    """The id a tokenizer pads input ids with (XLM-R's is 1); 0 without a tokenizer or a pad token."""
    return int(getattr(tokenizer, "pad_token_id", None) or 0)


class TextEncoder:
    """Text -> ids and character offsets, for either kind of encoder (the vocabulary or the tokenizer).

    Results are cached: training repeats every text each epoch, and SQuAD-style data repeats a paragraph
    for each of its questions (jieba, lexicon matching and tokenizers cost far more than a lookup). The cache
    holds a training set as large as MSRA news (60,000 windows), so that no epoch encodes a text again. The
    vocabulary's ids are kept as one int array per field: a tenth of a list's memory (a lexicon gives 16 ids a
    character, each a Python int in a list), one allocation each, and numpy pads them without a conversion.
    Not as tensors: their several small allocations each, long-lived among a training step's large temporary
    ones, fragmented the C heap until a training run took 12 GB."""

    CACHE_SIZE = 100_000

    def __init__(self, assets: dict[str, Any], tokenizer: Any = None, limit: int = 512):
        self.tokenizer = tokenizer
        self.limit = limit  # a tokenizer's inputs are cut here: the encoder's positions (HFEncoder.max_tokens)
        self.pad_id = pad_id_of(tokenizer)
        self.vocab = V.CharWordVocab(assets) if tokenizer is None else None
        self._cache: dict[str, Encoded] = {}

    def pad(self, encoded: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """The inputs of several texts, right-padded: ids with the tokenizer's pad id (RoBERTa-style models
        number positions from it), everything else with 0."""
        from ..data.batching import pad_ids

        return {k: pad_ids([e.ids[k] for e in encoded], self.pad_id if k == "input_ids" else 0) for k in encoded[0].ids}

    def __call__(self, text: str) -> Encoded:
        found = self._cache.get(text)
        if found is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            found = self._cache[text] = self._encode(text)
        return found

    def _encode(self, text: str) -> Encoded:
        if self.tokenizer is not None:
            enc = self.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=self.limit)
            return Encoded({"input_ids": enc["input_ids"]}, [tuple(o) for o in enc["offset_mapping"]])
        assert self.vocab is not None
        ids = {k: array("i", v) for k, v in self.vocab.encode(text).items()}
        return Encoded(ids, [(i, i + 1) for i in range(len(text))])


@dataclass
class NewEncoder:
    """A freshly made encoder: its config (pretrained vectors fix some widths), module, assets and tokenizer,
    and a note of what `auto` chose."""

    config: EncoderConfig
    module: Encoder
    assets: dict[str, Any]
    tokenizer: Any = None
    note: str = ""


# Above this many training texts `--encoder auto` skips pretrained encoders for the DGCNN. On a CPU a pretrained
# encoder takes several times the DGCNN's time per step, so in a budget of tens of minutes it sees a set this
# large about once while the DGCNN passes over it several times: the DGCNN won on the largest measured NER set
# and the pretrained encoder on the smaller ones (docs/encoder-auto.md has the figures and their commands).
LARGE_TRAINING_SET = 30_000


def resolve_auto(
    cfg: EncoderConfig, choices: Sequence[AutoChoice], examples: int = 0, large: int = LARGE_TRAINING_SET
) -> tuple[EncoderConfig, str]:
    """`auto`: the first choice whose catalogue entry is in the cache (and verified), else the from-scratch
    DGCNN; pretrained encoders only for at most `large` training texts (`examples`), and the DGCNN with the
    word vectors that the config names. Returns the config and a one-line note of what was taken and why (what
    was skipped, and when it fell back, what a pull would give)."""
    from ..models.cache import read_marker

    if cfg.word_vectors:  # only the DGCNN reads word vectors: naming them asks for it
        return cfg.updated({"name": SCRATCH}), (
            f"encoder auto: dgcnn with the word vectors {cfg.word_vectors} (--word-vectors asks for the DGCNN)"
        )
    if cfg.lexicon:  # as do lexicon matches
        return cfg.updated({"name": SCRATCH}), (
            f"encoder auto: dgcnn with the lexicon {cfg.lexicon} (--lexicon asks for a from-scratch encoder)"
        )
    skipped: list[str] = []
    candidates = list(choices)
    if examples > large and any(dict(c.settings).get("name", SCRATCH) != SCRATCH for c in choices):
        candidates = [c for c in choices if dict(c.settings).get("name", SCRATCH) == SCRATCH]
        skipped.append(
            f"{examples:,} training texts, more than {large:,}: the DGCNN trains several times the steps of a "
            "pretrained encoder and wins on data this large"
        )
    for choice in candidates:
        marker = read_marker(choice.needs)
        if marker is None:
            continue
        if marker.get("verified") is False:
            skipped.append(
                f"{choice.needs} skipped: its cache entry was never verified (pulled with --no-verify); "
                "name it to use it anyway"
            )
            continue
        why = "; ".join([choice.gain, *skipped])
        return cfg.updated(dict(choice.settings)), f"encoder auto: {choice.needs} ({why})"
    why = f" ({'; '.join(skipped)})" if skipped else ""
    hint = f"; `nlpcli models pull {candidates[0].needs}` would give {candidates[0].gain}" if candidates else ""
    return cfg.updated({"name": SCRATCH}), f"encoder auto: dgcnn from scratch{why}{hint}"


def create_encoder(cfg: EncoderConfig, texts: list[str], auto: Sequence[AutoChoice] = ()) -> NewEncoder:
    """A new encoder for training from its config and the training texts (`auto`: the task's choices)."""
    if cfg.name == AUTO:
        cfg, note = resolve_auto(cfg, auto, examples=len(texts))
        new = create_encoder(cfg, texts)
        new.note = note
        new.assets["encoder_note"] = note  # kept in the checkpoint: what auto chose and why
        return new
    if cfg.scratch:
        lexicon = _read_lexicon(cfg.lexicon) if cfg.lexicon else None
        extra = {"lexicon": lexicon[0]} if lexicon else {}
        if cfg.word_vectors:
            new = _scratch_from_vectors(cfg, texts, extra)
        else:
            assets: dict[str, Any] = {**cfg.vocab_assets(texts), **extra}
            new = NewEncoder(cfg, build_scratch(cfg, assets), assets)
        if lexicon:
            table = cast(ScratchEncoder, new.module).embed.lexicon
            assert table is not None
            with torch.no_grad():
                table.weight[1:] = lexicon[1]
                table.weight[0] = 0.0
        return new
    if cfg.lexicon:
        raise ConfigError(f"--lexicon is for the from-scratch encoders (dgcnn, bilstm), not {cfg.name}")
    from ..models import resolve_encoder

    model, tokenizer = hf.load_pretrained(resolve_encoder(cfg.name), "encoder")
    return NewEncoder(cfg, HFEncoder(model), {}, tokenizer)


def _scratch_from_vectors(cfg: EncoderConfig, texts: list[str], more_assets: dict[str, Any]) -> NewEncoder:
    """A from-scratch encoder whose char and word tables start from pretrained word vectors (docs/tasks/qa.md).

    The vectors' words join the word vocabulary after the training words (most frequent first, up to
    word_vocab_size) and their single characters the char vocabulary; rows without a vector start random at
    the vectors' scale. Char and word tables take the vectors' width and are projected to hidden_size.
    `more_assets` join the assets before the model is built (the lexicon's words, which size its table)."""
    from ..models import load_word_vectors

    words, vectors = load_word_vectors(cfg.word_vectors)
    dim = int(vectors.shape[1])
    cfg = cfg.updated({"use_words": True, "word_dim": dim, "char_dim": dim})
    assets: dict[str, Any] = {**cfg.vocab_assets(texts), **more_assets}
    known = set(assets["words"])
    extra = [w for w in words if w not in known][: max(0, cfg.word_vocab_size - len(assets["words"]))]
    assets["words"] = assets["words"] + extra
    chars = set(assets["chars"])
    assets["chars"] = assets["chars"] + [w for w in words if len(w) == 1 and w not in chars and not w.isspace()]
    module = build_scratch(cfg, assets)
    row = {w: i for i, w in enumerate(words)}
    scale = float(vectors.std())
    with torch.no_grad():
        for table, vocab in ((module.embed.chars, assets["chars"]), (module.embed.words, assets["words"])):
            assert table is not None
            table.weight.normal_(0.0, scale)
            found = [(i, row[t]) for i, t in enumerate(vocab) if t in row and i >= len(V.SPECIALS)]
            if found:
                ids, rows = zip(*found)
                table.weight[list(ids)] = vectors[list(rows)]
            table.weight[0] = 0.0  # padding
    assets["word_vectors"] = {
        "source": cfg.word_vectors,
        "dim": dim,
        "words_with_vector": sum(w in row for w in assets["words"]),
        "chars_with_vector": sum(c in row for c in assets["chars"]),
    }
    return NewEncoder(cfg, module, assets)


def rebuild_encoder(cfg: EncoderConfig, assets: dict[str, Any], directory: Path | None) -> tuple[Encoder, Any]:
    """The encoder of a saved pipeline (untrained weights; the checkpoint's are loaded after): (module, tokenizer)."""
    if cfg.scratch:
        return build_scratch(cfg, assets), None
    if directory is None:
        raise ConfigError("a Hugging Face encoder is rebuilt from a checkpoint directory")
    model, tokenizer = hf.rebuild(directory, "encoder")
    return HFEncoder(model), tokenizer


def build_scratch(cfg: EncoderConfig, assets: dict[str, Any]) -> ScratchEncoder:
    lexicon = assets.get("lexicon") or {}
    return ScratchEncoder(
        cfg,
        len(assets["chars"]),
        len(assets.get("words") or []),
        len(assets.get("bigrams") or []),
        len(lexicon.get("words") or []) + 1 if lexicon else 0,
        int(lexicon.get("dim", 0)),
    )


def _read_lexicon(source: str) -> tuple[dict[str, Any], torch.Tensor]:
    """The lexicon of the word vectors `source` (a catalogue name or a file): its asset (the words, normalised
    as text is) and the vectors of those words, the rows of the model's fixed lexicon table after row 0."""
    from ..models import load_word_vectors

    words, vectors = load_word_vectors(source)
    kept, rows = V.normalized_words(words)
    return {"source": source, "dim": int(vectors.shape[1]), "words": kept}, vectors[rows]
