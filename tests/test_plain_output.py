"""Tables for scripts and narrow terminals: plain tab-separated rows when stdout is not a terminal, and names
that an 80-column terminal never wraps or cuts."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from util import run_cli

from nlpcli.commands import common
from nlpcli.commands.models import list_models
from nlpcli.tables import prf_report, render

BOX = re.compile("[\u2500-\u257f]")  # box-drawing characters
NAMES = ["m3e-small", "e5-small", "word2vec-zhwiki"]


def test_models_list_in_a_pipe_is_tab_separated_rows_with_whole_names() -> None:
    proc = run_cli("models", "list", check=True)  # stdout is a pipe
    lines = proc.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "how", "kind", "size", "licence", "training-data overlap", "cached"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows if r[1] == "pull"] == NAMES and all(len(r) == 7 for r in rows)
    assert [r[0] for r in rows if r[1] == "build"] == ["ner-msra", "gpt-zh"]
    assert (
        not BOX.search(proc.stdout) and "pretrained weights" not in proc.stdout and "models:" not in proc.stdout
    )  # no box, no title
    assert next(line for line in lines if "word2vec" in line).startswith("word2vec-zhwiki\tpull\tword vectors\t")


def test_info_in_a_pipe_is_rows_and_json_on_request() -> None:
    rows = [line.split("\t") for line in run_cli("info", "ner", check=True).stdout.splitlines()]
    assert rows[0] == ["option", "section", "type", "default", "description"]
    assert ["--hidden-size", "encoder"] in [r[:2] for r in rows] and all(len(r) == 5 for r in rows)
    fields = {f["name"]: f for f in json.loads(run_cli("info", "ner", "--json", check=True).stdout)}
    assert fields["head"]["option"] == "--head" and fields["head"]["section"] == "model"
    assert json.loads(run_cli("info", "--json", check=True).stdout)["nlpcli"]


def _terminal(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(common, "out_console", Console(file=out, width=width, force_terminal=True, color_system=None))
    return out


def test_models_list_on_an_80_column_terminal_never_splits_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _terminal(monkeypatch)
    list_models(as_json=False)
    text = out.getvalue()
    assert BOX.search(text)  # a drawn table, not the plain rows
    assert max(map(len, text.splitlines())) <= 80
    for name in NAMES:
        assert re.search(rf"│ {re.escape(name)} +│", text), text


def test_a_metrics_table_keeps_long_type_names_whole_at_80_columns() -> None:
    names = ["organization_and_government", "scientific_publication_title", "x"]
    per_type = {n: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "gold": 4, "predicted": 2, "tp": 1} for n in names}
    metrics = {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "gold": 12, "predicted": 6, "tp": 3, "per_type": per_type}
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=True, color_system=None).print(render(prf_report(metrics, "ner")))
    text = out.getvalue()
    assert max(map(len, text.splitlines())) <= 80
    for name in names:
        assert re.search(rf"│ {name} +│", text), text
    plain = common.plain_rows(render(prf_report(metrics, "ner")))
    assert plain.splitlines()[0] == "type\tprecision\trecall\tf1\tsupport\tpredicted\tcorrect"
    assert plain.splitlines()[1] == "organization_and_government\t0.5000\t0.2500\t0.3333\t4\t2\t1"
