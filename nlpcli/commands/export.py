"""`nlpcli export DIR --output DIR2`: a trained model as ONNX graphs for onnxruntime (`predict`, `serve` and
`nlpcli.load` run the exported directory as they run a checkpoint)."""

from __future__ import annotations

import typer
from rich.markup import escape

from .common import cli_errors, out_console


@cli_errors
def export(
    model: str = typer.Argument(..., help="Checkpoint or training output directory (ner, ie or qa).", metavar="DIR"),
    output: str = typer.Option(
        ..., "--output", "-o", help="Directory to write (a previous export there is replaced).", metavar="DIR2"
    ),
) -> None:
    """Export a trained model to ONNX: the graphs, tokenizer and decoder files.

    Needs the onnx extra: `pip install 'nlpcli\\[onnx]'`."""
    # (the help escapes [onnx]: rich would read it as markup and drop it)
    from ..export import export as export_model

    path = export_model(model, output)
    out_console.print(f"exported {escape(model)} to {escape(str(path))} (ONNX, fp32)", highlight=False)
