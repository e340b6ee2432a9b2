"""Distillation: `train ner --teacher DIR --unlabelled FILE` learns from a teacher's labels on plain text."""

import json

import pytest
from util import SAMPLES, run_cli, told

from nlpcli import api
from nlpcli.distill import LABELS, TEACHER_DIR, teacher_labels
from nlpcli.errors import ConfigError, DataError
from nlpcli.tasks.ie.ner.pipeline import NerPipeline

NER = SAMPLES / "ner"
TINY = dict(
    hidden_size=64, dilations="1,2,4,1", head_size=16, word_dim=32, warmup_steps=10, batch_size=16, lr=5e-3, seed=1
)
N_GOLD = 10  # gold sentences the students get: too few to learn the sample's names, places and companies


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    report = api.train(
        "ner", NER / "train.jsonl", out, dev=NER / "dev.jsonl", max_steps=150, eval_every=50, threads=1, **TINY
    )
    assert report["best_metric"] > 0.8
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A few gold sentences, and the rest of the training texts as plain unlabelled lines."""
    work = tmp_path_factory.mktemp("distill-data")
    lines = (NER / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (work / "gold.jsonl").write_text("\n".join(lines[:N_GOLD]) + "\n", encoding="utf-8")
    texts = [json.loads(line)["text"] for line in lines[N_GOLD:]]
    (work / "unlabelled.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    return work


def _student(out, data, **distill):
    return api.train(
        "ner",
        data / "gold.jsonl",
        out,
        dev=NER / "dev.jsonl",
        max_steps=150,
        eval_every=50,
        threads=1,
        **TINY,
        **distill,
    )


def test_student_learns_from_the_teachers_labels(teacher, data, tmp_path):
    alone = _student(tmp_path / "alone", data)
    taught = _student(tmp_path / "taught", data, teacher=teacher / "best", unlabelled=[data / "unlabelled.txt"])
    # The teacher's labels on 230 texts carry what 10 gold sentences cannot: the student scores far higher.
    assert taught["best_metric"] > alone["best_metric"] + 0.2
    assert taught["best_metric"] > 0.7
    assert taught["train_examples"] == alone["train_examples"] + 230
    card = (tmp_path / "taught" / "best" / "README.md").read_text(encoding="utf-8")
    assert "Teacher:" in card and "| unlabelled |" in card and "| teacher labels |" in card


def test_labels_are_the_teachers_predictions_and_are_reused(teacher, data, tmp_path):
    said: list[str] = []
    path, count = teacher_labels(
        NerPipeline, str(teacher), [str(data / "unlabelled.txt")], tmp_path, "cpu", said.append
    )
    assert path == tmp_path / TEACHER_DIR / LABELS and count == 230
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in (data / "unlabelled.txt").read_text(encoding="utf-8").splitlines() if t]
    predicted = api.load(teacher)(texts)
    assert [r["text"] for r in records] == texts
    assert [r["entities"] for r in records] == predicted
    assert any(r["entities"] for r in records)
    # The same teacher and text: the labels are kept, not made again.
    said.clear()
    stamp = path.stat().st_mtime_ns
    teacher_labels(NerPipeline, str(teacher), [str(data / "unlabelled.txt")], tmp_path, "cpu", said.append)
    assert path.stat().st_mtime_ns == stamp and said[0].startswith("teacher: reusing")
    # Other text: labelled again.
    other = tmp_path / "other.txt"
    other.write_text("\n".join(texts[:5]) + "\n", encoding="utf-8")
    _, count = teacher_labels(NerPipeline, str(teacher), [str(other)], tmp_path, "cpu")
    assert count == 5 and len(path.read_text(encoding="utf-8").splitlines()) == 5


def test_bad_distillation_requests_are_one_line_errors(teacher, data, tmp_path):
    with pytest.raises(ConfigError, match="--unlabelled needs --teacher"):
        _student(tmp_path / "a", data, unlabelled=[data / "unlabelled.txt"])
    with pytest.raises(ConfigError, match="--teacher needs --unlabelled"):
        _student(tmp_path / "b", data, teacher=teacher)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty|no text"):
        _student(tmp_path / "c", data, teacher=teacher, unlabelled=[empty])
    with pytest.raises(ConfigError, match="cannot learn from a teacher"):
        api.train("qa", SAMPLES / "qa" / "train.jsonl", tmp_path / "d", teacher=teacher, unlabelled=[empty])
    # A teacher of another task, through the command line: one line, exit 1, nothing trained.
    proc = run_cli(
        "train", "ie", "--train", SAMPLES / "ie" / "train.jsonl", "--output", tmp_path / "e",
        "--teacher", teacher, "--unlabelled", data / "unlabelled.txt", "--max-steps", "2",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert len(told(proc.stderr)) == 1 and "ner" in proc.stderr and not (tmp_path / "e" / "best").exists()


def test_resume_keeps_the_labels_the_run_started_with(teacher, data, tmp_path):
    out = tmp_path / "run"
    unlabelled = [data / "unlabelled.txt"]
    first = api.train(
        "ner", data / "gold.jsonl", out, max_steps=10, threads=1, teacher=teacher, unlabelled=unlabelled, **TINY
    )
    resumed = api.train("ner", data / "gold.jsonl", out, max_steps=20, threads=1, resume=True, **TINY)
    assert resumed["steps"] == 20 and resumed["train_examples"] == first["train_examples"]
    assert "Teacher:" in (out / "last" / "README.md").read_text(encoding="utf-8")


def test_an_ie_teachers_triples_read_back_as_training_records(tmp_path):
    from nlpcli.tasks.ie.relation.pipeline import IePipeline

    ie = SAMPLES / "ie"
    out = tmp_path / "ie"
    api.train(
        "ie", ie / "train.jsonl", out, config="configs/tiny/ie.toml", schema=str(ie / "schema.jsonl"), max_steps=30
    )
    texts = [json.loads(line)["text"] for line in (ie / "train.jsonl").read_text(encoding="utf-8").splitlines()[:20]]
    (tmp_path / "plain.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    labels, count = teacher_labels(IePipeline, str(out), [str(tmp_path / "plain.txt")], tmp_path / "student", "cpu")
    examples, _ = IePipeline.read(str(labels))
    assert count == len(examples) == 20 and [ex.text for ex in examples] == texts
    predicted = api.load(out)(texts)
    assert sum(len(p) for p in predicted) > 0
    assert [len({(t.subject, t.predicate, t.object) for t in ex.triples}) for ex in examples] == [
        len({(p["subject"], p["predicate"], p["object"]) for p in triples}) for triples in predicted
    ]


def test_overwriting_without_a_teacher_drops_the_old_labels(teacher, data, tmp_path):
    out = tmp_path / "run"
    unlabelled = [data / "unlabelled.txt"]
    api.train("ner", data / "gold.jsonl", out, max_steps=2, threads=1, teacher=teacher, unlabelled=unlabelled, **TINY)
    assert (out / TEACHER_DIR / LABELS).is_file()
    api.train("ner", data / "gold.jsonl", out, max_steps=2, threads=1, overwrite=True, **TINY)
    assert not (out / TEACHER_DIR).exists()  # a later --resume cannot pick up the other run's labels
    resumed = api.train("ner", data / "gold.jsonl", out, max_steps=4, threads=1, resume=True, **TINY)
    assert resumed["train_examples"] == N_GOLD - 1  # the gold less its carved dev example, nothing taught
