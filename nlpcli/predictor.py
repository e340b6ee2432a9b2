"""`Predictor`: what `nlpcli.load` returns, a trained model behind a small, checked surface.

It predicts in its task's natural shape and hands the work to the task's pipeline (`predictor.pipeline`, the
object the trainer uses, with every internal attribute). Results are the `nlpcli.results` shapes: the same
JSON that `nlpcli predict` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks.base import Pipeline

# What a value of each kind of input field may be (the kinds of a task's `table_fields`).
_EXPECTED = {
    "text": "a text (str)",
    "list": "a list of texts (list[str])",
    "words": "a list of words (list[str])",
}


class Predictor:
    """A trained model ready to predict. Call it in its task's shape:

        ner("张伟在北京工作。")            -> [Entity, ...]        ner(["t1", "t2"]) -> [[Entity, ...], ...]
        ie("text")                       -> [Triple, ...]
        qa(question="...", passages=[...]) -> Answer              qa([{"question", "passages"}, ...]) -> [Answer]
        lm.generate(["北京", "游客"])      -> [Sentence, ...]
        chat.reply(["你好"])               -> "reply";  chat.session().say("你好")

    `pipe(inputs)` does the same over any iterable, lazily, a chunk at a time. `task`, `labels`, `path`,
    `device`, `precision` and `config` (read-only) describe the model; `pipeline` is the task's own object.
    """

    def __init__(self, pipeline: Pipeline, path: str | Path | None = None):
        self._pipeline = pipeline
        self._path = Path(path) if path is not None else None

    # --- what it is -------------------------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        """The task's pipeline (model, vocabularies, hooks): the escape hatch for what this class does not offer."""
        return self._pipeline

    @property
    def task(self) -> str:
        return self._pipeline.name

    @property
    def path(self) -> Path | None:
        """The checkpoint (or training output) directory it was loaded from."""
        return self._path

    @property
    def labels(self) -> tuple[str, ...]:
        """What the model tells apart (entity types, predicates); empty for tasks without labels."""
        return tuple(self._pipeline.labels)

    @property
    def device(self) -> str:
        return str(self._pipeline.device)

    @property
    def precision(self) -> str:
        """Arithmetic of prediction: fp32, or the autocast dtype (bf16, fp16)."""
        from .device import precision_name

        return precision_name(self._pipeline.precision)

    @property
    def config(self) -> Mapping[str, Any]:
        """The model's config by section (a read-only view; change inference settings through `nlpcli.load`)."""
        return _frozen(self._pipeline.config.to_dict())

    def __repr__(self) -> str:
        labels = self.labels
        shown = ", ".join(labels[:8]) + (f", ... ({len(labels)})" if len(labels) > 8 else "")
        parts = [f"task={self.task!r}"] + ([f"labels=[{shown}]"] if labels else [])
        parts += [f"path={str(self._path)!r}" if self._path else "path=None", f"device={self.device!r}"]
        parts.append(f"precision={self.precision!r}")
        return f"Predictor({', '.join(parts)})"

    def __dir__(self) -> list[str]:
        return sorted({*(n for n in type(self).__dict__ if not n.startswith("_")), *self._pipeline.methods})

    # --- predicting -------------------------------------------------------------------------------
    def __call__(self, inputs: Any = None, /, **fields: Any) -> Any:
        """Predictions for one input or a list of them, in the task's shape (see the class docstring)."""
        if self._pipeline.methods:  # tasks with their own verbs are called with records, as `predict` reads them
            _check_records("inputs", inputs)
        else:
            self._check("inputs", inputs, fields)
        return self._pipeline(inputs, **fields) if inputs is not None else self._pipeline(**fields)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # The task's own verbs (`generate`, `reply`, `session`), declared by the task in `methods`.
        if name.startswith("_"):  # also while copying or unpickling, before `_pipeline` is set
            raise AttributeError(name)
        if name not in self._pipeline.methods:
            raise AttributeError(f"a {self.task} Predictor has no attribute {name!r}")
        method: Callable[..., Any] = getattr(self._pipeline, name)
        if name != self._pipeline.methods[0]:
            return method

        def checked(inputs: Any, /, **settings: Any) -> Any:
            self._check(_first_field(self._pipeline), inputs, {})
            return method(inputs, **settings)

        checked.__doc__, checked.__name__ = method.__doc__, name
        return checked

    def pipe(self, inputs: Iterable[Any], batch_size: int | None = None, chunk_size: int = 256) -> Iterator[Any]:
        """One result per input, in order, as calling the predictor on each one (its `generate` or `reply` for
        the tasks that have them) would give; the inputs are read `chunk_size` at a time (each chunk predicted
        in batches of `batch_size`), so an endless or huge iterable streams."""
        if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
            raise TypeError(f"inputs: expected an iterable of inputs, got {_what(inputs)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive number, got {chunk_size}")
        methods = self._pipeline.methods
        natural: Callable[..., Any] = getattr(self._pipeline, methods[0]) if methods else self._pipeline
        settings = {"batch_size": batch_size} if batch_size and not methods else {}
        return self._stream(iter(inputs), chunk_size, natural, settings)

    def _stream(
        self, it: Iterator[Any], chunk_size: int, natural: Callable[..., Any], settings: dict[str, Any]
    ) -> Iterator[Any]:
        done = 0
        while chunk := list(islice(it, chunk_size)):
            for i, item in enumerate(chunk, done):
                self._check_one(f"inputs[{i}]", item)
            done += len(chunk)
            yield from natural(chunk, **settings)

    def _check(self, name: str, value: Any, fields: dict[str, Any]) -> None:
        """A TypeError naming the argument when an input, or a list of inputs, does not have the task's shape;
        `fields` are the keyword inputs (qa's `question=`, `passages=`)."""
        kinds = self._pipeline.table_fields
        first = _first_field(self._pipeline)
        given = {k: v for k, v in fields.items() if k in kinds}
        if value is None and first in given:
            name, value = first, given.pop(first)
        for key, v in given.items():
            _check_value(key, v, kinds[key])
        if value is None and given:
            return  # the task says what is missing (qa(passages=...) without a question)
        kind = kinds[first]
        if _is_list(value) and (len(kinds) > 1 or kind == "text" or (value and all(map(_is_list, value)))):
            for i, item in enumerate(value):
                self._check_one(f"{name}[{i}]", item)
        elif isinstance(value, Mapping):
            return  # a whole record, as `predict` reads it: the task checks its fields
        else:
            _check_value(name, value, kind, or_list=True)

    def _check_one(self, name: str, item: Any) -> None:
        """One input: a record for tasks of several fields, else a value of the one field."""
        kinds = self._pipeline.table_fields
        if len(kinds) > 1 or isinstance(item, Mapping):
            _check_records(name, item)
        else:
            _check_value(name, item, kinds[_first_field(self._pipeline)])


def _first_field(pipeline: Pipeline) -> str:
    return next(iter(pipeline.table_fields))


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _check_value(name: str, value: Any, kind: str, or_list: bool = False) -> None:
    if kind == "text":
        if not isinstance(value, str):
            many = " or a list of texts" if or_list else ""
            raise TypeError(f"{name}: expected a text (str){many}, got {_what(value)}")
        return
    if not _is_list(value):
        raise TypeError(f"{name}: expected {_EXPECTED[kind]}, got {_what(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) and not (kind == "list" and isinstance(item, Mapping)):
            raise TypeError(f"{name}[{i}]: expected {_EXPECTED[kind]}, got {_what(item)} in it")


def _check_records(name: str, value: Any) -> None:
    items = value if _is_list(value) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            where = f"{name}[{i}]" if _is_list(value) else name
            raise TypeError(f"{where}: expected a record (dict) or a list of records, got {_what(item)}")


def _what(value: Any) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r}"[:60]


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value
