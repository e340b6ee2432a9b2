"""Records in, records out (issues 21.1, 24.3, 25): plain text in, one read of the input, strict JSON out, tables
taken as written, and every bad input a one-line error naming where, in `predict` and in `serve` alike.

Each test failed on the code before the change (the case ids are those of the reliability cases file).
"""

from __future__ import annotations

import datetime as dt
import decimal
import errno
import gc
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from util import ROOT, SAMPLES, run_cli, told

import nlpcli
from nlpcli.errors import DataError
from nlpcli.records.jsonl import dumps, parse_record
from nlpcli.records.lines import STALL, LineReader
from nlpcli.records.predict import predict
from nlpcli.records.source import open_source
from nlpcli.records.stats import PredictStats
from nlpcli.records.tables import read_table, table_records, write_table
from nlpcli.records.text import text_parser
from nlpcli.registry import get_task

TEXT = "马云在杭州创办了阿里巴巴"
DEEP = '{"text": "x", "a": ' + "[" * 200_000 + "]" * 200_000 + "}"
SURROGATE = '{"text": "张三\\ud800在北京"}'


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("records") / "ner"
    nlpcli.train(
        "ner", train=SAMPLES / "ner" / "train.jsonl", output=out, config=ROOT / "configs" / "tiny" / "ner.toml",
        max_steps=2, threads=1,
    )  # fmt: skip
    return out


class Echo:
    """A task as the records layer sees it: its record check, its table fields, a prediction per record."""

    name: ClassVar[str] = "echo"
    table_fields: ClassVar[dict[str, str]] = {"text": "text"}
    config: Any = None
    device: Any = "cpu"

    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        if not isinstance(record.get("text"), str):
            raise DataError(path, "missing string field 'text'", line)

    def predict_records(self, records: Iterable[dict[str, Any]], batch_size: int | None = None) -> Iterator[dict]:
        return ({**r, "n": len(r["text"])} for r in records if r is not STALL)


def _one_line_error(proc: Any, *needles: str, code: int = 1) -> None:
    lines = told(proc.stderr)
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# --- plain text in (24.3) -------------------------------------------------------------------------------------
def test_plain_text_is_one_text_per_line_from_stdin_or_a_txt_file(model: Path, tmp_path: Path) -> None:
    args = ("predict", "ner", "--model", model, "--threshold", "0.99")
    piped = run_cli(*args, input=TEXT + "\n", check=True)
    assert [json.loads(x)["text"] for x in piped.stdout.splitlines()] == [TEXT]
    txt = tmp_path / "in.txt"
    txt.write_text(f"\n{TEXT}\n\n张三在北京\n", encoding="utf-8")  # blank lines hold no text
    got = [json.loads(x) for x in run_cli(*args, "--input", txt, check=True).stdout.splitlines()]
    assert [r["text"] for r in got] == [TEXT, "张三在北京"] and all("entities" in r for r in got)
    # --format forces a format: jsonl refuses text as the malformed JSON it is, text reads JSON as text.
    _one_line_error(run_cli(*args, "--format", "jsonl", input=TEXT + "\n"), "-:1: malformed JSON")
    line = json.dumps({"text": "张三"}, ensure_ascii=False)
    forced = run_cli(*args, "--format", "text", input=line + "\n", check=True)
    assert json.loads(forced.stdout)["text"] == line
    assert run_cli(*args, "--format", "yaml", input="x\n").returncode == 2


def test_windows_may_change_at_predict_time_by_new_and_old_names(model: Path) -> None:
    """The window is an inference setting: `--window` (or its old name `--max-len`) and `--window-overlap` are
    taken by `predict`; an overlap not below the window is a one-line error naming it."""
    args = ("predict", "ner", "--model", model)
    whole = json.loads(run_cli(*args, input=TEXT + "\n", check=True).stdout)
    for option in ("--window", "--max-len"):
        small = json.loads(run_cli(*args, option, "8", "--window-overlap", "4", input=TEXT + "\n", check=True).stdout)
        assert small["text"] == whole["text"] and "entities" in small
    _one_line_error(run_cli(*args, "--window", "4", "--window-overlap", "4", input=TEXT + "\n"), "window_overlap")


