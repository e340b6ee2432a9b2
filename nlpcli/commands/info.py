"""`nlpcli info [TASK]`: versions, devices, threads; a task's config fields; a checkpoint's model card."""

from __future__ import annotations

import platform
import sys

import typer
from rich.markup import escape
from rich.table import Table

from .common import TASK_ARGUMENT_HELP, UsageError, cli_errors, complete_task, optional_task, out_console


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
) -> None:
    """Show versions, devices and threads; a task's config fields (or --toml); a checkpoint's model card."""
    if model is not None:
        _model_card(model)
        return
    if task:
        _task(task, toml)
        return
    if toml:
        raise UsageError("--toml needs a TASK: nlpcli info TASK --toml")
    _versions()


def _task(task: str, toml: bool) -> None:
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
    table = Table(title=f"{task}: {cls.summary}", caption="set with --option VALUE, or in a --config file")
    for col in ("option", "section", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for f in config.describe():
        cells = (config.option_name(f.section, f.name), f.section, f.type, _shown(f.default), f.help)
        table.add_row(*map(escape, cells))
    out_console.print(table)


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return '""' if value == "" else str(value)


def _versions() -> None:
    import torch  # devices and threads; transformers is only asked for its version (importing it takes seconds)

    from .. import __version__
    from ..card import package_version
    from ..device import native_bf16_feature
    from ..registry import task_names

    table = Table(show_header=False, box=None)
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
    for k, v in rows:
        table.add_row(k, v)
    out_console.print(table)


def _model_card(model: str) -> None:
    from ..card import read_card
    from .common import err_console

    text, generated = read_card(model)
    if generated:
        err_console.print(
            "(this checkpoint has no README.md, it predates model cards: made from its config.json and metrics.json)",
            highlight=False,
        )
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
