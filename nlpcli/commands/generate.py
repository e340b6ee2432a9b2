"""`nlpcli generate`: CGMH sentences that contain given words."""

from __future__ import annotations

from typing import Optional

import typer

from .common import cli_errors


@cli_errors
def generate(
    model: str = typer.Option(..., "--model", "-m", help="An `lm` checkpoint (nlpcli train lm)."),
    words: Optional[list[str]] = typer.Option(None, "--words", help="Keywords every sentence must contain."),
    num: int = typer.Option(3, "--num"),
    steps: int = typer.Option(200, "--steps"),
    seed: int = typer.Option(0, "--seed"),
    input_path: Optional[str] = typer.Option(None, "--input", help="One keyword set per line."),
    output_path: Optional[str] = typer.Option(None, "--output"),
) -> None:
    """Make sentences that contain every given word (CGMH)."""
    from ..registry import get_task

    get_task("lm")
