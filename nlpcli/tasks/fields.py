"""The input fields of a task's records: what `predict` reads from options and table columns, and what
`nlpcli info TASK` shows of them (`Pipeline.input_fields`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputField:
    """One field of a task's input record, and how `predict` takes it.

    `kind` is what a table cell holds: "text" (one text), "list" (a JSON list of texts, or one text) or
    "words" (a JSON list, or words separated by spaces). `option` gives the field for one record on the
    command line (`--text "..."`; default `--NAME`), `aliases` are other spellings of it, and with `repeats`
    each use adds an item to a list (`--passage A --passage B`). `column_option` names the field's table
    column (`--text-column NAME`)."""

    name: str
    kind: str = "text"
    option: str = ""
    repeats: bool = False
    column_option: str = "--text-column"
    help: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("text", "list", "words"):
            raise ValueError(f"input field {self.name!r}: kind {self.kind!r} is not text, list or words")
        if not self.option:
            object.__setattr__(self, "option", "--" + self.name.replace("_", "-"))

    @property
    def options(self) -> tuple[str, ...]:
        """Every option that gives this field, as `predict` parses them (`text`, `passage`, ...)."""
        return tuple(o.removeprefix("--").replace("-", "_") for o in (self.option, *self.aliases))


TEXT_FIELD = InputField("text", help="the text")
