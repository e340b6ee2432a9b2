"""Everyday use (issue 13): command-line conventions, tables in and out, training that can be watched and
reproduced (plain log lines, `nlpcli report`, TensorBoard, model cards).

Each test checks something that failed before the change: exit codes, did-you-mean text, a table round trip,
the plain log lines of a run whose stderr is no terminal, a PNG that exists, the fields of a model card.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from util import ROOT, SAMPLES, cli_env, run_cli

NER = SAMPLES / "ner"
TINY_NER = ["--config", ROOT / "configs" / "tiny" / "ner.toml", "--epochs", "100", "--threads", "1"]


def _train_ner(out: Path, *extra: Any) -> subprocess.CompletedProcess:
    args = ["train", "ner", "--train", NER / "train.jsonl", "--dev", NER / "dev.jsonl", "--output", out, *TINY_NER]
    return run_cli(*args, "--max-steps", "6", "--log-every", "2", "--eval-every", "3", *extra, check=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny NER run trained through the CLI with stderr a pipe (no terminal), logging to TensorBoard."""
    out = tmp_path_factory.mktemp("everyday") / "ner"
    tb = out.parent / "tb"
    extra = ["--tensorboard", tb] if _has_tensorboard() else []
    return out, _train_ner(out, *extra)


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _usage_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# --- 1. command-line conventions ----------------------------------------------------------------------------
def test_task_is_a_fixed_choice_completed_by_the_shell(tmp_path: Path) -> None:
    _usage_error(run_cli("train", "nre", "--train", "x", "--output", tmp_path / "o"), "did you mean 'ner'?")
    _usage_error(run_cli("predict", "chta", "--model", "m"), "did you mean 'chat'?")
    _usage_error(run_cli("info", "zzz"), "unknown task 'zzz'", "ner, ie, qa, lm, chat")
    assert not (tmp_path / "o").exists()
    assert "ner, ie, qa, lm, chat" in run_cli("evaluate", "--help", check=True).stdout
    env = cli_env() | {"_NLPCLI_COMPLETE": "complete_bash", "COMP_WORDS": "nlpcli train n", "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-m", "nlpcli.cli"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["ner"], done
    # Typer ignores the shell named here when it can detect the running one, and cannot without a terminal
    # (a background job): its own switch makes it take the name, wherever the suite runs.
    env = cli_env() | {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "nlpcli.cli", "--show-completion", "bash"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and "_nlpcli_completion" in shown.stdout, shown


def test_an_unknown_option_is_a_usage_error_with_did_you_mean(tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = run_cli("train", "ner", "--train", NER / "train.jsonl", "--output", out, "--hiden-size", "3")
    _usage_error(proc, "unknown option --hiden-size; did you mean --hidden-size?")
    assert len(proc.stderr) < 1000 and "word_vocab_size" not in proc.stderr  # no list of 40 field names
    assert not out.exists()
    _usage_error(run_cli("train", "ner", "--train", "x", "--output", out, "--model.hed", "standard"), "--head")
    # A record option with a typo names the option (before any model is loaded), not a missing field.
    proc = run_cli("predict", "qa", "--model", tmp_path / "none", "--qustion", "谁？", "--passage", "张三。")
    _usage_error(proc, "unknown option --qustion; did you mean --question?")
    _usage_error(run_cli("generate", "--model", tmp_path / "none", "--words", "a", "--top-kk", "3"), "--top-k")
    # In a config file, an unknown field is the file's fault: exit 1, naming the file.
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nhed = 'standard'\n")
    proc = run_cli("train", "ner", "--train", NER / "train.jsonl", "--output", out, "--config", bad)
    assert proc.returncode == 1 and f"{bad}: unknown option" in proc.stderr and "did you mean" in proc.stderr


def test_version_help_texts_and_flags() -> None:
    from nlpcli import __version__
    from nlpcli.cli import build_command

    assert run_cli("--version", check=True).stdout.strip() == f"nlpcli {__version__}"

    def commands(cmd: Any, path: str = "nlpcli") -> list[tuple[str, Any]]:
        out = [(path, cmd)]
        for name, sub in getattr(cmd, "commands", {}).items():
            out += commands(sub, f"{path} {name}")
        return out

    missing = [
        f"{path} {p.opts[0] if getattr(p, 'opts', None) else p.name}"
        for path, cmd in commands(build_command())
        for p in cmd.params
        if p.param_type_name == "option" and not (p.help or "").strip()
    ]
    assert not missing, missing
    text = run_cli("train", "--help", check=True).stdout
    assert "<bool>" not in text and "--batch-size" in text
    for option in ("--batch-size", "--seed", "--device"):
        line = next(x for x in text.splitlines() if option in x)
        assert len(line.split(option, 1)[1].strip()) > 12, line  # a metavar and a description


def test_info_describes_every_field_and_prints_a_config_that_train_reads(tmp_path: Path) -> None:
    from nlpcli.api import make_config
    from nlpcli.config import read_config_file
    from nlpcli.registry import get_task, task_names

    for task in task_names():
        config = get_task(task).Config()
        undescribed = [f"{f.section}.{f.name}" for f in config.describe() if not f.help.strip()]
        assert not undescribed, (task, undescribed)
        toml = run_cli("info", task, "--toml", check=True).stdout
        path = tmp_path / f"{task}.toml"
        path.write_text(toml, encoding="utf-8")
        assert tomllib.loads(toml) == config.to_dict()
        assert make_config(task, str(path), {}) == config  # what `train --config` builds
        assert set(read_config_file(path)) == set(config.sections())
    table = run_cli("info", "ner", check=True).stdout
    assert "--hidden-size" in table and "Window size in characters" in table and "encoder" in table
    assert "float" in table and "0.5" in table
    changed = tmp_path / "ner-changed.toml"
    changed.write_text((tmp_path / "ner.toml").read_text().replace('head = "efficient"', 'head = "standard"'))
    assert make_config("ner", str(changed), {}).model.head == "standard"


def test_info_does_not_import_transformers() -> None:
    code = (
        "import sys\nfrom nlpcli.cli import main\nsys.argv = ['nlpcli', 'info']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('transformers' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
    assert "transformers" in proc.stdout and "torch" in proc.stdout  # the versions are still shown


def test_one_default_per_concept() -> None:
    from nlpcli.cli import build_command
    from nlpcli.registry import get_task, task_names

    cli = build_command()
    devices = {
        path: p.default
        for path, cmd in [(n, c) for n, c in cli.commands.items()]
        for p in cmd.params
        if getattr(p, "opts", None) and "--device" in p.opts
    }
    assert devices and all(default in ("auto", None) for default in devices.values()), devices
    assert devices["generate"] == "auto"  # it was cpu
    seeds = {
        f"{task}.{f.section}": f.default
        for task in task_names()
        for f in get_task(task).Config().describe()
        if f.name == "seed"
    }
    assert set(seeds.values()) == {42}, seeds
    assert get_task("qa").record_options["passage"] == ("passages", True)  # --passage fills `passages`


def test_a_closed_pipe_ends_quietly_with_141(run: tuple[Path, Any], tmp_path: Path) -> None:
    model, _ = run
    many = tmp_path / "many.jsonl"
    line = json.dumps({"text": "张伟在北京的华为公司担任工程师。" * 4}, ensure_ascii=False)
    many.write_text((line + "\n") * 3000, encoding="utf-8")  # far more than a pipe's buffer holds
    err = tmp_path / "err.txt"
    cmd = (
        f"set -o pipefail; {sys.executable} -m nlpcli.cli predict ner --model {model} --input {many} 2>{err} | head -1"
    )
    proc = subprocess.run(["bash", "-c", cmd], env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 141, (proc.returncode, err.read_text())
    assert proc.stdout.count("\n") == 1 and json.loads(proc.stdout)["entities"] is not None
    told = [x for x in err.read_text().splitlines() if not x.startswith("precision auto: ")]  # test_precision.py
    assert told == []  # no "error: stdout: cannot write (Broken pipe)", no "Exception ignored"


# --- 2. tables in and out -------------------------------------------------------------------------------------
TEXTS = ["张伟在北京的华为公司担任工程师。", "上海浦东的游客很多。", "记者从重庆获悉，李明将加盟腾讯公司。"]


def _table(path: Path, fmt: str, texts: list[Any] | None = None) -> None:
    import pandas as pd

    frame = pd.DataFrame({"id": ["001", "002", "003"], "content": texts or TEXTS, "note": ["a,b", "", "x\ty"]})
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def _read(path: Path, fmt: str) -> Any:
    import pandas as pd

    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if fmt == "tsv":
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if fmt == "xlsx":
        return pd.read_excel(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xlsx", "parquet"])
def test_predict_round_trips_a_table(run: tuple[Path, Any], tmp_path: Path, fmt: str) -> None:
    model, _ = run
    src = tmp_path / f"in.{fmt}"
    _table(src, fmt)
    args = ("predict", "ner", "--model", model, "--threshold", "0.3")
    out = tmp_path / f"out.{fmt}"
    run_cli(*args, "--input", src, "--text-column", "content", "--output", out, check=True)
    table = _read(out, fmt)
    assert list(table.columns) == ["id", "content", "note", "entities"]  # every input column kept, in order
    assert list(table["id"]) == ["001", "002", "003"] and list(table["content"]) == TEXTS
    assert list(table["note"]) == ["a,b", "", "x\ty"]
    lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS)
    jsonl = [json.loads(x)["entities"] for x in run_cli(*args, input=lines, check=True).stdout.splitlines()]
    assert [json.loads(cell) for cell in table["entities"]] == jsonl  # entities as JSON text in a cell
    assert any(jsonl), "the tiny model should find some entity at threshold 0.3"
    # The output's suffix names another format: JSON Lines here, with the columns as fields.
    as_jsonl = tmp_path / "out.jsonl"
    run_cli(*args, "--input", src, "--text-column", "content", "--output", as_jsonl, check=True)
    rows = [json.loads(x) for x in as_jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["entities"] for r in rows] == jsonl and rows[0]["id"] == "001"


def test_csv_to_stdout_and_jsonl_to_csv(run: tuple[Path, Any], tmp_path: Path) -> None:
    model, _ = run
    src = tmp_path / "in.csv"
    _table(src, "csv")
    proc = run_cli("predict", "ner", "--model", model, "--input", src, "--text-column", "content", check=True)
    assert proc.stdout.splitlines()[0] == "id,content,note,entities" and len(proc.stdout.splitlines()) == 4
    out = tmp_path / "out.csv"
    run_cli("predict", "ner", "--model", model, "--input", NER / "input.jsonl", "--output", out, check=True)
    table = _read(out, "csv")
    assert "text" in table.columns and "entities" in table.columns
    assert all(isinstance(json.loads(cell), list) for cell in table["entities"])


def test_bad_cells_name_file_row_and_column(run: tuple[Path, Any], tmp_path: Path) -> None:
    model, _ = run
    src = tmp_path / "gaps.csv"
    _table(src, "csv", [TEXTS[0], "  ", TEXTS[2]])
    out = tmp_path / "out.csv"
    args = ("predict", "ner", "--model", model, "--input", src, "--output", out)
    proc = run_cli(*args, "--text-column", "content")
    assert proc.returncode == 1 and f"error: {src}: row 3, column 'content': empty" in proc.stderr, proc.stderr
    assert not out.exists()
    proc = run_cli(*args)  # no column "text" here
    assert proc.returncode == 1 and "no column 'text'" in proc.stderr and "--text-column" in proc.stderr
    proc = run_cli(*args, "--text-column", "content", "--skip-bad", check=True)
    assert "skipped 1" in proc.stderr and list(_read(out, "csv")["id"]) == ["001", "003"]
    _usage_error(run_cli("predict", "ner", "--model", model, "--input", NER / "input.jsonl", "--text-column", "x"))
    broken = tmp_path / "broken.xlsx"
    broken.write_text("not a spreadsheet")
    proc = run_cli("predict", "ner", "--model", model, "--input", broken)
    assert proc.returncode == 1 and f"{broken}: not a valid xlsx file" in proc.stderr, proc.stderr


def test_qa_tables_read_question_and_passage_columns(tmp_path: Path) -> None:
    """The columns of a qa table: the question, and passages from one or more columns (a passage, or a JSON
    list of them); cell errors name the row and column."""
    import pandas as pd

    from nlpcli.errors import DataError
    from nlpcli.records.stats import PredictStats
    from nlpcli.records.tables import read_table, table_records
    from nlpcli.registry import get_task

    qa = get_task("qa")
    pipe = qa.__new__(qa)  # table_records needs the class' table fields and record check, not a model
    path = tmp_path / "qa.csv"
    frame = {
        "q": ["熊猫吃什么？", "谁？"],
        "p1": ['["老虎吃肉。", "熊猫吃竹子。"]', "张三。"],
        "p2": ["大熊猫爱竹。", ""],
    }
    pd.DataFrame(frame).to_csv(path, index=False)
    table = read_table(path)
    columns = {"question": ["q"], "passages": ["p1", "p2"]}
    stats = PredictStats()
    got = list(table_records(pipe, table, columns, skip_bad=True, stats=stats))
    assert got == [(0, {"question": "熊猫吃什么？", "passages": ["老虎吃肉。", "熊猫吃竹子。", "大熊猫爱竹。"]})]
    assert stats.skipped == 1 and "row 3, column 'p2': empty" in stats.reasons[0]
    with pytest.raises(DataError, match="no column 'passages'"):
        list(table_records(pipe, table, {"question": ["q"]}))


# --- 2b. evaluate: one table, micro and macro, --report ---------------------------------------------------------
def test_evaluate_prints_per_type_micro_and_macro_and_writes_reports(run: tuple[Path, Any], tmp_path: Path) -> None:
    model, _ = run
    args = ("evaluate", "ner", "--model", model, "--data", NER / "dev.jsonl")
    metrics = json.loads(run_cli(*args, "--json", check=True).stdout)
    per_type = metrics["per_type"]
    macro_f1 = sum(m["f1"] for m in per_type.values()) / len(per_type)
    assert metrics["macro"]["f1"] == pytest.approx(macro_f1)
    text = run_cli(*args, check=True).stdout
    assert re.search(r"micro\s.*" + f"{metrics['f1']:.4f}", text) and re.search(rf"macro\s.*{macro_f1:.4f}", text)
    assert "support" in text and all(t in text for t in per_type)
    csv_path, md_path, json_path = tmp_path / "r.csv", tmp_path / "r.md", tmp_path / "r.json"
    for path in (csv_path, md_path, json_path):
        run_cli(*args, "--report", path, check=True)
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "type,precision,recall,f1,support,predicted,correct"
    assert [r.split(",")[0] for r in rows[1:]] == [*per_type, "micro", "macro"]
    macro = rows[-1].split(",")
    assert float(macro[3]) == pytest.approx(macro_f1, abs=1e-6) and int(macro[4]) == metrics["gold"]
    assert "| micro |" in md_path.read_text() and "| macro |" in md_path.read_text()
    report = json.loads(json_path.read_text())
    assert report["rows"][-1]["type"] == "macro" and report["metrics"]["f1"] == pytest.approx(metrics["f1"])
    _usage_error(run_cli(*args, "--report", tmp_path / "r.txt"), ".csv, .md or .json")


# --- 3. training that can be watched and reproduced ------------------------------------------------------------
def test_plain_progress_lines_when_stderr_is_not_a_terminal(run: tuple[Path, subprocess.CompletedProcess]) -> None:
    _, proc = run
    lines = proc.stderr.splitlines()
    step = re.compile(r"^step (\d+)/6 \(\d+%\) loss \d+\.\d{4} lr \S+ [\d,]+ chars/s elapsed \d+:\d\d:\d\d eta \S+$")
    assert [int(m.group(1)) for x in lines if (m := step.match(x))] == [2, 4, 6], proc.stderr
    assert sum(bool(re.match(r"^step [36]: dev f1 \d\.\d{4}", x)) for x in lines) == 2, proc.stderr
    assert lines[0].startswith("train: 6 steps planned")
    assert "\x1b[" not in proc.stderr  # no terminal control codes in a log


def test_report_draws_curves_of_several_runs(run: tuple[Path, Any], tmp_path: Path) -> None:
    first, _ = run
    second = tmp_path / "second"
    _train_ner(second, "--lr", "0.005", "--seed", "7")
    png = tmp_path / "curves.png"
    proc = run_cli("report", first, second, "--output", png, check=True)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    assert str(first) in proc.stdout.replace("\n", "") or first.name in proc.stdout
    summary = json.loads(run_cli("report", first, second, "-o", png, "--json", check=True).stdout)
    assert [r["steps"] for r in summary["runs"]] == [6, 6]
    assert all(r["task"] == "ner" and r["main_metric"] == "f1" and r["best_step"] in (3, 6) for r in summary["runs"])
    single = run_cli("report", first, check=True)
    assert (first / "report.png").stat().st_size > 0 and "wrote" in single.stderr
    proc = run_cli("report", tmp_path / "nothing")
    assert proc.returncode == 1 and "train_log.jsonl" in proc.stderr


def test_tensorboard_logs_through_torchs_writer(run: tuple[Path, Any]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, _ = run
    events = list((model.parent / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    acc = EventAccumulator(str(model.parent / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_s", "dev/f1"} <= tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6]


def test_every_checkpoint_carries_a_model_card(run: tuple[Path, Any], tmp_path: Path) -> None:
    model, _ = run
    # After 6 steps the dev F1 is near chance, so the best checkpoint is step 3 or step 6: the log says which.
    log = [json.loads(line) for line in (model / "train_log.jsonl").read_text().splitlines()]
    best_step = max(e["step"] for e in log if e["event"] == "eval" and e["is_best"])
    for which, step in (("best", best_step), ("last", 6)):
        card = (model / which / "README.md").read_text(encoding="utf-8")
        config = json.loads((model / which / "config.json").read_text())["config"]
        assert card.startswith("---\nlibrary_name: nlpcli\n") and "# nlpcli ner model" in card
        for role in ("train", "dev"):
            data = NER / f"{role}.jsonl"
            sha = hashlib.sha256(data.read_bytes()).hexdigest()
            assert f"| {role} | `{data}` | {data.stat().st_size} | `{sha}` |" in card
        assert f"`nlpcli train ner --train {NER / 'train.jsonl'}" in card and "--max-steps 6" in card
        assert re.search(r"training time \d+:\d\d:\d\d", card) and f"- steps: {step} " in card
        assert re.search(r"\| torch \| \d", card) and "| nlpcli | " in card
        assert "| encoder | `dgcnn` | none: trained from scratch" in card
        block = card.split("```toml\n", 1)[1].split("```", 1)[0]
        assert tomllib.loads(block) == config  # the config, as `--config` reads it
    best = (model / "best" / "README.md").read_text(encoding="utf-8")
    metrics = json.loads((model / "best" / "metrics.json").read_text())
    assert f"| **f1** | {metrics['f1']:.4f} |" in best and f"| macro.f1 | {metrics['macro']['f1']:.4f} |" in best
    shown = run_cli("info", "--model", model, check=True).stdout
    assert shown == best
    from nlpcli.card import licence_of

    assert "non-commercial" in licence_of("m3e-small") and licence_of("word2vec-zhwiki") == "MIT"
    # A resumed run adds its command; an old checkpoint without a card gets one made from its files.
    resumed = tmp_path / "resumed"
    import shutil

    shutil.copytree(model, resumed)
    run_cli("train", "ner", "--train", NER / "train.jsonl", "--dev", NER / "dev.jsonl", "--output", resumed,
            *TINY_NER, "--resume", "--max-steps", "8", check=True)  # fmt: skip
    card = (resumed / "last" / "README.md").read_text(encoding="utf-8")
    assert "- from step 0: `nlpcli train ner" in card and "- from step 6: `nlpcli train ner" in card
    (resumed / "best" / "README.md").unlink()
    proc = run_cli("info", "--model", resumed, check=True)
    assert "# nlpcli ner model" in proc.stdout and "predates model cards" in proc.stderr
