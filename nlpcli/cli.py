"""The `nlpcli` command: verbs train / evaluate / predict / generate / chat / report / info / models."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from . import startup
from .version import __version__

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
# Each verb, its module under nlpcli.commands and how it is registered. A command line imports only the module
# of the verb it names (the others hold their own imports: rich progress bars, the trainer, the server), which
# keeps a one-line `predict` close to the cost of importing torch; --help and completion load them all.
VERBS: dict[str, dict[str, Any]] = {
    "train": {"context_settings": EXTRA_ARGS},
    "evaluate": {"context_settings": EXTRA_ARGS},  # inference settings as --name value
    "predict": {"context_settings": EXTRA_ARGS, "records_help": True},  # one record as --key value options
    "generate": {"context_settings": EXTRA_ARGS},  # --words W1 W2 ... and --gen-* overrides
    "chat": {},
    "report": {},
    "info": {},
    "serve": {},  # HTTP: nlpcli/serve/
    "export": {},  # ONNX for onnxruntime: nlpcli/onnx_runtime.py
    "models": {"group": "models_app"},
}


def _print_version(value: bool) -> None:
    if value:
        print(f"nlpcli {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Train, evaluate and run Chinese NLP pipelines (GlobalPointer NER, DGCNN QA/IE, CGMH, chat)."""


def make_app(verbs: Sequence[str] = tuple(VERBS)) -> typer.Typer:
    """The `nlpcli` typer app with these verbs (all by default)."""
    app = typer.Typer(
        help="Train, evaluate and run Chinese NLP pipelines (GlobalPointer NER, DGCNN QA/IE, CGMH, chat).",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion: tasks, options and files complete
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for verb in verbs:
        how = dict(VERBS[verb])
        module = importlib.import_module(f"{__package__}.commands.{verb}")
        if "group" in how:
            app.add_typer(getattr(module, how["group"]), name=verb)
            continue
        if how.pop("records_help", False):
            from .commands.common import TaskRecordsHelp

            how["cls"] = TaskRecordsHelp
        app.command(**how)(getattr(module, verb))
    return app


def __getattr__(name: str) -> Any:
    """`nlpcli.cli.app`: the whole app, made when first asked for (tests drive it with typer's CliRunner)."""
    if name == "app":
        return make_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_command(args: Sequence[str] = ()) -> Any:
    """The click command behind `nlpcli`, with flags shown without a value placeholder in --help: with only the
    verb that `args` (a command line without the program name) starts with, when it names one."""
    verbs: Sequence[str] = tuple(VERBS)
    if args and args[0] in VERBS and "_NLPCLI_COMPLETE" not in os.environ:  # completion lists every verb
        verbs = (args[0],)
    command = typer.main.get_command(make_app(verbs))
    _tidy(command)
    return command


def _tidy(command: Any) -> None:
    ctx = typer.Context(command)
    for param in [*command.params, command.get_help_option(ctx)]:
        if getattr(param, "is_flag", False):
            param.metavar = ""  # a flag takes no value; this typer would show `<bool>`
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


def main() -> None:
    startup.pause()  # until a model is loaded or a training begins (nlpcli/startup.py)
    build_command(sys.argv[1:])(prog_name="nlpcli")


if __name__ == "__main__":
    main()
