"""`nlpcli chat`: an interactive multi-turn chat in the terminal."""

from __future__ import annotations

import typer

from .common import cli_errors


@cli_errors
def chat(model: str = typer.Option(..., "--model", "-m", help="A `chat` checkpoint.")) -> None:
    """Chat with a trained model in the terminal."""
    from ..registry import get_task

    get_task("chat")
