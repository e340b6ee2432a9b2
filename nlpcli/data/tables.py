"""Tables in and out: CSV, TSV, Excel (.xlsx) and Parquet through pandas, one reader and one writer per format.

`predict` reads a table into rows (every column kept, cells as the file holds them: CSV and TSV cells stay
text exactly as written, Excel and Parquet cells keep their types) and writes rows back with the prediction
columns added; nested values (entities, triples) go into a cell as JSON text. Row numbers in messages are
the ones a spreadsheet shows (the header is row 1, the first record row 2); Parquet rows count from 1.
pandas (and openpyxl, pyarrow) are imported only here, when a table is read or written.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from ..errors import ConfigError, DataError
from .io import atomic_binary_output, atomic_output, check_file, os_reason

JSONL = "jsonl"
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
}
TABLE_FORMATS = (CSV, TSV, XLSX, PARQUET)
BINARY_FORMATS = (XLSX, PARQUET)
PACKAGES = {XLSX: "openpyxl", PARQUET: "pyarrow"}


def format_of(path: str | Path, default: str | None = JSONL) -> str | None:
    """The format a file name's suffix names (`-`, stdin/stdout, is JSON Lines); `default` for other names."""
    if str(path) == "-":
        return JSONL
    return SUFFIXES.get(Path(path).suffix.lower(), default)


@dataclass
class Table:
    """A table as read: its columns in order and one dict per record row (cell values as the file holds them;
    an empty Excel/Parquet cell is None)."""

    path: str
    fmt: str
    columns: list[str]
    rows: list[dict[str, Any]]
    bom: bool = False  # a CSV/TSV that started with a UTF-8 BOM (Excel writes one) is written back with one
    first_row: int = 2  # the number a spreadsheet shows for rows[0]

    def row_number(self, index: int) -> int:
        return self.first_row + index


def _pandas() -> Any:
    import pandas

    return pandas


def _need(fmt: str) -> None:
    package = PACKAGES.get(fmt)
    if package is None:
        return
    try:
        __import__(package)
    except ImportError:
        raise ConfigError(f"reading and writing {fmt} needs the {package} package: pip install {package}") from None


def read_table(path: str | Path, fmt: str | None = None) -> Table:
    """Read a CSV, TSV, Excel (first sheet) or Parquet file; errors are DataErrors naming the file."""
    p = check_file(path)
    fmt = fmt or format_of(p, None)
    if fmt not in TABLE_FORMATS:
        raise DataError(p, f"not a table file (expected one of: {', '.join(TABLE_FORMATS)})")
    _need(fmt)
    try:
        if fmt in (CSV, TSV):
            return _read_delimited(p, fmt)
        if fmt == XLSX:
            return _read_excel(p)
        return _read_parquet(p)
    except DataError:
        raise
    except OSError as e:
        raise DataError(p, f"cannot read ({os_reason(e)})") from None
    except UnicodeDecodeError as e:
        raise DataError(p, f"not UTF-8 text (byte {e.start})") from None
    except Exception as e:  # each library has its own parse errors
        raise DataError(p, f"not a valid {fmt} file ({_first_line(e)})") from None


