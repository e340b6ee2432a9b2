"""`nlpcli generate`: CGMH sentences that contain given words."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from ..errors import Terminated
from .common import (
    DEVICE_HELP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    PRECISION_HELP,
    SAVED_SEED_HELP,
    UsageError,
    cli_errors,
    err_console,
    out_console,
    parse_extra,
    print_note,
    stderr_is_tty,
)


@cli_errors
def generate(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="An `lm` checkpoint (nlpcli train lm).", metavar="DIR"),
    words: list[str] | None = typer.Option(
        None, "--words", help="Keywords every sentence must contain: --words 北京 天安门", metavar="WORD..."
    ),
    num: int | None = typer.Option(
        None, "--num", help="Sentences per keyword set, best first (default: the checkpoint's, 3).", metavar="N"
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Metropolis-Hastings steps per chain (default: the checkpoint's, 200).", metavar="N"
    ),
    seed: int | None = typer.Option(None, "--seed", help=SAVED_SEED_HELP, metavar="N"),
    keep_order: bool = typer.Option(False, "--keep-order", help="Keywords appear in the given order."),
    input_path: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="One keyword set per line (words separated by spaces); blank lines are skipped.",
        metavar="PATH",
    ),
    output_path: str | None = typer.Option(
        None, "--output", "-o", help="JSONL output for --input (written atomically); default stdout.", metavar="PATH"
    ),
    skip_bad: bool = typer.Option(
        False,
        "--skip-bad",
        help="With --input: a keyword set the model cannot serve becomes an error record (its line, words and "
        "error) instead of stopping the run.",
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE"),
    as_json: bool = typer.Option(False, "--json", help="With --words: one JSON object on stdout."),
    quantize: bool = typer.Option(
        False, "--quantize", help="Dynamic int8 Linear layers (CPU): a GPT sampler runs faster; see docs/results.md."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help=PRECISION_HELP + " A GPT sampler runs faster in bf16 on CPUs with AMX (docs/results.md).",
        metavar="PRECISION",
    ),
) -> None:
    """Make sentences that contain every given word (CGMH). Keywords are never deleted or changed; a keyword the
    model does not know is still placed, as written (scored as the unknown token).

    Any sampler setting of the checkpoint (its `inference` section) can be overridden too:
    --top-k 100, --min-len 7, --chains 4, ... (`nlpcli info lm` lists them).
    """
    from .. import api
    from ..registry import get_task
    from ..tasks.gen.lm.pipeline import LmPipeline

    extra, bare = parse_extra(ctx.args)
    config = get_task("lm").Config()
    for key in extra:
        config.locate(key)  # an option the lm config does not have: a usage error before the model loads
    given = {"num": num, "steps": steps, "seed": seed, "keep_order": keep_order or None}
    overrides = {k: v for k, v in given.items() if v is not None} | extra
    keywords = list(words or []) + bare
    if bool(keywords) == bool(input_path):
        raise UsageError("give the keywords with --words W1 W2 ..., or a keyword file with --input (not both)")
    pipe = api.load(model, task="lm", device=device, quantize=quantize, precision=precision, **overrides).pipeline
    assert isinstance(pipe, LmPipeline)
    print_note(pipe.precision_note)
    if input_path is None:
        _show(next(pipe.iter_generate([keywords])), as_json)
        return
    sets = pipe.read_keyword_file(input_path, skip_bad)  # every line is checked before anything is written
    _generate_file(pipe, sets, output_path)


def _show(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"words": result.words, "sentences": result.sentences}, ensure_ascii=False))
        return
    table = Table(title="words: " + " ".join(result.words))
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("sentence")
    for i, s in enumerate(result.sentences, 1):
        table.add_row(str(i), f"{s['score']:.3f}", s["text"])
    out_console.print(table)
    err_console.print("score: mean log-probability per token under the forward LM (higher is better)", style="dim")


def _generate_file(pipe: Any, sets: list[Any], output_path: str | None) -> None:
    """Stream JSONL records, in input order (a set the model cannot serve, kept by --skip-bad, as an error record);
    on Ctrl-C the lines finished so far are kept (the file is still swapped in whole)."""
    import sys
    from contextlib import nullcontext

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..data.io import atomic_output

    sink = atomic_output(output_path) if output_path and output_path != "-" else nullcontext(sys.stdout)
    bar = Progress(
        TextColumn("[bold]generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not stderr_is_tty(),
    )
    written, interrupted = 0, False
    bad = [s for s in sets if s.error]
    results = pipe.iter_generate([s.words for s in sets if not s.error])
    with sink as out, bar:
        task = bar.add_task("generate", total=len(sets))
        try:
            for s in sets:
                record = {"line": s.line, "words": s.words}
                record |= {"error": s.error} if s.error else {"sentences": next(results).sentences}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                written += 1
                bar.advance(task)
        except KeyboardInterrupt as e:
            interrupted = True
            code = EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    where = output_path if output_path and output_path != "-" else "stdout"
    if interrupted:
        err_console.print(f"[yellow]interrupted:[/] kept {written} of {len(sets)} line(s) in {where}", highlight=False)
        raise typer.Exit(code)
    if bad:
        err_console.print(
            f"{len(bad)} keyword set(s) could not be served (error records); first: line {bad[0].line}: {bad[0].error}",
            highlight=False,
        )
    if where != "stdout":
        err_console.print(f"wrote {written} line(s) to {where}", highlight=False)
