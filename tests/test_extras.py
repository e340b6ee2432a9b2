"""Optional features without their extra: one line naming `pip install 'nlpcli[EXTRA]'`, exit 1.

A missing package is simulated in the CLI subprocess with `sys.modules[name] = None`, which makes every
import of it fail as if it were not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from util import ROOT, cli_env

from nlpcli.errors import NlpcliError
from nlpcli.extras import MissingExtra, require

NER_V1 = ROOT / "tests" / "fixtures" / "v1" / "ner"


def run_without(modules: list[str], *args: str) -> subprocess.CompletedProcess:
    """`nlpcli ARGS` in a process where importing any of `modules` fails as if it were not installed."""
    code = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = ['nlpcli', *{list(args)!r}]\n"
        "from nlpcli.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300
    )


def assert_names_the_extra(proc: subprocess.CompletedProcess, extra: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert f"pip install 'nlpcli[{extra}]'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_require_returns_the_module_or_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", "none", "json") is json
    monkeypatch.setitem(sys.modules, "json", None)
    with pytest.raises(MissingExtra) as e:
        require("json", "tables", "reading JSON")
    assert isinstance(e.value, NlpcliError)
    assert str(e.value) == "reading JSON needs the 'tables' extra: pip install 'nlpcli[tables]' (no module 'json')"


@pytest.mark.parametrize("package", ["fastapi", "httptools"])
def test_serve_without_a_package_of_its_extra(package: str) -> None:
    proc = run_without([package], "serve", "--model", str(NER_V1), "--port", "0")
    assert_names_the_extra(proc, "serve")
    assert "nlpcli serve" in proc.stderr and f"no module {package!r}" in proc.stderr


def test_report_without_matplotlib(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    run.mkdir()
    steps = [{"event": "step", "step": s, "loss": 1.0 / s, "tokens_per_s": 100.0, "elapsed_s": s} for s in (1, 2)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    proc = run_without(["matplotlib"], "report", str(run))
    assert_names_the_extra(proc, "report")
    assert not (run / "report.png").exists()


def test_a_hugging_face_encoder_without_transformers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = run_without(
        ["transformers"],
        "train",
        "ner",
        "--train",
        str(ROOT / "samples" / "ner" / "train.jsonl"),
        "--output",
        str(tmp_path / "out"),
        "--encoder",
        "bert-base-chinese",
        "--max-steps",
        "1",
    )
    assert_names_the_extra(proc, "hf")


def test_tables_without_pandas_or_pyarrow(tmp_path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,张三在北京\n", encoding="utf-8")
    # a CSV is read by the csv module, but written back through pandas; a Parquet file needs pyarrow to be read
    proc = run_without(["pandas"], "predict", "ner", "--model", str(NER_V1), "--input", str(src), "--precision", "fp32")
    assert_names_the_extra(proc, "tables")
    parquet = tmp_path / "in.parquet"
    parquet.write_bytes(b"PAR1")
    proc = run_without(
        ["pyarrow"], "predict", "ner", "--model", str(NER_V1), "--input", str(parquet), "--precision", "fp32"
    )
    assert_names_the_extra(proc, "tables")
