"""Helpers shared by the verbs: error handling, extra --field options, consoles."""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)
out_console = Console(soft_wrap=True)  # long paths stay on one line for scripts


def cli_errors(fn: F) -> F:
    """Turn library errors into a one-line message and exit code 1 (130 for Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import NlpcliError, TrainingInterrupted

        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted as e:
            err_console.print(f"[yellow]stopped:[/] {e}", highlight=False)
            raise typer.Exit(130) from None
        except NlpcliError as e:
            err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]  # same signature: functools.wraps


def parse_options(args: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """`--name value`, `--name=value`, a bare `--flag` ("true") and `--no-flag` (`flag`: "false"), in order
    (a name may repeat); words that are no option's value are returned apart. Names keep their dashes
    as underscores."""
    pairs: list[tuple[str, str]] = []
    bare: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            key = key.replace("-", "_")
            if eq:
                pairs.append((key, value))
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                pairs.append((key, args[i + 1]))
                i += 1
            elif key.startswith("no_"):
                pairs.append((key[3:], "false"))
            else:
                pairs.append((key, "true"))
        else:
            bare.append(tok)
        i += 1
    return pairs, bare


def parse_extra(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Config options (`--field value`; the last of a repeated one wins) and the bare words apart."""
    pairs, bare = parse_options(args)
    return dict(pairs), bare


def inference_options(task_cls: Any, args: list[str]) -> dict[str, str]:
    """Extra `--name value` options that must each be an inference setting of the task (a usage error else)."""
    from ..errors import ConfigError

    config = task_cls.Config()
    pairs, bare = parse_options(args)
    if bare:
        raise typer.BadParameter(f"unexpected argument {bare[0]!r}")
    for key, _ in pairs:
        try:
            config.locate(key, ("inference",))
        except ConfigError:
            known = config.sections()["inference"].field_names()
            raise typer.BadParameter(f"unknown option --{key.replace('_', '-')}{did_you_mean(key, known)}") from None
    return dict(pairs)


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean --{close[0].replace('_', '-')}?" if close else ""


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


TASK_HELP = "The task: ner, ie, qa, lm or chat."

EXTRA_HELP = (
    "Any field of the task's config can be set too, as --field-name VALUE or --section.field-name VALUE "
    "(e.g. --head standard, --encoder bert-base-chinese, --inference.batch-size 128); `nlpcli info TASK` lists "
    "them by section (trainer, encoder, model, inference) with their defaults; --config FILE reads a preset."
)
