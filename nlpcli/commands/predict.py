"""`nlpcli predict TASK`: JSONL or a table (CSV, TSV, Excel, Parquet) in, the same format out, batched and
streaming (JSONL)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import typer
from rich.progress import Progress

from .common import (
    DEVICE_HELP,
    PRECISION_HELP,
    UsageError,
    cli_errors,
    did_you_mean,
    err_console,
    parse_options,
    print_note,
    stderr_is_tty,
    task_argument,
)

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
        help="JSONL, CSV, TSV, Excel (.xlsx) or Parquet file, or - for JSONL on stdin (the default).",
        metavar="PATH",
    ),
    output_path: str = typer.Option(
        "-",
        "--output",
        "-o",
        help="Output file (written atomically) in the input's format, or the one its suffix names; - for stdout.",
        metavar="PATH",
    ),
    text_column: str | None = typer.Option(
        None,
        "--text-column",
        help="Table input: the column holding the text (default: text) (lm: the keywords, words; chat: history).",
        metavar="NAME",
    ),
    question_column: str | None = typer.Option(
        None, "--question-column", help="qa, table input: the question column (default: question).", metavar="NAME"
    ),
    passage_columns: list[str] | None = typer.Option(
        None,
        "--passage-column",
        help="qa, table input: a column of passages (a passage, or a JSON list of them); may repeat "
        "(default: passages, else passage).",
        metavar="NAME",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Inference batch size (default: the model's).", metavar="N"
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE"),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip and count malformed lines or rows instead of stopping."
    ),
    quantize: bool = typer.Option(
        False, "--quantize", help="Dynamic int8 Linear layers (CPU): faster pretrained encoders; see README."
    ),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP, metavar="PRECISION"),
) -> None:
    """Add predictions to every input record; each output record keeps the input's fields (or columns).

    ner:  {"text": ...} gains "entities": [{type, start, end (inclusive), text, score}].
    ie:   {"text": ...} gains "spo_list": [{subject, predicate, object, subject_type, object_type, offsets}].
    qa:   {"question": ..., "passages": [...]} gains answer, score, passage_index, start, end.
    lm:   {"words": [...]} gains "sentences": [{text, score}] (CGMH; see also `nlpcli generate`).
    chat: {"history": [turn, ...]} gains reply and turns_used.
    A table (.csv, .tsv, .xlsx, .parquet) keeps every column and gains the prediction columns (lists as JSON
    text in a cell); --text-column (qa: --question-column, --passage-column) names the input columns.
    One record can also be given as options instead of --input, e.g. `--text "..."` or
    `--question "..." --passage "..." --passage "..."` (`--passage` given twice fills `passages`).
    Inference settings of the model may follow too (`--threshold 0.4`, `--max-len 512`; `nlpcli info TASK`).
    """
    from .. import api
    from ..data.io import check_output_file
    from ..data.tables import JSONL, format_of
    from ..device import is_distributed
    from ..registry import get_task

    cls = get_task(task)
    overrides, record = split_predict_options(cls, ctx.args)
    if record and input_path is not None:
        raise UsageError("give either --input or a record as options, not both")
    input_path = input_path or "-"
    in_fmt = format_of(input_path) or JSONL
    if is_distributed() and (record or input_path == "-" or in_fmt != JSONL):
        raise UsageError("under torchrun, give --input FILE.jsonl (every rank reads it and predicts its share)")
    out_fmt = in_fmt if output_path == "-" else format_of(output_path, in_fmt) or in_fmt
    columns, options = _columns(cls, text_column, question_column, passage_columns)
    if columns and (in_fmt == JSONL or record):
        raise UsageError(f"{', '.join(options[f] for f in columns)}: only for table input (csv, tsv, xlsx, parquet)")
    if output_path != "-":
        check_output_file(output_path)  # before the model loads and the input is read
    pipe = api.load(model, task=task, device=device, quantize=quantize, precision=precision, **overrides)
    stats = api.PredictStats()
    # Under torchrun the ranks share the lines, and rank 0 alone writes them all, in input order.
    main = not is_distributed() or int(os.environ.get("RANK", "0")) == 0
    if main:
        print_note(pipe.precision_note)
    with _errors_told_by_rank_0(main):
        if in_fmt == JSONL:
            outputs = _predict_jsonl(pipe, input_path, record, batch_size, skip_bad, stats)
        else:
            outputs = _predict_table(pipe, input_path, columns, options, batch_size, skip_bad, stats)
        if out_fmt == JSONL:
            _write_jsonl(outputs, output_path if main else "-", show_progress=main)
        else:
            _write_table(outputs, output_path, out_fmt)
    if not main:
        return
    if stats.skipped:
        err_console.print(f"skipped {stats.skipped} bad record(s); first: {stats.reasons[0]}", highlight=False)
    if output_path != "-":
        err_console.print(f"wrote {stats.written} record(s) to {output_path}", highlight=False)


class _Outputs:
    """Predicted records as they come, and what a table writer needs to know of their source."""

    def __init__(
        self,
        records: Iterator[dict[str, Any]],
        source: str,
        stats: Any,
        total: int | None,
        columns: list[str] | None = None,
        bom: bool = False,
    ):
        self.records = records
        self.source = source
        self.stats = stats
        self.total = total
        self.columns = columns or []
        self.bom = bom
        self.lists: frozenset[str] = frozenset()

    def check_not_empty(self) -> None:
        """Empty input is an error, raised before an output file is swapped in."""
        from ..errors import DataError

        if self.stats.read == 0 and self.stats.skipped == 0:
            raise DataError("stdin" if self.source == "-" else self.source, "no input records (the input is empty)")


QA_COLUMN_OPTIONS = {"question": "--question-column", "passages": "--passage-column"}


def _columns(
    cls: Any, text: str | None, question: str | None, passages: list[str] | None
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Table column options as field -> columns, and field -> the option that names it (for messages)."""
    fields = list(cls.table_fields)
    qa = "question" in fields
    options = dict(QA_COLUMN_OPTIONS) if qa else {fields[0]: "--text-column"}
    columns: dict[str, list[str]] = {}
    if text is not None:
        if qa:
            raise UsageError("qa reads --question-column and --passage-column, not --text-column")
        columns[fields[0]] = [text]
    for name, value in (("question", [question] if question else []), ("passages", passages or [])):
        if value:
            if not qa:
                raise UsageError(f"{QA_COLUMN_OPTIONS[name]}: only for qa (the text is --text-column)")
            columns[name] = value
    return columns, options


