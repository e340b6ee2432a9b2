"""The `nlpcli` command: verbs train / evaluate / predict / generate / chat / info."""

from __future__ import annotations

import typer

from .commands.chat import chat
from .commands.evaluate import evaluate
from .commands.generate import generate
from .commands.info import info
from .commands.models import models_app
from .commands.predict import predict
from .commands.serve import serve
from .commands.train import train

app = typer.Typer(
    help="Train, evaluate and run Chinese NLP pipelines (GlobalPointer NER, DGCNN QA/IE, CGMH, chat).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
app.command(context_settings=EXTRA_ARGS)(train)
app.command(context_settings=EXTRA_ARGS)(evaluate)  # inference settings as --name value
app.command(context_settings=EXTRA_ARGS)(predict)  # one record as --key value options
app.command(context_settings=EXTRA_ARGS)(generate)  # --words W1 W2 ... and --gen-* overrides
app.command()(chat)
app.command()(info)
app.command()(serve)  # HTTP: nlpcli/serve/
app.add_typer(models_app, name="models")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
