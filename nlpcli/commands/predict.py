"""`nlpcli predict TASK`: JSONL in (file or stdin), JSONL out (file or stdout), batched and streaming."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import typer
from rich.progress import Progress

from .common import TASK_HELP, cli_errors, did_you_mean, err_console, parse_options, stderr_is_tty

STALL_S = 0.1  # seconds without a new stdin line after which the lines in hand are answered


@cli_errors
def predict(
    ctx: typer.Context,
    task: str = typer.Argument(..., help=TASK_HELP),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory."),
    input_path: str | None = typer.Option(None, "--input", "-i", help="JSONL file, or - for stdin (the default)."),
    output_path: str = typer.Option("-", "--output", "-o", help="JSONL file (written atomically), or - for stdout."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed lines instead of stopping."),
    quantize: bool = typer.Option(
        False, "--quantize", help="Dynamic int8 Linear layers (CPU): faster pretrained encoders; see README."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (fp32 on a CPU) | fp32 | bf16 (faster on CPUs with AMX; see README)"
    ),
) -> None:
    """Add predictions to every input line; each output line keeps the input's fields.

    ner:  {"text": ...} gains "entities": [{type, start, end (inclusive), text}].
    ie:   {"text": ...} gains "spo_list": [{subject, predicate, object, subject_type, object_type, offsets}].
    qa:   {"question": ..., "passages": [...]} gains answer, score, passage_index, start, end.
    lm:   {"words": [...]} gains "sentences": [{text, score}] (CGMH; see also `nlpcli generate`).
    chat: {"history": [turn, ...]} gains reply and turns_used.
    One record can also be given as options instead of --input, e.g. `--text "..."` or
    `--question "..." --passage "..." --passage "..."` (`--passage` given twice fills `passages`).
    Inference settings of the model may follow too (`--threshold 0.4`, `--max-len 512`; `nlpcli info TASK`).
    """
    from .. import api
    from ..data.io import atomic_output, check_output_file, open_input, os_reason
    from ..device import is_distributed
    from ..errors import DataError
    from ..registry import get_task

    overrides, record = split_predict_options(get_task(task), ctx.args)
    if record and input_path is not None:
        raise typer.BadParameter("give either --input or a record as options, not both")
    if is_distributed() and (record or input_path in (None, "-")):
        raise typer.BadParameter("under torchrun, give --input FILE (every rank reads it and predicts its share)")
    input_path = input_path or "-"
    if output_path != "-":
        check_output_file(output_path)  # before the model loads and the input is read
    settings: dict[str, Any] = dict(overrides)
    pipe = api.load(model, task=task, device=device, quantize=quantize, precision=precision, **settings)
    stats = api.PredictStats()
    # stdin is answered as it arrives: when it stalls, the records in hand run without waiting for more.
    source = nullcontext([json.dumps(record, ensure_ascii=False)]) if record else open_input(input_path, STALL_S)
    # Under torchrun the ranks share the lines, and rank 0 alone writes them all, in input order.
    main = not is_distributed() or int(os.environ.get("RANK", "0")) == 0
    sink = nullcontext(sys.stdout) if output_path == "-" or not main else atomic_output(output_path)
    with (
        _errors_told_by_rank_0(main),
        api.predict_ranks(pipe) as ranks,
        source as lines,
        sink as out,
        _progress(input_path if main else None) as advance,
    ):
        for record in ranks.predict(lines, input_path, batch_size, skip_bad, stats):
            try:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                if output_path == "-":
                    out.flush()
            except OSError as e:
                raise DataError("stdout", f"cannot write ({os_reason(e)})") from None
            advance()
        if stats.read == 0 and stats.skipped == 0:
            raise DataError("stdin" if input_path == "-" else input_path, "no input records (the input is empty)")
    if not main:
        return
    if stats.skipped:
        err_console.print(f"skipped {stats.skipped} bad line(s); first: {stats.reasons[0]}", highlight=False)
    if output_path != "-":
        err_console.print(f"wrote {stats.written} line(s) to {output_path}", highlight=False)


def split_predict_options(task_cls: Any, args: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Extra options of `predict`: inference settings of the task (`--threshold 0.4`), and the fields of one
    input record (`--text ...`; `--passage` given twice fills `passages`). Anything else is a usage error."""
    from ..errors import ConfigError

    config = task_cls.Config()
    pairs, bare = parse_options(args)
    if bare:
        raise typer.BadParameter(f"unexpected argument {bare[0]!r}")
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
            raise typer.BadParameter(f"unknown option --{key.replace('_', '-')}{did_you_mean(key, known)}") from None
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
    """A progress bar on stderr, only when stderr is a terminal (and `input_path` given: not on other ranks)."""

    def __init__(self, input_path: str | None):
        self.input_path = input_path
        self.bar: Progress | None = None

    def __enter__(self) -> Callable[[], None]:
        if self.input_path is None or not stderr_is_tty():
            return lambda: None
        total = None
        if self.input_path != "-":
            with open(self.input_path, "rb") as f:
                total = sum(1 for line in f if line.strip())
        bar = self.bar = Progress(console=err_console, transient=True)
        bar.start()
        task = bar.add_task("predict", total=total)
        return lambda: bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
