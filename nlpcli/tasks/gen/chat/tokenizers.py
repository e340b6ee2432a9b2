"""The two tokenizers of chat: characters (from scratch, or an lm checkpoint's) and a Hugging Face model's, with the
[CLS] / [SEP] and speaker tokens a dialogue is written with."""

from __future__ import annotations

from typing import Any

from ....data import vocab as V

CLS, SEP = "[CLS]", "[SEP]"
CHAR_SPECIALS = [*V.SPECIALS, CLS, SEP]  # [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3
SPEAKER_TOKENS = ["[speaker1]", "[speaker2]"]


class CharTokenizer:
    """Characters of the training data, as written (replies keep full-width punctuation); or, for a model
    started from an lm checkpoint, the lm's characters, normalised as the lm reads them (full-width ASCII
    folded, traditional to simplified, whitespace dropped), with its boundary token as [CLS] and [SEP]."""

    def __init__(self, chars: list[str], cls: str = CLS, sep: str = SEP, normalize: bool = False):
        self.vocab = V.Vocab(chars)
        self.cls_id, self.sep_id, self.pad_id = self.vocab.id(cls), self.vocab.id(sep), V.PAD
        self.banned_ids = sorted({V.PAD, V.UNK, self.cls_id} - {self.sep_id})
        self.size = len(self.vocab)
        self.normalize = normalize

    def encode(self, text: str) -> list[int]:
        if self.normalize:
            return self.vocab.ids([c for c in V.char_tokens(text) if c.strip()])
        return self.vocab.ids(text)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab.itos[i] for i in ids)

    def char_count(self, ids: list[int]) -> int:
        return len(ids)


class HFTokenizer:
    """A Hugging Face tokenizer with [CLS]/[SEP]-like tokens (its own, or added)."""

    def __init__(self, tokenizer: Any, special: dict[str, Any]):
        self.tok = tokenizer
        ids = tokenizer.convert_tokens_to_ids
        self.cls_id, self.sep_id, self.pad_id = ids(special["cls"]), ids(special["sep"]), ids(special["pad"])
        self.speaker_ids = [ids(s) for s in special["speakers"]]
        self.banned_ids = sorted({self.cls_id, self.pad_id, *self.speaker_ids} - {self.sep_id})
        self.size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        # BERT-style Chinese vocabularies decode with spaces between characters; the corpus has none.
        return "".join(self.tok.decode(ids, skip_special_tokens=True).split())

    def char_count(self, ids: list[int]) -> int:
        return len(self.decode(ids))


def add_chat_tokens(tokenizer: Any, model: Any) -> dict[str, Any]:
    """Make sure the tokenizer has [CLS]/[SEP]-like, pad and speaker tokens; grow the embeddings to match."""
    cls = tokenizer.cls_token or tokenizer.bos_token
    sep = tokenizer.sep_token or tokenizer.eos_token
    extra = {}
    if cls is None:
        extra["cls_token"] = cls = CLS
    if sep is None:
        extra["sep_token"] = sep = SEP
    if extra:
        tokenizer.add_special_tokens(extra)
    missing = [s for s in SPEAKER_TOKENS if s not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return {"cls": cls, "sep": sep, "pad": tokenizer.pad_token or sep, "speakers": SPEAKER_TOKENS}