def _read_delimited(p: Path, fmt: str) -> Table:
    pd = _pandas()
    with open(p, "rb") as f:
        bom = f.read(3) == b"\xef\xbb\xbf"
    try:
        frame = pd.read_csv(
            p,
            sep="\t" if fmt == TSV else ",",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise DataError(p, "file is empty") from None
    return _table(p, fmt, frame, bom=bom)


def _read_excel(p: Path) -> Table:
    frame = _pandas().read_excel(p, sheet_name=0, dtype=object, engine="openpyxl")
    return _table(p, XLSX, frame)


def _read_parquet(p: Path) -> Table:
    frame = _pandas().read_parquet(p)
    return _table(p, PARQUET, frame, first_row=1)


def _table(p: Path, fmt: str, frame: Any, bom: bool = False, first_row: int = 2) -> Table:
    columns = [str(c) for c in frame.columns]
    if not columns:
        raise DataError(p, "file is empty (no header row)")
    frame.columns = columns
    rows = [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    if not rows:
        raise DataError(p, "no records (the table has a header but no rows)")
    return Table(str(p), fmt, columns, rows, bom, first_row)


def plain(value: Any) -> Any:
    """A cell as a plain Python value: numpy scalars and arrays unwrapped, missing values (NaN, NA, NaT) None."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def columns_of(rows: Iterable[dict[str, Any]], first: list[str] | None = None) -> list[str]:
    """Every key of the rows in first-seen order, after `first`."""
    seen = dict.fromkeys(first or [])
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any) -> Any:
    """A value as a table cell: lists and dicts (entities, triples) as JSON text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def write_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    path: str | Path,
    fmt: str,
    bom: bool = False,
    keep_lists: frozenset[str] = frozenset(),
) -> None:
    """Write rows as a table, atomically (`path` "-" is stdout). `keep_lists` names columns whose lists stay
    lists in Parquet (an input column of lists is written back as it was read); other nested values become
    JSON text."""
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"not a table format: {fmt}")
    _need(fmt)
    target = "stdout" if str(path) == "-" else str(path)
    if str(path) == "-" and fmt in BINARY_FORMATS and sys.stdout.isatty():
        raise ConfigError(f"{fmt} is binary: name an output file with --output FILE.{fmt}")
    frame = _pandas().DataFrame(
        [[(row.get(c) if c in keep_lists and fmt == PARQUET else _cell(row.get(c))) for c in columns] for row in rows],
        columns=columns,
    )
    try:
        if str(path) == "-":
            if fmt in BINARY_FORMATS:
                _write_binary(frame, fmt, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                _write_text(frame, fmt, sys.stdout, bom)
                sys.stdout.flush()
            return
        if fmt in BINARY_FORMATS:
            with atomic_binary_output(path) as binary:
                _write_binary(frame, fmt, binary)
        else:
            with atomic_output(path) as text:
                _write_text(frame, fmt, text, bom)
    except (DataError, BrokenPipeError):
        raise
    except OSError as e:
        raise DataError(target, f"cannot write ({os_reason(e)})") from None
    except Exception as e:  # a value the format cannot hold (an illegal Excel character, mixed Parquet types)
        raise DataError(target, f"cannot write as {fmt} ({_first_line(e)})") from None


def _write_text(frame: Any, fmt: str, out: TextIO, bom: bool) -> None:
    if bom:
        out.write("\ufeff")
    frame.to_csv(out, sep="\t" if fmt == TSV else ",", index=False, lineterminator="\n")


def _write_binary(frame: Any, fmt: str, out: BinaryIO) -> None:
    if fmt == XLSX:
        frame.to_excel(out, index=False, engine="openpyxl")
    else:
        frame.to_parquet(out, index=False)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def text_cell(table: Table, index: int, column: str, value: Any) -> str:
    """A cell that must hold text (numbers are taken as their text); a DataError names file, row and column."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        what = "empty" if value is None else f"not text ({type(value).__name__})"
        raise cell_error(table, index, column, what)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        raise cell_error(table, index, column, "empty")
    return text


def list_cell(table: Table, index: int, column: str, value: Any, split_words: bool = False) -> list[str]:
    """A cell holding a list of texts: a list (Parquet), JSON text of one (`["a", "b"]`), or else one item (with
    `split_words`: the words separated by spaces)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise cell_error(table, index, column, f"malformed JSON list ({e.msg})") from None
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise cell_error(table, index, column, "expected a non-empty list of texts")
        return value
    text = text_cell(table, index, column, value)
    return text.split() if split_words else [text]


def cell_error(table: Table, index: int, column: str, reason: str) -> DataError:
    return DataError(table.path, f"row {table.row_number(index)}, column {column!r}: {reason}")


def missing_column(table: Table, column: str, option: str) -> DataError:
    shown = ", ".join(repr(c) for c in table.columns[:12]) + (", ..." if len(table.columns) > 12 else "")
    return DataError(table.path, f"no column {column!r} (the columns: {shown}); name the right one with {option}")
