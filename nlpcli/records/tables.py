"""Tables in and out: CSV, TSV, Excel (.xlsx) and Parquet, one reader and one writer per format, and the
records a task reads from a table's rows.

`predict` reads a table into rows (every column kept, cells as the file holds them: CSV and TSV cells stay
text exactly as written, Excel and Parquet cells keep their types) and writes rows back with the prediction
columns added; nested values (entities, triples) go into a cell as JSON text. Row numbers in messages are
the ones a spreadsheet shows (the header is row 1, the first record row 2); Parquet rows count from 1.
A header is taken as written: a duplicate or empty column name, or a CSV row with more fields than the
header, is an error (renaming them, or taking extra fields as an index, would write back another table).
pandas (and openpyxl, pyarrow) are imported only here, when a table is read or written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from ..data.io import atomic_binary_output, atomic_output, check_file, os_reason
from ..errors import ConfigError, DataError
from ..extras import require
from .formats import BINARY_FORMATS, CSV, PARQUET, TABLE_FORMATS, TSV, XLSX, format_of
from .stats import PredictStats, count_skipped
from .task import RecordTask

PACKAGES = {XLSX: "openpyxl", PARQUET: "pyarrow"}


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
    return require("pandas", "tables", "reading and writing tables (CSV, TSV, Excel, Parquet)")


def _need(fmt: str) -> None:
    package = PACKAGES.get(fmt)
    if package is not None:
        require(package, "tables", f"reading and writing {fmt} files")


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
    # The csv module, not pandas: pandas takes the extra fields of a ragged row as an index and renames
    # duplicate names, so a table would be written back other than it was read.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a long text is one cell (default 128 kB)
    with open(p, "rb") as f:
        bom = f.read(3) == b"\xef\xbb\xbf"
    with open(p, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t" if fmt == TSV else ",")
        lines = (row for row in reader if row)  # blank lines hold no record (as pandas skips them)
        header = next(lines, None)
        if header is None:
            raise DataError(p, "file is empty")
        columns = _header(p, header)
        rows = []
        for index, cells in enumerate(lines):
            if len(cells) > len(columns):
                raise DataError(p, f"row {2 + index}: {len(cells)} fields, but the header names {len(columns)} columns")
            rows.append(dict(zip(columns, cells + [None] * (len(columns) - len(cells)))))
    return _checked(Table(str(p), fmt, columns, rows, bom))


def _read_excel(p: Path) -> Table:
    frame = _pandas().read_excel(p, sheet_name=0, dtype=object, engine="openpyxl", header=None)
    if frame.empty:
        raise DataError(p, "file is empty (no header row)")
    columns = _header(p, [plain(v) for v in frame.iloc[0]])
    frame = frame.iloc[1:]
    frame.columns = columns
    return _checked(Table(str(p), XLSX, columns, _rows(frame)))


def _read_parquet(p: Path) -> Table:
    import pyarrow.parquet as pq

    columns = _header(p, pq.ParquetFile(p).schema_arrow.names)  # before reading, which refuses duplicates
    return _checked(Table(str(p), PARQUET, columns, _rows(pq.read_table(p).to_pandas()), first_row=1))


def _header(p: Path, names: list[Any]) -> list[str]:
    """The column names of a header row as written; a duplicate or empty name is an error naming it."""
    columns = []
    for i, name in enumerate(names, 1):
        if isinstance(name, float) and name.is_integer():
            name = int(name)
        text = "" if name is None else str(name)
        if not text.strip():
            raise DataError(p, f"header: column {i} has no name (every column needs one, to be written back)")
        columns.append(text)
    seen: dict[str, int] = {}
    for i, name in enumerate(columns, 1):
        if name in seen:
            raise DataError(p, f"header: column {i} repeats the name {name!r} of column {seen[name]}")
        seen[name] = i
    return columns


def _rows(frame: Any) -> list[dict[str, Any]]:
    return [{str(k): plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _checked(table: Table) -> Table:
    if not table.columns:
        raise DataError(table.path, "file is empty (no header row)")
    if not table.rows:
        raise DataError(table.path, "no records (the table has a header but no rows)")
    return table


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
                sys.stdout.buffer.write(_rendered(frame, fmt))
                sys.stdout.buffer.flush()
            else:
                _write_text(frame, fmt, sys.stdout, bom)
                sys.stdout.flush()
            return
        if fmt in BINARY_FORMATS:
            with atomic_binary_output(path) as binary:
                binary.write(_rendered(frame, fmt))
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


def _rendered(frame: Any, fmt: str) -> bytes:
    """An Excel or Parquet file's bytes, made in memory before any is written: a writer failing part-way on
    a file (a full disk) would leave openpyxl's zip open on a closed file, to fail again when collected
    ("Exception ignored in ZipFile.__del__")."""
    out = io.BytesIO()
    if fmt == XLSX:
        frame.to_excel(out, index=False, engine="openpyxl")
    else:
        frame.to_parquet(out, index=False)
    return out.getvalue()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def text_cell(table: Table, index: int, column: str, value: Any) -> str:
    """A cell that must hold text (numbers are taken as their text); a DataError names file, row and column
    (a date, bytes or a list is not text)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
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


def table_records(
    task: RecordTask,
    table: Table,
    columns: dict[str, list[str]] | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
    options: dict[str, str] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, input record) for each good row of a table: the task's `table_fields` read from their
    columns (`columns`: field -> column names; by default the field's own name, and for `passages` also
    `passage`). A missing column is a DataError (naming `options[field]`, the option that sets it); a bad cell
    one naming file, row and column, or with `skip_bad` a skipped row."""
    stats = stats if stats is not None else PredictStats()
    chosen: dict[str, list[str]] = {}
    for name in task.table_fields:
        wanted = (columns or {}).get(name)
        if not wanted:
            singular = name[:-1] if name.endswith("s") else name
            wanted = [name if name in table.columns or singular not in table.columns else singular]
        for col in wanted:
            if col not in table.columns:
                raise missing_column(table, col, (options or {}).get(name, f"--{name}-column"))
        chosen[name] = wanted
    for index, row in enumerate(table.rows):
        try:
            record: dict[str, Any] = {}
            for name, kind in task.table_fields.items():
                if kind == "text":
                    record[name] = text_cell(table, index, chosen[name][0], row[chosen[name][0]])
                else:
                    record[name] = [
                        item for col in chosen[name] for item in list_cell(table, index, col, row[col], kind == "words")
                    ]
            try:
                task.validate_record(record, table.path, None)  # type: ignore[arg-type]  # no line: rows say
            except DataError as e:
                raise DataError(table.path, f"row {table.row_number(index)}: {e.reason}") from None
        except DataError as err:
            count_skipped(stats, err, skip_bad)
            continue
        stats.read += 1
        yield index, record
