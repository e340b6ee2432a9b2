"""`nlpcli predict TASK`: JSONL, plain text or a table (CSV, TSV, Excel, Parquet) in, the same format out
(JSON Lines for text), batched and streaming. The options and what is printed; reading and writing records
is `records`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    DEVICE_HELP,
    PRECISION_HELP,
    UsageError,
    cli_errors,
    err_console,
    inference_settings,
    parse_options,
    print_note,
    stderr_is_tty,
    task_argument,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..records.sink import Predictions

STALL_S = 0.1  # seconds without a new stdin line after which the lines in hand are answered


@cli_errors
def predict(
    ctx: typer.Context,
    task: str = task_argument(),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory.", metavar="DIR"),
    input_path: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="JSONL, plain text (.txt: one text per line), CSV, TSV, Excel (.xlsx) or Parquet file, or - for "
        "stdin (the default): JSONL, or plain text when its first line is not a JSON object.",
        metavar="PATH",
    ),
    input_format: str | None = typer.Option(
        None,
        "--format",
        help="Input format, instead of the one the file name or stdin's first line gives: "
        "text | jsonl | csv | tsv | xlsx | parquet.",
        metavar="FORMAT",
    ),
    output_path: str = typer.Option(
        "-",
        "--output",
        "-o",
        help="Output file (written atomically) in the input's format, or the one its suffix names; - for stdout.",
        metavar="PATH",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Inference batch size (default: the model's).", metavar="N"
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE"),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip and count malformed lines or rows instead of stopping."
    ),
    quantize: bool = typer.Option(
        False, "--quantize", help="Dynamic int8 Linear layers (CPU): faster pretrained encoders; see docs/results.md."
    ),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP, metavar="PRECISION"),
) -> None:
    """Add predictions to every input record; each output record keeps the input's fields (or columns).

    {records of each task}
    Plain text (a .txt file, or stdin whose first line is not a JSON object) is one record per line: its
    text (ner, ie) or its keywords separated by spaces (lm); the output is JSON Lines.
    A table (.csv, .tsv, .xlsx, .parquet) keeps every column and gains the prediction columns (lists as JSON
    text in a cell); --text-column NAME (qa: --question-column, --passage-column; `nlpcli info TASK` lists each
    task's) names the input columns.
    One record can also be given as options instead of --input, e.g. `--text "..."` or
    `--question "..." --passage "..." --passage "..."` (`--passage` given twice fills `passages`).
    Inference settings of the model may follow too (`--threshold 0.4`, `--window 512`; `nlpcli info TASK`).
    """
    from .. import api
    from ..data.io import check_output_file
    from ..device import is_distributed
    from ..records.formats import INPUT_FORMATS, JSONL, LINE_FORMATS, TABLE_FORMATS, format_of, output_format
    from ..records.predict import predict_source
    from ..records.sink import write
    from ..records.source import open_source
    from ..records.stats import PredictStats
    from ..registry import get_task

    cls = get_task(task)
    overrides, record, columns = split_predict_options(cls, ctx.args)
    if record and input_path is not None:
        raise UsageError("give either --input or a record as options, not both")
    if input_format is not None and input_format not in INPUT_FORMATS:
        raise UsageError(f"--format: one of {', '.join(INPUT_FORMATS)}, not {input_format!r}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size: at least 1, not {batch_size}")
    input_path = input_path or "-"
    in_fmt = input_format or format_of(input_path, JSONL) or JSONL
    if is_distributed() and (record or input_path == "-" or in_fmt not in LINE_FORMATS):
        raise UsageError("under torchrun, give --input FILE.jsonl (every rank reads it and predicts its share)")
    if input_path == "-" and in_fmt in TABLE_FORMATS:
        raise UsageError(f"--format {in_fmt}: a table is read from a file (--input FILE)")
    out_fmt = output_format(output_path, in_fmt)
    options = {f.name: f.column_option for f in cls.input_fields}
    if columns and (in_fmt not in TABLE_FORMATS or record):
        raise UsageError(f"{', '.join(options[f] for f in columns)}: only for table input (csv, tsv, xlsx, parquet)")
    if output_path != "-":
        check_output_file(output_path)  # before the model loads and the input is read
    pipe = api.load(model, task=task, device=device, quantize=quantize, precision=precision, **overrides).pipeline
    stats = PredictStats()
    # Under torchrun the ranks share the lines, and rank 0 alone writes them all, in input order.
    main = not is_distributed() or int(os.environ.get("RANK", "0")) == 0
    if main:
        print_note(pipe.precision_note)
    # stdin is answered as it arrives: when it stalls, the records in hand run without waiting for more.
    source = open_source(input_path, input_format, record or None, STALL_S)
    with _errors_told_by_rank_0(main), source as opened:
        predictions = predict_source(pipe, opened, columns, options, batch_size, skip_bad, stats)
        with _progress(predictions, show=main) as advance:
            write(predictions, output_path if main or out_fmt != JSONL else "-", out_fmt, advance)
    if not main:
        return
    if stats.skipped:
        err_console.print(f"skipped {stats.skipped} bad record(s); first: {stats.reasons[0]}", highlight=False)
    if output_path != "-":
        err_console.print(f"wrote {stats.written} record(s) to {output_path}", highlight=False)


def split_predict_options(
    task_cls: Any, args: list[str]
) -> tuple[dict[str, str], dict[str, Any], dict[str, list[str]]]:
    """Extra options of `predict`, all from the task's own facts: inference settings (`--threshold 0.4`), the
    fields of one input record (`--text ...`; `--passage` given twice fills `passages`), and the table columns
    of its input fields (`--text-column NAME`; qa: `--question-column`, `--passage-column`, which may repeat).
    Anything else is a usage error."""
    column_options = {f.column_option.lstrip("-").replace("-", "_"): f for f in task_cls.input_fields}
    pairs, bare = parse_options(args)
    if bare:
        raise UsageError(f"unexpected argument {bare[0]!r}")
    record: dict[str, Any] = {}
    columns: dict[str, list[str]] = {}
    settings: list[tuple[str, str]] = []
    for key, value in pairs:
        if key in task_cls.record_options:
            name, repeats = task_cls.record_options[key]
            record[name] = [*record.get(name, []), value] if repeats else value
        elif key in column_options:
            field = column_options[key]
            if field.name in columns and field.kind == "text":
                raise UsageError(f"{field.column_option}: one column holds the {field.name}; give it once")
            columns[field.name] = [*columns.get(field.name, []), value]
        else:
            settings.append((key, value))
    overrides = inference_settings(task_cls, settings, [*task_cls.record_options, *column_options])
    return overrides, record, columns


@contextmanager
def _errors_told_by_rank_0(main: bool) -> Iterator[None]:
    """Under torchrun every rank stops on the same error; rank 0 alone prints it."""
    from ..errors import NlpcliError

    try:
        yield
    except NlpcliError:
        if main:
            raise
        raise typer.Exit(1) from None


class _progress:
    """A progress bar on stderr over the single pass through the input (bytes of a file, rows of a table),
    only when stderr is a terminal (and `show`: not on other torchrun ranks)."""

    def __init__(self, predictions: Predictions, show: bool = True):
        self.predictions = predictions
        self.show = show
        self.bar: Progress | None = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show or not stderr_is_tty():
            return lambda: None
        from rich.progress import Progress  # here: a one-line predict draws no bar (start-up, nlpcli/cli.py)

        bar = self.bar = Progress(console=err_console, transient=True)
        bar.start()
        task = bar.add_task("predict", total=self.predictions.total)
        position = self.predictions.position
        return lambda: bar.update(task, completed=position())

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
