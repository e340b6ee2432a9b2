"""What the task code calls: an encoder name or path to something transformers can load, word vectors, and the
directory a model name (`nlpcli models build NAME`) stands for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import cache
from .catalogue import CATALOGUE, ENCODER, WORD_VECTORS
from .recipes import RECIPES

if TYPE_CHECKING:
    import torch

VECTORS_FILE = "vectors.safetensors"  # word_vectors.FILE, named here so resolving needs no torch import
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a bare name: nothing that reads as a path


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """The directory a `--model`/`--init` value names: a path that exists is itself; a bare name that is not a
    path here is a built model's cache entry ($NLPCLI_HOME/models/NAME). A recipe that is not built yet is a
    ConfigError `NAME is not built yet; run: nlpcli models build NAME`; anything else is returned as a path
    (for the caller to say that it does not exist)."""
    path = Path(name_or_path)
    name = str(name_or_path)
    if path.exists() or not MODEL_NAME.fullmatch(name):
        return path
    marker = cache.read_marker(name)
    if marker is not None and marker.get("recipe"):
        return cache.entry_path(name)
    if name in RECIPES:
        # Not a CheckpointError: callers that try other readings of a name on that error (chat --init falls
        # back to a Hugging Face model name) must stop here.
        raise ConfigError(f"{name} is not built yet; run: nlpcli models build {name}")
    return path


def resolve_encoder(name_or_path: str) -> str:
    """The string to give `transformers.AutoModel/AutoTokenizer.from_pretrained` for an --encoder value.

    - A catalogue encoder name (`m3e-small`, `e5-small`) resolves to its directory in the cache
      ($NLPCLI_HOME/models/NAME); if it has not been pulled, a ConfigError whose message ends
      `run: nlpcli models pull NAME`. A catalogue name of another kind (word vectors) is a ConfigError.
    - An existing local directory is returned as it is (not checked further: transformers reports what
      is missing in it).
    - A value that can only be a path (starts with `/`, `./`, `../` or `~`) but is no directory is a
      ConfigError, since the hub would only answer "not found" for it later.
    - Anything else is returned unchanged, to be looked up on the Hugging Face hub (which needs network).
    Nothing is downloaded or loaded here.

    For callers: both catalogue encoders are sentence encoders used with mean pooling over
    last_hidden_state. e5-small's pooler_output is all zeros (its 4-bit file has no pooler), and e5 was
    trained with "query: " / "passage: " before each text. m3e-small is for non-commercial research only.
    """
    entry = CATALOGUE.get(name_or_path)
    if entry is not None:
        if entry.kind != ENCODER:
            raise ConfigError(f"{name_or_path} is {entry.kind}, not an encoder")
        path = cache.cached_path(entry.name)
        if path is None:
            raise ConfigError(
                f"encoder {name_or_path} is not in the cache ({cache.entry_path(entry.name)}); "
                f"run: nlpcli models pull {name_or_path}"
            )
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return name_or_path
    if name_or_path.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        raise ConfigError(f"encoder directory {name_or_path} does not exist")
    return name_or_path


def load_word_vectors(name_or_path: str) -> tuple[list[str], torch.Tensor]:
    """(words, vectors): the words in row order and a float32 tensor [len(words), dimensions].

    `name_or_path` is a catalogue name of kind word vectors (`word2vec-zhwiki`, read from the cache; if it
    has not been pulled, a ConfigError ending `run: nlpcli models pull NAME`), a cache entry directory, or
    a file: our safetensors file (tensor "vectors" + the words as JSON in its metadata), or a word2vec
    text or binary file (told apart by content; both start with a 'WORDS DIMENSIONS' line). A missing or
    malformed file is a DataError naming it. The words are as stored: no lower-casing or folding.
    """
    from .word_vectors import read_word_vectors

    entry = CATALOGUE.get(name_or_path)
    if entry is not None:
        if entry.kind != WORD_VECTORS:
            raise ConfigError(f"{name_or_path} is an {entry.kind}, not word vectors")
        path = cache.cached_path(entry.name)
        if path is None:
            raise ConfigError(
                f"word vectors {name_or_path} are not in the cache ({cache.entry_path(entry.name)}); "
                f"run: nlpcli models pull {name_or_path}"
            )
        return read_word_vectors(path / VECTORS_FILE)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / VECTORS_FILE
    return read_word_vectors(path)
