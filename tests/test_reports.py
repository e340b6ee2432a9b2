"""Reports people look at (issue 24, part 7): `nlpcli report` marks the kept (best) checkpoint, draws the loss on a
log scale and the learning rate, starts speed axes at 0 and names the task's speed unit; `evaluate --errors`
writes every false positive and false negative with its text.

The curves are checked on the data and axes drawn (a matplotlib Figure), not on pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from util import ROOT, SAMPLES, run_cli

from nlpcli.errors import ConfigError
from nlpcli.report import draw, plot_runs, read_run

NER = SAMPLES / "ner"
BEST_STEP, BEST_F1 = 60, 0.75


def _write_run(directory: Path, best_dir: bool = True, drop_eval_at: int | None = None) -> Path:
    """A run's output directory: a log of 100 steps (a step record every 10, an evaluation every 20, the
    best at 60) and, with `best_dir`, the kept checkpoint's metrics.json as the trainer writes it."""
    directory.mkdir(parents=True)
    records: list[dict[str, Any]] = []
    for step in range(10, 101, 10):
        records.append(
            {
                "event": "step",
                "step": step,
                "loss": 3.0 / step,
                "lr": 1e-3 * (1 - step / 100),
                "tokens_per_s": 900.0 + step,
                "elapsed_s": step * 0.6,
                "speed_unit": "chars",
            }
        )
        if step % 20 == 0 and step != drop_eval_at:
            f1 = BEST_F1 - abs(step - BEST_STEP) / 200
            evaluation = {"event": "eval", "step": step, "is_best": step <= BEST_STEP, "elapsed_s": step * 0.6 + 1}
            records.append(evaluation | {"main_metric": "f1", "f1": f1})
    (directory / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    if best_dir:
        (directory / "best").mkdir()
        (directory / "best" / "config.json").write_text(json.dumps({"task": "ner"}), encoding="utf-8")
        (directory / "best" / "metrics.json").write_text(json.dumps({"f1": BEST_F1, "step": BEST_STEP}))
    return directory


def _figure(runs: list[Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 13))
    draw(fig, runs)
    return fig


def _marks(ax: Any) -> list[float]:
    """x of the dotted vertical lines (the kept checkpoint) on an axis."""
    return [
        float(line.get_xdata()[0])
        for line in ax.get_lines()
        if line.get_linestyle() == ":" and len(set(line.get_xdata())) == 1
    ]


def test_the_kept_checkpoint_is_marked_and_the_axes_read_right(tmp_path: Path) -> None:
    run = read_run(_write_run(tmp_path / "run"))
    assert run.best_checkpoint() == (BEST_STEP, BEST_F1)
    assert [v for _, _, v in run.series("lr")] == pytest.approx([1e-3 * (1 - s / 100) for s in range(10, 101, 10)])
    assert run.speed_unit == "chars"
    fig = _figure([run])
    loss, dev, lr, speed = (fig.axes[2 * r : 2 * r + 2] for r in range(4))
    assert [ax.get_yscale() for ax in loss] == ["log", "log"]
    assert [ax.get_ylabel() for ax in lr] == ["learning rate"] * 2
    assert [ax.get_ylabel() for ax in speed] == ["chars/s"] * 2
    assert [ax.get_ylim()[0] for ax in (*speed, *lr)] == [0, 0, 0, 0]
    # The mark sits at the best step (left) and where the dev curve draws that evaluation in time (right).
    eval_minutes = (BEST_STEP * 0.6 + 1) / 60
    for ax in fig.axes[0::2]:
        assert _marks(ax) == [BEST_STEP]
    for ax in fig.axes[1::2]:
        assert _marks(ax) == [pytest.approx(eval_minutes)]
    stars = [line for line in dev[0].get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xydata()[0]) == [BEST_STEP, BEST_F1]
    assert plot_runs([run]).startswith(b"\x89PNG\r\n\x1a\n")


def test_the_kept_checkpoint_is_the_one_in_best_not_the_logs_guess(tmp_path: Path) -> None:
    # Killed after best/ was saved at step 60 but before its evaluation reached the log: the log's last best is
    # step 40, the kept checkpoint is step 60's.
    cut = read_run(_write_run(tmp_path / "cut", drop_eval_at=BEST_STEP))
    assert [e["step"] for e in cut.evals if e["is_best"]] == [20, 40]
    assert cut.best_checkpoint() == (BEST_STEP, BEST_F1)
    assert cut.summary()["best_step"] == BEST_STEP
    no_best_dir = read_run(_write_run(tmp_path / "log_only", best_dir=False))
    assert no_best_dir.best_checkpoint() == (BEST_STEP, BEST_F1)


def test_a_loss_that_is_not_positive_keeps_a_linear_axis(tmp_path: Path) -> None:
    run = read_run(_write_run(tmp_path / "run"))
    run.steps[0]["loss"] = 0.0
    assert _figure([run]).axes[0].get_yscale() == "linear"


def test_report_cli_names_the_unit_and_the_kept_step(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run")
    summary = json.loads(run_cli("report", run_dir, "--json", check=True).stdout)["runs"][0]
    assert summary["speed_unit"] == "chars" and summary["best_step"] == BEST_STEP and summary["best"] == BEST_F1
    table = run_cli("report", run_dir, check=True).stdout
    assert "1,000 chars/s" in table and "kept (best)" in table, table


# --- evaluate --errors ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ner_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NER model, trained long enough to find some entities and miss others."""
    out = tmp_path_factory.mktemp("errors") / "ner"
    config = ["--config", ROOT / "configs" / "tiny" / "ner.toml", "--threads", "1", "--epochs", "100"]
    train = ["--train", NER / "train.jsonl", "--dev", NER / "dev.jsonl", "--max-steps", "40", "--eval-every", "20"]
    run_cli("train", "ner", *train, "--output", out, *config, check=True)
    return out


def _gold(path: Path) -> set[tuple[str, str, int, str]]:
    """(text, type, start, entity) of every gold entity of a CLUENER file."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for kind, mentions in record["label"].items():
            out |= {(record["text"], kind, s, mention) for mention, spans in mentions.items() for s, _ in spans}
    return out


def test_evaluate_errors_lists_exactly_the_false_positives_and_negatives(ner_model: Path, tmp_path: Path) -> None:
    dev, errors = NER / "dev.jsonl", tmp_path / "errors.jsonl"
    plain = run_cli("evaluate", "ner", "--model", ner_model, "--data", dev, "--json", check=True)
    proc = run_cli("evaluate", "ner", "--model", ner_model, "--data", dev, "--json", "--errors", errors, check=True)
    assert proc.stdout == plain.stdout  # the metrics are printed as without --errors
    assert "wrote the false positives and negatives" in proc.stderr
    metrics = json.loads(proc.stdout)
    rows = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("false_positive") == metrics["predicted"] - metrics["tp"] > 0
    assert kinds.count("false_negative") == metrics["gold"] - metrics["tp"] > 0
    assert all(r["text"][r["start"] : r["end"]] == r["entity"] for r in rows)  # offsets exclusive, as predict's
    # Exactly the predicted-not-gold and gold-not-predicted entities, by their text and where they start.
    found = run_cli("predict", "ner", "--model", ner_model, "--input", dev, check=True).stdout
    predicted = {
        (r["text"], e["type"], e["start"], e["text"])
        for r in map(json.loads, found.splitlines())
        for e in r["entities"]
    }
    gold = _gold(dev)
    assert len(rows) == len({(r["text"], r["type"], r["start"], r["entity"]) for r in rows})  # none twice
    assert {(r["text"], r["type"], r["start"], r["entity"]) for r in rows if r["kind"] == "false_positive"} == (
        predicted - gold
    )
    assert {(r["text"], r["type"], r["start"], r["entity"]) for r in rows if r["kind"] == "false_negative"} == (
        gold - predicted
    )
    # Not with --thresholds (which settings' errors?), and refused before the model loads.
    proc = run_cli("evaluate", "ner", "-m", tmp_path / "none", "--data", dev, "--thresholds", "0.5", "--errors", errors)
    assert proc.returncode == 2 and "--thresholds" in proc.stderr


def test_ie_and_qa_list_their_errors_and_other_tasks_say_they_have_none() -> None:
    from nlpcli.registry import get_task
    from nlpcli.tasks.base import Pipeline
    from nlpcli.tasks.ie.relation.data import IeExample
    from nlpcli.tasks.qa.data import QAExample

    ie = get_task("ie")
    text = "《星河夜话》是孙雨桐创作的长篇小说"
    gold = [{("星河夜话", "作者", "孙雨桐"), ("星河夜话", "出版社", "东海出版社")}]
    pred = [{("星河夜话", "作者", "孙雨桐"), ("星河夜话", "作者", "长篇小说")}]
    assert ie.errors([IeExample(text)], gold, pred) == [  # type: ignore[attr-defined]
        {"text": text, "kind": "false_positive", "subject": "星河夜话", "predicate": "作者", "object": "长篇小说"},
        {"text": text, "kind": "false_negative", "subject": "星河夜话", "predicate": "出版社", "object": "东海出版社"},
    ]
    qa = get_task("qa")
    questions = [
        QAExample(q, [], answers) for q, answers in (("a", ["北京"]), ("b", ["北京"]), ("c", []), ("d", ["木星"]))
    ]
    rows = qa.errors(questions, ["北京", "上海", "上海", ""])  # type: ignore[attr-defined]
    assert [(r["question"], r["kind"], r["answer"], r["gold"]) for r in rows] == [
        ("b", "wrong_answer", "上海", ["北京"]),
        ("c", "false_positive", "上海", []),
        ("d", "false_negative", "", ["木星"]),
    ]
    with pytest.raises(ConfigError, match="the lm task has no false positives"):
        Pipeline.evaluate_errors(SimpleNamespace(name="lm"), [])  # type: ignore[arg-type]
    assert get_task("lm").evaluate_errors is Pipeline.evaluate_errors
