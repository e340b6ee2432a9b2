"""`nlpcli info [TASK]`: versions, devices, threads; a task's config fields; a checkpoint's model card."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..tables import add_name_column
from .common import TASK_ARGUMENT_HELP, UsageError, cli_errors, complete_task, optional_task, print_table


@cli_errors
def info(
    task: str | None = typer.Argument(
        None,
        help="Show this task's config fields: option, section, type, default, description. " + TASK_ARGUMENT_HELP,
        metavar="[TASK]",
        callback=optional_task,
        autocompletion=complete_task,
        show_default=False,
    ),
    toml: bool = typer.Option(
        False, "--toml", help="With TASK: print its complete config as TOML, which --config FILE reads back."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Print a checkpoint's model card (its README.md).", metavar="DIR"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts (the card: its text and path)."),
) -> None:
    """Show versions, devices and threads; a task's config fields (or --toml); a checkpoint's model card.
    Tables are tab-separated rows when stdout is not a terminal."""
    if toml and as_json:
        raise UsageError("--toml and --json: choose one")
    if model is not None:
        _model_card(model, as_json)
        return
    if task:
        _task(task, toml, as_json)
        return
    if toml:
        raise UsageError("--toml needs a TASK: nlpcli info TASK --toml")
    _versions(as_json)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def _task(task: str, toml: bool, as_json: bool) -> None:
    from ..registry import get_task

    cls = get_task(task)
    config = cls.Config()
    if toml:
        header = (
            f"nlpcli {task}: {cls.summary}.\n"
            f"Every config field with its default; edit and pass with `nlpcli train {task} --config FILE`."
        )
        sys.stdout.write(config.to_toml(header))
        return
    fields = config.describe()
    options = [config.option_name(f.section, f.name) for f in fields]
    if as_json:
        keys = ("option", "section", "name", "type", "default", "description")
        _print_json(
            [dict(zip(keys, (o, f.section, f.name, f.type, f.default, f.help))) for o, f in zip(options, fields)]
        )
        return
    table = Table(title=f"{task}: {cls.summary}", caption="set with --option VALUE, or in a --config file")
    add_name_column(table, "option", options)
    for col in ("section", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for option, f in zip(options, fields):
        table.add_row(*map(escape, (option, f.section, f.type, _shown(f.default), f.help)))
    print_table(table)
    print_table(_records_table(cls))


def _records_table(cls: Any) -> Table:
    """What `predict` reads of the task (a record's fields, as options or table columns) and what it adds."""
    example = json.dumps(cls.example, ensure_ascii=False)
    table = Table(
        title=escape(f"{cls.name} records: {cls.record_help()}"),
        caption=escape(f"e.g. {example}; `nlpcli predict {cls.name} --input FILE` or one record as options"),
    )
    add_name_column(table, "field", [f.name for f in cls.input_fields])
    for col in ("option", "table column", "cell", "description"):
        table.add_column(col, overflow="fold")
    for f in cls.input_fields:
        option = " | ".join((f.option, *f.aliases)) + (" (repeats)" if f.repeats else "")
        table.add_row(*map(escape, (f.name, option, f.column_option, f.kind, f.help)))
    # a row, not only the title, so that plain rows for scripts (which drop titles) carry it too
    table.add_row("(output)", "", "", "", escape("gains " + (cls.output_help or "its predictions.")))
    table.add_row("(example)", "", "", "", escape(example))
    return table


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return '""' if value == "" else str(value)


def _versions(as_json: bool) -> None:
    import torch  # devices and threads; transformers is only asked for its version (importing it takes seconds)

    from ..card import package_version
    from ..device import native_bf16_feature
    from ..registry import task_names
    from ..version import __version__

    rows = [
        ("nlpcli", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("transformers", package_version("transformers") or "not installed"),
        ("cuda", f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "not available"),
        (
            "mps",
            "available"
            if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
            else "not available",
        ),
        ("cpu threads", str(torch.get_num_threads())),
        (
            "cpu bf16",
            f"native ({feature}): precision auto uses bf16"
            if (feature := native_bf16_feature())
            else "emulated: precision auto stays fp32",
        ),
        ("tasks", ", ".join(task_names())),
    ]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        rows.append((f"cuda:{i}", torch.cuda.get_device_name(i)))
    if as_json:
        _print_json(dict(rows))
        return
    table = Table("name", "value", show_header=False, box=None)
    for k, v in rows:
        table.add_row(escape(k), escape(v))
    print_table(table)


def _model_card(model: str, as_json: bool) -> None:
    from ..api import model_card
    from .common import err_console

    text, generated = model_card(model)
    if as_json:
        _print_json({"model": model, "generated": generated, "card": text})
        return
    if generated:
        err_console.print(
            "(this checkpoint has no README.md, it predates model cards: made from its config.json and metrics.json)",
            highlight=False,
        )
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
