"""The input and output formats, and how a file name (or `predict --format`) picks one."""

from __future__ import annotations

from pathlib import Path

JSONL, TEXT = "jsonl", "text"
CSV, TSV, XLSX, PARQUET = "csv", "tsv", "xlsx", "parquet"
SUFFIXES = {
    ".csv": CSV,
    ".tsv": TSV,
    ".tab": TSV,
    ".xlsx": XLSX,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".json": JSONL,
    ".txt": TEXT,
}
TABLE_FORMATS = (CSV, TSV, XLSX, PARQUET)
BINARY_FORMATS = (XLSX, PARQUET)
LINE_FORMATS = (JSONL, TEXT)  # read a line at a time, from a file or stdin
INPUT_FORMATS = (TEXT, JSONL, *TABLE_FORMATS)


def format_of(path: str | Path, default: str | None = JSONL) -> str | None:
    """The format a file name's suffix names (`-`, stdin/stdout, is JSON Lines); `default` for other names."""
    if str(path) == "-":
        return JSONL
    return SUFFIXES.get(Path(path).suffix.lower(), default)


def output_format(path: str, input_fmt: str) -> str:
    """The format predictions are written in: the one the output's suffix names, else the input's (plain text,
    which has no place for predictions, gives JSON Lines carrying the text)."""
    written = JSONL if input_fmt == TEXT else input_fmt
    if path == "-":
        return written
    named = format_of(path, None)
    return written if named in (None, TEXT) else named
