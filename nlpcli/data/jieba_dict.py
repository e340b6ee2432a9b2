"""jieba's prefix dictionary, loaded a first character at a time (so a one-line `predict` reads a few hundred
words of it, not half a million).

jieba looks a word up only at positions of the text it segments, and every word it looks up starts with the
character at that position; so the dictionary is kept in $NLPCLI_HOME/jieba as one marshal blob per first
character, and a blob is read when a text first needs it. Once many characters are in, the whole dictionary
is read and handed to jieba as a plain dict (no lookup overhead on large inputs)."""

from __future__ import annotations

import marshal
import os
import tempfile
from pathlib import Path
from typing import Any

SHARDS = "prefix-dict.shards"  # header length (8 bytes), marshal (format, total, {char: (offset, size)}), blobs
FORMAT = 1
# First characters read one by one before the rest is read at once (reading all costs about as much as a
# few thousand shards, and a plain dict is faster to look up).
WHOLE_AFTER = 1000


class LazyFreq(dict[str, int]):
    """jieba's FREQ (word or prefix -> count) that reads the words of a first character on first use."""

    def __init__(self, blob: memoryview, index: dict[str, tuple[int, int]], tokenizer: Any):
        super().__init__()
        self._blob, self._index, self._tokenizer, self._loaded = blob, index, tokenizer, 0

    def _load(self, first: str) -> None:
        offset, size = self._index.pop(first)
        self.update(marshal.loads(self._blob[offset : offset + size]))
        self._loaded += 1
        if self._loaded == WHOLE_AFTER:  # many characters in: read the rest, and jieba gets a plain dict
            for char in list(self._index):
                self._load(char)
            self._tokenizer.FREQ = dict(self)

    def __contains__(self, word: object) -> bool:
        if isinstance(word, str) and word and word[0] in self._index:
            self._load(word[0])
        return dict.__contains__(self, word)

    def __getitem__(self, word: str) -> Any:
        if word and word[0] in self._index:
            self._load(word[0])
        return dict.__getitem__(self, word)

    def get(self, word: str, default: Any = None) -> Any:
        if word and word[0] in self._index:
            self._load(word[0])
        return dict.get(self, word, default)


def install(tokenizer: Any, directory: Path) -> None:
    """Give an uninitialised jieba tokenizer its dictionary from `directory`'s shard file, writing that file
    first (from jieba's own initialisation, whose cache file also goes to `directory`) when it is missing."""
    path = directory / SHARDS
    loaded = _read(path)
    if loaded is None:
        tokenizer.tmp_dir = str(directory)
        tokenizer.initialize()
        _write(path, tokenizer.FREQ, tokenizer.total)
        return
    total, index, blob = loaded
    tokenizer.FREQ, tokenizer.total = LazyFreq(blob, index, tokenizer), total
    tokenizer.initialized = True


def _read(path: Path) -> tuple[float, dict[str, tuple[int, int]], memoryview] | None:
    try:
        data = path.read_bytes()
        size = int.from_bytes(data[:8], "little")
        fmt, total, index = marshal.loads(data[8 : 8 + size])
    except (OSError, ValueError, EOFError, TypeError):
        return None  # missing or unreadable: rebuilt
    if fmt != FORMAT or not isinstance(index, dict) or not total:
        return None
    return total, index, memoryview(data)[8 + size :]


def _write(path: Path, freq: dict[str, int], total: float) -> None:
    """The shard file, written whole or not at all (a temp file renamed); a failure leaves jieba working."""
    groups: dict[str, dict[str, int]] = {}
    for word, count in freq.items():
        groups.setdefault(word[0], {})[word] = count
    index: dict[str, tuple[int, int]] = {}
    blobs: list[bytes] = []
    offset = 0
    for first, words in groups.items():
        blob = marshal.dumps(words)
        index[first] = (offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    header = marshal.dumps((FORMAT, total, index))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{SHARDS}.")
        with os.fdopen(fd, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header)
            f.writelines(blobs)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass  # an unwritable home: jieba works all the same, from its own cache
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