def test_plain_text_gives_each_task_its_record_or_says_what_the_task_needs() -> None:
    ner = text_parser(get_task("ner").__new__(get_task("ner")), "-")
    assert ner(TEXT + "\n", "-", 1, Echo()) == {"text": TEXT}

    class Keywords(Echo):  # lm's own field facts; its record check needs a vocabulary, not wanted here
        name = "lm"
        table_fields = get_task("lm").table_fields

        def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
            if not record["words"]:
                raise DataError(path, "no keywords", line)

    lm = text_parser(Keywords(), "kw.txt")
    assert lm("北京  游客\n", "kw.txt", 3, Keywords()) == {"words": ["北京", "游客"]}  # as `generate --input`
    for task, needs in [("qa", "question and passages"), ("chat", "history")]:
        cls = get_task(task)
        with pytest.raises(DataError, match=f"^-: plain text is one text per line, but a {task} record needs {needs}"):
            text_parser(cls.__new__(cls), "-")


def test_stdin_is_sniffed_by_its_first_non_blank_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for content, fmt in [("\n\n  张三\n", "text"), ('\n {"text": "张三"}\nnot json\n', "jsonl"), ("", "jsonl")]:
        path = tmp_path / "stdin"
        path.write_text(content, encoding="utf-8")
        with open(path, "rb") as f:
            monkeypatch.setattr(sys, "stdin", f)
            with open_source("-") as source:
                assert source.fmt == fmt and "".join(source.lines) == content  # nothing lost to the sniffing


# --- the input is read once -------------------------------------------------------------------------------------
def test_the_input_is_read_once_and_progress_is_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "张三"}\n\n{"text": "李四"}\n', encoding="utf-8")
    stats = PredictStats()
    with open_source(str(path)) as source:
        assert source.reader is not None and source.reader.size == path.stat().st_size
        out = list(predict(Echo(), source.lines, str(path), stats=stats))
        assert source.reader.bytes_read == path.stat().st_size
    assert [r["n"] for r in out] == [2, 2] and (stats.read, stats.written) == (2, 2)


# --- line ends and lines that are not records (1.13, 1.14, 1.19, 1.20, CR on stdin) -----------------------------
class _Chunks(LineReader):
    """A reader whose input arrives in the given chunks (where a pipe may cut it)."""

    def __init__(self, chunks: list[bytes]):
        super().__init__(-1)
        self.chunks = chunks

    def _read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_line_ends_lf_crlf_and_cr_alone_wherever_a_chunk_ends() -> None:
    assert list(_Chunks([b"\xef\xbb\xbfa\r", b"\nb\r\rc\r\n", b"d"])) == ["a\n", "b\n", "\n", "c\n", "d"]
    assert list(_Chunks([b"a\r\r", b"\n", b"b"])) == ["a\n", "\n", "b"]


def test_cr_alone_ends_lines_on_stdin(model: Path) -> None:
    lines = '{"text": "张三"}\r{"text": "李四"}\r'
    proc = run_cli("predict", "ner", "--model", model, "--threshold", "0.99", input=lines)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["text"] for x in proc.stdout.splitlines()] == ["张三", "李四"]


@pytest.mark.parametrize(
    "line, reason",
    [
        (DEEP, "malformed JSON (nested too deeply)"),
        ("[" * 100_000, "malformed JSON (nested too deeply)"),
        (SURROGATE, "not Unicode text (a lone surrogate \\ud800)"),
        ('{"text": "张三", "note": {"k": ["\\udc80"]}}', "not Unicode text (a lone surrogate \\udc80)"),
        ('{"text": "张三", "\\udfff": 1}', "not Unicode text (a lone surrogate \\udfff)"),
    ],
)
def test_lines_no_text_can_hold_are_one_line_errors_naming_file_and_line(line: str, reason: str) -> None:
    with pytest.raises(DataError) as info:
        parse_record(line, "in.jsonl", 7, Echo())
    assert str(info.value) == f"in.jsonl:7: {reason}"
    assert parse_record('{"text": "😀 \\ud83d\\ude00"}', "in.jsonl", 1, Echo()) == {"text": "😀 😀"}  # a pair is text