def _predict_jsonl(
    pipe: Any, input_path: str, record: dict[str, Any], batch_size: int | None, skip_bad: bool, stats: Any
) -> _Outputs:
    from .. import api
    from ..data.io import open_input

    def records() -> Iterator[dict[str, Any]]:
        # stdin is answered as it arrives: when it stalls, the records in hand run without waiting for more.
        source = nullcontext([json.dumps(record, ensure_ascii=False)]) if record else open_input(input_path, STALL_S)
        with source as lines, api.predict_ranks(pipe) as ranks:
            yield from ranks.predict(lines, input_path, batch_size, skip_bad, stats)

    total = None if input_path == "-" else _count_lines(input_path)
    return _Outputs(records(), input_path, stats, total)


def _predict_table(
    pipe: Any,
    input_path: str,
    columns: dict[str, list[str]],
    options: dict[str, str],
    batch_size: int | None,
    skip_bad: bool,
    stats: Any,
) -> _Outputs:
    from .. import api
    from ..data.tables import read_table

    table = read_table(input_path)
    records = api.predict_table(pipe, table, columns, batch_size, skip_bad, stats, options)
    out = _Outputs(records, input_path, stats, len(table.rows), table.columns, table.bom)
    out.lists = frozenset(c for c in table.columns if any(isinstance(r.get(c), list) for r in table.rows[:100]))
    return out


def _write_jsonl(outputs: _Outputs, output_path: str, show_progress: bool = True) -> None:
    from ..data.io import atomic_output, os_reason
    from ..errors import DataError

    sink = nullcontext(sys.stdout) if output_path == "-" else atomic_output(output_path)
    with sink as out, _progress(outputs.total, show_progress) as advance:
        for rec in outputs.records:
            try:
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                if output_path == "-":
                    out.flush()
            except BrokenPipeError:
                raise  # the reader is gone (`| head`): a quiet exit, see cli_errors
            except OSError as e:
                raise DataError("stdout", f"cannot write ({os_reason(e)})") from None
            advance()
        outputs.check_not_empty()


def _write_table(outputs: _Outputs, output_path: str, fmt: str) -> None:
    from ..data.tables import columns_of, write_table

    rows: list[dict[str, Any]] = []
    with _progress(outputs.total) as advance:
        for rec in outputs.records:
            rows.append(rec)
            advance()
    outputs.check_not_empty()
    write_table(rows, columns_of(rows, outputs.columns), output_path, fmt, outputs.bom, outputs.lists)


def _count_lines(path: str) -> int | None:
    if not stderr_is_tty():
        return None
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def split_predict_options(task_cls: Any, args: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Extra options of `predict`: inference settings of the task (`--threshold 0.4`), and the fields of one
    input record (`--text ...`; `--passage` given twice fills `passages`). Anything else is a usage error."""
    from ..errors import ConfigError

    config = task_cls.Config()
    pairs, bare = parse_options(args)
    if bare:
        raise UsageError(f"unexpected argument {bare[0]!r}")
    overrides: dict[str, str] = {}
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in task_cls.record_options:
            name, repeats = task_cls.record_options[key]
            record[name] = [*record.get(name, []), value] if repeats else value
            continue
        try:
            config.locate(key, ("inference",))
        except ConfigError:
            known = list(task_cls.record_options) + config.sections()["inference"].field_names()
            raise UsageError(f"unknown option --{key.replace('_', '-')}{did_you_mean(key, known)}") from None
        overrides[key] = value
    return overrides, record


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
    """A progress bar on stderr, only when stderr is a terminal (and `show`: not on other torchrun ranks)."""

    def __init__(self, total: int | None, show: bool = True):
        self.total = total
        self.show = show
        self.bar: Progress | None = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show or not stderr_is_tty():
            return lambda: None
        bar = self.bar = Progress(console=err_console, transient=True)
        bar.start()
        task = bar.add_task("predict", total=self.total)
        return lambda: bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
