"""`nlpcli predict TASK`: JSONL in (file or stdin), JSONL out (file or stdout), batched and streaming."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from typing import Optional

import typer

from .common import cli_errors, err_console, stderr_is_tty


@cli_errors
def predict(
    task: str = typer.Argument(..., help="The task of the model."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory."),
    input_path: str = typer.Option("-", "--input", "-i", help="JSONL file, or - for stdin."),
    output_path: str = typer.Option("-", "--output", "-o", help="JSONL file (written atomically), or - for stdout."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed lines instead of stopping."),
) -> None:
    """Add predictions to every input line; each output line keeps the input's fields.

    For ner, a line is {"text": ...} and gains "entities": [{type, start, end (inclusive), text}].
    """
    from .. import api
    from ..data.io import atomic_output, open_input

    pipe = api.load_pipeline(task, model, device)
    stats = api.PredictStats()
    source = open_input(input_path)
    sink = nullcontext(sys.stdout) if output_path == "-" else atomic_output(output_path)
    with source as lines, sink as out, _progress(input_path) as advance:
        for record in api.predict(pipe, lines, input_path, batch_size, skip_bad, stats):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if output_path == "-":
                out.flush()
            advance()
    if stats.skipped:
        err_console.print(f"skipped {stats.skipped} bad line(s); first: {stats.reasons[0]}", highlight=False)
    if output_path != "-":
        err_console.print(f"wrote {stats.written} line(s) to {output_path}", highlight=False)


class _progress:
    """A progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, input_path: str):
        self.input_path = input_path
        self.bar = None

    def __enter__(self):
        if not stderr_is_tty():
            return lambda: None
        from rich.progress import Progress

        total = None
        if self.input_path != "-":
            with open(self.input_path, "rb") as f:
                total = sum(1 for line in f if line.strip())
        self.bar = Progress(console=err_console, transient=True)
        self.bar.start()
        task = self.bar.add_task("predict", total=total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