def test_deep_and_surrogate_lines_are_refused_or_skipped(model: Path, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    good = json.dumps({"text": "张三在北京"}, ensure_ascii=False)
    data.write_text("\n".join([good, DEEP, SURROGATE, good]) + "\n", encoding="utf-8")
    args = ("predict", "ner", "--model", model, "--input", data, "--threshold", "0.99")
    _one_line_error(run_cli(*args), f"{data}:2: malformed JSON (nested too deeply)")
    proc = run_cli(*args, "--skip-bad")
    assert proc.returncode == 0 and "skipped 2 bad record(s)" in proc.stderr, proc.stderr
    assert [json.loads(x)["text"] for x in proc.stdout.splitlines()] == ["张三在北京"] * 2


# --- everything skipped is no input (1.23) ----------------------------------------------------------------------
def test_skip_bad_with_every_record_bad_fails_and_keeps_the_output(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\nnot json\n')
    table = tmp_path / "bad.csv"
    table.write_text("text,id\n ,1\n,2\n")
    for data in (bad, table):
        proc = run_cli("predict", "ner", "--model", model, "--input", data, "--skip-bad", "--output", out)
        _one_line_error(proc, f"{data}: no input records: all 2 were bad and skipped")
    assert out.read_text() == "precious\n"


# --- usage (1.29, 1.30) --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["0", "-3"])
def test_a_batch_size_below_one_is_a_usage_error(size: str) -> None:
    proc = run_cli("predict", "ner", "--model", "nowhere", "--text", "张三", "--batch-size", size)
    assert proc.returncode == 2 and "--batch-size" in proc.stderr and "internal error" not in proc.stderr


# --- strict JSON out, every cell type (1.41, 1.42, 1.47, 1.48, 1.49, 1.53) ------------------------------------------
def test_json_out_is_strict_and_holds_every_cell_type() -> None:
    import pandas as pd

    record = {
        "nan": float("nan"), "inf": [float("-inf"), 1.5], "when": dt.datetime(2024, 1, 2, 3, 4, 5),
        "stamp": pd.Timestamp("2024-01-01 08:00", tz="Asia/Shanghai"), "day": dt.date(2024, 1, 2),
        "clock": dt.time(1, 2, 3), "span": pd.Timedelta(seconds=5), "plain_span": dt.timedelta(days=1, seconds=1.5),
        "money": decimal.Decimal("1.10"), "blob": b"\x00\xff", "nat": pd.NaT,
    }  # fmt: skip
    back = json.loads(dumps(record), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert back == {
        "nan": None, "inf": [None, 1.5], "when": "2024-01-02T03:04:05", "stamp": "2024-01-01T08:00:00+08:00",
        "day": "2024-01-02", "clock": "01:02:03", "span": "P0DT0H0M5S", "plain_span": "P1DT0H0M1.5S",
        "money": "1.10", "blob": "AP8=", "nat": None,
    }  # fmt: skip


def test_every_parquet_and_excel_cell_type_is_written_to_jsonl(model: Path, tmp_path: Path) -> None:
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "text": ["张三在北京"],
        "ts": pa.array([dt.datetime(2024, 1, 1)]),
        "tz": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us", tz="Asia/Shanghai")),
        "d": pa.array([decimal.Decimal("1.10")], pa.decimal128(5, 2)),
        "b": pa.array([bytes(2)], pa.binary()),
        "day": pa.array([dt.date(2024, 1, 2)]),
        "t": pa.array([dt.time(1, 2, 3)]),
        "du": pa.array([dt.timedelta(seconds=5)]),
        "f": [float("nan")],
        "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
    }
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    book = openpyxl.Workbook()
    book.active.append(["text", "when", "n"])
    book.active.append(["张三在北京", dt.datetime(2024, 1, 2), 1.5])
    book.save(tmp_path / "t.xlsx")
    for name in ("t.parquet", "t.xlsx"):
        out = tmp_path / f"{name}.jsonl"
        proc = run_cli("predict", "ner", "--model", model, "--input", tmp_path / name, "--output", out)
        assert proc.returncode == 0, proc.stderr
        row = json.loads(out.read_text(encoding="utf-8"))
        assert row["text"] == "张三在北京" and "entities" in row
        if name == "t.parquet":
            assert (row["ts"], row["tz"], row["d"], row["b"]) == (
                "2024-01-01T00:00:00", "2024-01-01T08:00:00+08:00", "1.10", "AAA=",
            )  # fmt: skip
            assert (row["day"], row["t"], row["du"], row["f"], row["m"]) == (
                "2024-01-02", "01:02:03", "P0DT0H0M5S", None, [["k", 1]],
            )  # fmt: skip
        else:
            assert row["when"] == "2024-01-02T00:00:00" and row["n"] == 1.5


def test_a_text_column_cell_that_is_no_text_names_its_row(tmp_path: Path) -> None:
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([b"ab", b"cd"], pa.binary())}), tmp_path / "b.parquet")
    book = openpyxl.Workbook()
    for row in (["text"], ["张三"], [dt.datetime(2024, 1, 2)], [True]):
        book.active.append(row)
    book.save(tmp_path / "m.xlsx")
    table = read_table(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b.parquet: row 1, column 'text': not text \(bytes\)$"):
        list(table_records(Echo(), table))
    stats = PredictStats()
    got = list(table_records(Echo(), read_table(tmp_path / "m.xlsx"), skip_bad=True, stats=stats))
    assert got == [(0, {"text": "张三"})] and stats.skipped == 2
    assert "m.xlsx: row 3, column 'text': not text" in stats.reasons[0]


# --- tables are taken as written (1.55, 1.62, 1.65) -----------------------------------------------------------------
def test_a_csv_row_with_more_fields_than_the_header_is_an_error_naming_it(model: Path, tmp_path: Path) -> None:
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,id\n张三在北京,1\n李四在上海,2,y\n", encoding="utf-8")
    _one_line_error(run_cli("predict", "ner", "--model", model, "--input", ragged), f"{ragged}: row 3: 3 fields")
    short = tmp_path / "s.tsv"
    short.write_text("text\tid\tnote\n张三\t1\n", encoding="utf-8")  # missing cells are empty, as pandas read them
    assert read_table(short).rows == [{"text": "张三", "id": "1", "note": None}]
    quoted = tmp_path / "q.csv"
    quoted.write_text('text,id\n"张三,\n在北京",1\n\n李四,2\n', encoding="utf-8")  # a quoted comma and line end
    assert [r["text"] for r in read_table(quoted).rows] == ["张三,\n在北京", "李四"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xlsx", "parquet"])
def test_duplicate_or_empty_header_names_are_errors_naming_them(tmp_path: Path, fmt: str) -> None:
    def write(names: list[str | None], path: Path) -> None:
        rows = [names, ["张三", "李四", "1"]]
        if fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"
            path.write_text("".join(sep.join(c or "" for c in r) + "\n" for r in rows), encoding="utf-8")
        elif fmt == "xlsx":
            import openpyxl

            book = openpyxl.Workbook()
            for r in rows:
                book.active.append(r)
            book.save(path)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrays = [pa.array([v]) for v in rows[1]]
            pq.write_table(pa.Table.from_arrays(arrays, names=[n or "" for n in names]), path)

    dup, empty = tmp_path / f"dup.{fmt}", tmp_path / f"empty.{fmt}"
    write(["text", "text", "id"], dup)
    write([None, "text", "id"], empty)
    with pytest.raises(DataError, match=r"header: column 2 repeats the name 'text' of column 1$"):
        read_table(dup)
    with pytest.raises(DataError, match="header: column 1 has no name"):
        read_table(empty)


# --- a binary table written on a full disk (2.22) --------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_a_binary_table_on_a_full_disk_is_one_error_and_nothing_left_to_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from contextlib import contextmanager

    from nlpcli.records import tables

    class Full:
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    @contextmanager
    def full_disk(path: Any) -> Iterator[Full]:
        yield Full()

    unraisable: list[Any] = []
    monkeypatch.setattr(tables, "atomic_binary_output", full_disk)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    out = tmp_path / f"out.{fmt}"
    with pytest.raises(DataError, match=f"^{out}: cannot write \\(No space left on device\\)$"):
        write_table([{"text": "张三" * 1000}] * 200, ["text"], out, fmt)
    gc.collect()
    assert unraisable == []  # no "Exception ignored in ZipFile.__del__" after the message


# --- serve reads bodies with the same parser (3.21, 3.22) ------------------------------------------------------------
@pytest.mark.parametrize(
    "body, status, detail",
    [
        (DEEP.encode(), 400, "request: malformed JSON (nested too deeply)"),
        (f"[{SURROGATE}]".encode(), 400, "request: not Unicode text (a lone surrogate \\ud800)"),
        (b'{"text": "abc"', 400, "request: malformed JSON (Expecting ',' delimiter at line 1 column 15)"),
        (b'[{"text": "a"}, {"txt": "b"}]', 422, "request:2: missing string field 'text'"),
    ],
)
def test_serve_bodies_are_parsed_as_predict_parses_lines(body: bytes, status: int, detail: str) -> None:
    pytest.importorskip("fastapi")
    from nlpcli.serve.bodies import Problem, parse_records

    with pytest.raises(Problem) as info:
        parse_records(body, Echo(), 10)
    assert (info.value.status, info.value.message) == (status, detail)
    assert parse_records(b'{"text": "\\ud83d\\ude00"}', Echo(), 10) == ([{"text": "😀"}], True)
