"""The `nlpcli` command: verbs train / evaluate / predict / generate / chat / report / info / models."""

from __future__ import annotations

from typing import Any

import typer

from .commands.chat import chat
from .commands.common import TaskRecordsHelp
from .commands.evaluate import evaluate
from .commands.export import export
from .commands.generate import generate
from .commands.info import info
from .commands.models import models_app
from .commands.predict import predict
from .commands.report import report
from .commands.serve import serve
from .commands.train import train
from .version import __version__

app = typer.Typer(
    help="Train, evaluate and run Chinese NLP pipelines (GlobalPointer NER, DGCNN QA/IE, CGMH, chat).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion: tasks, options and files complete
    pretty_exceptions_enable=False,
)
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
app.command(context_settings=EXTRA_ARGS)(train)
app.command(context_settings=EXTRA_ARGS)(evaluate)  # inference settings as --name value
app.command(context_settings=EXTRA_ARGS, cls=TaskRecordsHelp)(predict)  # one record as --key value options
app.command(context_settings=EXTRA_ARGS)(generate)  # --words W1 W2 ... and --gen-* overrides
app.command()(chat)
app.command()(report)
app.command()(info)
app.command()(serve)  # HTTP: nlpcli/serve/
app.command()(export)  # ONNX for onnxruntime: nlpcli/onnx_runtime.py
app.add_typer(models_app, name="models")


def _print_version(value: bool) -> None:
    if value:
        print(f"nlpcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Train, evaluate and run Chinese NLP pipelines (GlobalPointer NER, DGCNN QA/IE, CGMH, chat)."""


def build_command() -> Any:
    """The click command behind `nlpcli`, with flags shown without a value placeholder in --help."""
    command = typer.main.get_command(app)
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
    build_command()(prog_name="nlpcli")


if __name__ == "__main__":
    main()
