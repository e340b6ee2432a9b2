"""Word vectors: converting the synonyms package's word2vec file, and reading any word2vec file or ours.

Our file is one safetensors file: the tensor "vectors" [N, D] float32, and the words, in row order, as a
JSON list in its metadata under "words".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from ..errors import DataError
from . import cache

FILE = "vectors.safetensors"
MEMBER = "synonyms-3.10.2/synonyms/data/words.vector"
FORMAT = "nlpcli-word-vectors"


def convert(members: dict[str, bytes], out: Path, member: str = MEMBER) -> dict[str, Any]:
    """Write the word2vec binary member as vectors.safetensors into `out`."""
    words, vectors = parse_word2vec_binary(members[member], member)
    save_word_vectors(out / FILE, words, vectors)
    return {"words": len(words), "dimensions": int(vectors.shape[1])}


def save_word_vectors(path: Path, words: list[str], vectors: np.ndarray) -> None:
    metadata = {"format": FORMAT, "words": json.dumps(words, ensure_ascii=False)}
    cache.save_tensors(path, {"vectors": torch.from_numpy(np.ascontiguousarray(vectors, np.float32))}, metadata)


def read_word_vectors(path: str | Path) -> tuple[list[str], torch.Tensor]:
    """(words, float32 [N, D]) from our safetensors file or a word2vec text or binary file (sniffed)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    with open(p, "rb") as f:
        head = f.read(9)
    if p.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _read_ours(p)
    data = p.read_bytes()
    words, vectors = parse_word2vec_binary(data, p) if _is_binary(data, p) else parse_word2vec_text(data, p)
    return words, torch.from_numpy(vectors)


def _looks_like_safetensors(head: bytes) -> bool:
    # A safetensors file starts with a little-endian uint64 header length, then the JSON header's "{";
    # a word2vec file with "WORDS DIMENSIONS", where no "{" can stand at byte 8.
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def _read_ours(p: Path) -> tuple[list[str], torch.Tensor]:
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            vectors = f.get_tensor("vectors")
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise DataError(p, f"not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
    if meta.get("format") != FORMAT or "words" not in meta:
        raise DataError(p, "a safetensors file without nlpcli word vectors (no 'words' metadata)")
    words = json.loads(meta["words"])
    if len(words) != vectors.shape[0]:
        raise DataError(p, f"{len(words)} words for {vectors.shape[0]} vectors")
    return words, vectors.float()


def _header(data: bytes, source: str | Path) -> tuple[int, int, int]:
    """(words, dimensions, offset after the header line) of a word2vec file."""
    end = data.find(b"\n")
    parts = data[:end].split() if end > 0 else []
    if len(parts) != 2 or not all(x.isdigit() for x in parts):
        raise DataError(source, "not a word2vec file (the first line is not 'WORDS DIMENSIONS')", 1)
    n, dim = int(parts[0]), int(parts[1])
    # Checked before the [N, D] table is allocated: every row takes at least 2 bytes per value (text "0 ",
    # binary 4) and 2 for a word and its separator, so a header claiming more rows than fit is not this file's.
    room = len(data) - end - 1
    if dim < 1 or n * (2 * dim + 2) > room:
        raise DataError(
            source,
            f"the header claims {n:,} words of {dim:,} dimensions, which the file's {room:,} bytes cannot hold",
            1,
        )
    return n, dim, end + 1


def _is_binary(data: bytes, source: str | Path) -> bool:
    """Binary when the first record's bytes after the word are not 'D numbers' of text."""
    _, dim, pos = _header(data, source)
    line = data[pos : data.find(b"\n", pos) if data.find(b"\n", pos) > 0 else len(data)]
    fields = line.split(b" ")
    if len(fields) < dim + 1:
        return True
    try:
        [float(x) for x in fields[1 : dim + 1]]
    except ValueError:
        return True
    return False


def parse_word2vec_binary(data: bytes, source: str | Path) -> tuple[list[str], np.ndarray]:
    """word2vec's binary format: 'N D' line, then per word its UTF-8 bytes, a space, D little-endian float32."""
    n, dim, pos = _header(data, source)
    width = 4 * dim
    words, rows = [], np.empty((n, dim), np.float32)
    for i in range(n):
        while pos < len(data) and data[pos] in b"\n\r":  # the newline some writers put after each vector
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + width > len(data):
            raise DataError(source, f"truncated word2vec file: {i} of {n} words")
        words.append(data[pos:space].decode("utf-8", errors="replace"))
        rows[i] = np.frombuffer(data, "<f4", dim, space + 1)
        pos = space + 1 + width
    return words, rows


def parse_word2vec_text(data: bytes, source: str | Path) -> tuple[list[str], np.ndarray]:
    """word2vec's text format: 'N D' line, then 'word v1 ... vD' per line."""
    n, dim, pos = _header(data, source)
    lines = data[pos:].decode("utf-8", errors="replace").splitlines()
    words, rows = [], np.empty((n, dim), np.float32)
    for i in range(n):
        if i >= len(lines):
            raise DataError(source, f"truncated word2vec file: {i} of {n} words")
        fields = lines[i].rstrip().split(" ")
        if len(fields) != dim + 1:
            raise DataError(source, f"expected a word and {dim} numbers", i + 2)
        try:
            rows[i] = [float(x) for x in fields[1:]]
        except ValueError:
            raise DataError(source, "a vector value is not a number", i + 2) from None
        words.append(fields[0])
    return words, rows
