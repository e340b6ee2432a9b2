"""Helpers shared by the verbs: error handling, extra --field options, consoles."""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from ..registry import get_task, task_names
from ..tables import plain_rows

if TYPE_CHECKING:
    from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

# Messages are printed without soft wrapping: one message stays one line for scripts, whatever the width.
err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)  # long paths stay on one line for scripts

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, SIGTERM (SIGHUP: 129)
# A closed stdout (`nlpcli predict ... | head -1`) ends the command quietly with the status of a process that
# SIGPIPE ended, 128 + 13, as `cat`, `grep` or `seq` end there: a shell shows it only under `set -o pipefail`.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
DEBUG_HELP = "On an internal error, show the traceback."


class UsageError(typer.BadParameter):
    """A usage error (exit code 2) shown as its message alone: an unknown option, a bad combination."""

    def format_message(self) -> str:
        return self.message


def cli_errors(fn: F) -> F:
    """Turn every failure into one line on stderr and an exit code: 1 (failure), 130 (Ctrl-C), 143 (SIGTERM),
    129 (SIGHUP: the terminal or ssh session closed), 141 (stdout closed by its reader, quietly).

    Library errors are already one line; anything else is reported as an internal error with a hint to rerun
    with --debug (which the wrapped command gains) for the traceback. SIGTERM and SIGHUP are raised like
    Ctrl-C, so a training saves last/ and an output file is rolled back. Usage errors stay Typer's (exit code 2), and an
    option or config field that the task does not have (`UnknownOption`, with its did-you-mean) is one too.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        from ..errors import NlpcliError, TrainingInterrupted, UnknownOption

        signals = _SigtermAsInterrupt()
        try:
            with signals:
                return fn(*args, **kwargs)
        except BrokenPipeError:
            _detach_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except UnknownOption as e:
            raise UsageError(str(e)) from None
        except TrainingInterrupted as e:
            _fail(f"[yellow]stopped:[/] {escape(str(e))}")
            raise typer.Exit(signals.exit_code) from None
        except NlpcliError as e:
            _fail(f"[red]error:[/] {escape(str(e))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _fail("[yellow]terminated[/]" if signals.terminated else "[yellow]interrupted[/]")
            raise typer.Exit(signals.exit_code) from None
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # usage errors (exit code 2) and deliberate exits
        except OSError as e:
            if debug:
                traceback.print_exc()
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"[red]error:[/] {escape(where + (e.strerror or str(e)))}")
            raise typer.Exit(1) from None
        except Exception as e:
            if debug:
                traceback.print_exc()
            text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
            hint = "" if debug else " (rerun with --debug for the traceback)"
            _fail(f"[red]error:[/] internal error: {escape(text)}{hint}")
            raise typer.Exit(1) from None

    sig = inspect.signature(fn, eval_str=True)
    if "debug" not in sig.parameters:
        option = typer.Option(False, "--debug", help=DEBUG_HELP, metavar="")
        extra = inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=option, annotation=bool)
        wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**fn.__annotations__, "debug": bool}
    return wrapper  # type: ignore[return-value]  # same signature plus --debug


def _fail(message: str) -> None:
    """Print a failure line; a broken stdout (full disk, closed pipe) is detached so the exit stays quiet."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _detach_stdout()
    err_console.print(message, highlight=False)


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is still buffered cannot fail
    (Python would print 'Exception ignored ... BrokenPipeError' and exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class _SigtermAsInterrupt:
    """While active, SIGTERM and SIGHUP (a closed terminal or ssh session; unless ignored, as under nohup)
    raise `Terminated` (a KeyboardInterrupt) in the main thread, once."""

    def __init__(self) -> None:
        self.terminated = False
        self.signum: int = signal.SIGTERM
        self.previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.terminated else EXIT_INTERRUPTED

    def _handle(self, signum: int, frame: object) -> None:
        from ..errors import Terminated

        if self.terminated:
            return  # already stopping: let the clean-up finish
        self.terminated = True
        self.signum = signum
        raise Terminated()

    def __enter__(self) -> _SigtermAsInterrupt:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


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
    pairs, bare = parse_options(args)
    if bare:
        raise UsageError(f"unexpected argument {bare[0]!r}")
    return inference_settings(task_cls, pairs)


def inference_settings(task_cls: Any, pairs: list[tuple[str, str]], also_known: Sequence[str] = ()) -> dict[str, str]:
    """(name, value) pairs that must each be an inference or window setting of the task; another name is a usage error
    suggesting the closest of those settings and `also_known` (the verb's other extra options)."""
    from ..errors import ConfigError

    config = task_cls.Config()
    sections = config.sections()
    runtime = tuple(name for name in ("inference", "windows") if name in sections)  # what may change after training
    for key, _ in pairs:
        try:
            config.locate(key, runtime)
        except ConfigError:
            known = [*also_known, *(f for name in runtime for f in sections[name].field_names())]
            raise UsageError(f"unknown option --{key.replace('_', '-')}{did_you_mean(key, known)}") from None
    return dict(pairs)


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean --{close[0].replace('_', '-')}?" if close else ""


def print_table(table: Table, console: Console | None = None) -> None:
    """A table on stdout: drawn by rich on a terminal; in a pipe or a file, plain rows (see `plain_rows`)."""
    console = console or out_console
    if console.is_terminal:
        console.print(table)
    else:
        console.file.write(plain_rows(table))


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


# Help texts are made at each start of the CLI: the built-in tasks, and those registered so far (not the
# installed plugins, whose entry points take a while to read; `check_task` accepts them all the same).
TASK_HELP = "The task: " + ", ".join(task_names(plugins=False)) + "."
TASK_ARGUMENT_HELP = "TASK: " + ", ".join(task_names(plugins=False)) + "."
TASK_RECORDS = "{records of each task}"  # in a command's docstring: one line per task, made on --help


class TaskRecordsHelp(TyperCommand):
    """A command whose --help shows, in place of TASK_RECORDS, each task's input record and what a prediction
    adds to it, as the tasks declare them. The tasks (and torch) are imported only when the help is shown."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # click types (typer vendors its own click)
        if self.help and TASK_RECORDS in self.help:
            self.help = self.help.replace(TASK_RECORDS, task_records_help(self.rich_markup_mode == "rich"))
        super().format_help(ctx, formatter)


def task_records_help(markup: bool = False) -> str:
    """`TASK: {"field": ...} gains ...`, a line per task (rich markup escaped when `markup`)."""
    names = task_names()
    width = max(map(len, names)) + 2
    lines = [f"{name + ':':<{width}}{get_task(name).record_help()}" for name in names]
    return "\n".join(escape(line) if markup else line for line in lines)


def check_task(value: str) -> str:
    """The TASK argument: one of the registered tasks; anything else is a usage error with a did-you-mean."""
    if value in task_names(plugins=False):
        return value  # known without reading the installed packages' entry points
    names = task_names()
    if value not in names:
        close = difflib.get_close_matches(value, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown task {value!r}{hint} (the tasks: {', '.join(names)})")
    return value


def optional_task(value: str | None) -> str | None:
    return None if value is None else check_task(value)


def complete_task(incomplete: str) -> list[str]:
    """Shell completion of TASK."""
    return [name for name in task_names() if name.startswith(incomplete)]


def task_argument() -> Any:
    """The TASK argument of train / evaluate / predict: a fixed choice, checked and completed."""
    return typer.Argument(
        ...,
        help=TASK_HELP,
        metavar="TASK",
        callback=check_task,
        autocompletion=complete_task,
        show_default=False,
    )


DEVICE_HELP = "auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps."
PRECISION_HELP = (
    "auto (bf16 on a GPU and on a CPU that multiplies bf16 natively, AMX or AVX512-BF16; fp32 elsewhere; "
    "the choice is printed) | fp32 | bf16 | fp16."
)
# One seed rule for every verb: --seed N seeds everything random the verb does; left out, the seed saved with
# the model is used (every seed defaults to 42), so the same input, settings and batching give the same output.
SEED_HELP = "Seed of everything random here; the same seed and input give the same output."
SAVED_SEED_HELP = SEED_HELP + " (default: the checkpoint's, 42 unless set in training)"

EXTRA_HELP = (
    "Any field of the task's config can be set too, as --field-name VALUE or --section.field-name VALUE "
    "(e.g. --head standard, --encoder bert-base-chinese, --inference.batch-size 128); `nlpcli info TASK` lists "
    "them by section (trainer, encoder, model, inference) with their defaults; --config FILE reads a preset."
)


def print_note(note: str) -> None:
    """A one-line note of what the library chose (precision or encoder auto) on stderr; nothing when empty."""
    if note:
        err_console.print(note, highlight=False, soft_wrap=True)
