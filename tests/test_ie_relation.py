"""Relation extraction (`ie`): pointer decoding, the metric, readers' bad input, learning, CLI round trip."""

from __future__ import annotations

import json
import random

import pytest
import torch
from util import SAMPLES, run_cli, shared_data

from nlpcli.data.io import ReadStats
from nlpcli.errors import DataError
from nlpcli.tasks.ie.relation.data import IeExample, Triple, check_predicates, find_all, read_schema, read_ske
from nlpcli.tasks.ie.relation.decode import decode_objects, pointer_spans
from nlpcli.tasks.ie.relation.pipeline import IeConfig, IePipeline

TRAIN = SAMPLES / "ie" / "train.jsonl"
SCHEMA = SAMPLES / "ie" / "schema.jsonl"
TINY = dict(
    hidden_size=32,
    dilations="1,2,1",
    word_dim=16,
    attention_heads=2,
    embed_dropout=0.0,
    dropout=0.0,
    word_min_count=1,
    eval_batch_size=8,
)


def _write(tmp_path, name: str, lines: list) -> str:
    p = tmp_path / name
    p.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
        encoding="utf-8",
    )
    return str(p)


def _spo(s, p, o):
    return {"subject": s, "predicate": p, "object": o}


# --- decoding on hand-made pointer tensors -------------------------------------------------------
def test_pointer_spans_nearest_end_nested_and_overlapping():
    L = 10
    start, end = torch.zeros(2, L), torch.zeros(2, L)
    # text 0: nested subjects sharing an end (0-4 and 2-4), and overlapping ones (3-6, 5-8) ... as starts/ends
    start[0, [0, 2]] = 0.9
    end[0, 4] = 0.8
    # text 1: overlapping 1-3 and 2-5; a start with no end after it (8); a start just under threshold (6)
    start[1, [1, 2, 8]] = 0.7
    start[1, 6] = 0.5
    end[1, [3, 5]] = 0.45
    end[1, 7] = 0.39
    mask = torch.ones(2, L, dtype=torch.bool)
    got = pointer_spans(start, end, mask, 0.5, 0.4).tolist()
    assert got == [[0, 0, 4], [0, 2, 4], [1, 1, 3], [1, 2, 3]]
    # padding is never a start or an end: masking position 3 moves the ends of text 1 to 5
    mask[1, 3] = False
    assert pointer_spans(start, end, mask, 0.5, 0.4).tolist() == [[0, 0, 4], [0, 2, 4], [1, 1, 5], [1, 2, 5]]


def test_decode_objects_several_per_predicate():
    N, L, P = 2, 8, 3
    prob = torch.zeros(N, L, P, 2)
    prob[0, [0, 4], 1, 0] = 0.9  # subject 0, predicate 1: two objects 0-1 and 4-6
    prob[0, [1, 6], 1, 1] = 0.9
    prob[0, 2, 2, 0] = prob[0, 2, 2, 1] = 0.9  # and predicate 2: a one-char object at 2
    prob[1, 3, 0, 0] = prob[1, 5, 0, 1] = 0.9  # subject 1, predicate 0: 3-5
    mask = torch.ones(N, L, dtype=torch.bool)
    got = decode_objects(prob, mask, 0.5, 0.4).tolist()
    assert sorted(got) == [[0, 1, 0, 1], [0, 1, 4, 6], [0, 2, 2, 2], [1, 0, 3, 5]]


# --- readers --------------------------------------------------------------------------------------
def test_find_all_repeated_and_case_insensitive():
    assert find_all("周杰伦和周杰伦", "周杰伦") == ([(0, 2), (4, 6)], False)
    assert find_all("《Sweet Room》好听", "sweet room") == ([(1, 10)], True)
    assert find_all("abc", "d") == ([], False)


def test_reader_bad_input_errors_and_skip(tmp_path):
    good = {"text": "《海风集》的作者是陈若溪", "spo_list": [_spo("海风集", "作者", "陈若溪")]}
    path = _write(
        tmp_path,
        "bad.jsonl",
        [
            good,
            {"spo_list": []},  # line 2: no text
            {"text": "林晚舟写了书", "spo_list": [_spo("青石巷", "作者", "林晚舟")]},  # line 3: subject not in text
            "{not json",  # line 4
            {"text": "《远山的灯》作者赵一鸣", "spo_list": [_spo("远山的灯", "作者", "王五")]},  # line 5: object absent
            {"text": "无三元组"},  # line 6: no spo_list
        ],
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing non-empty string field 'text'"):
        read_ske(path)
    examples, stats = read_ske(path, skip_bad=True)
    assert [ex.line for ex in examples] == [1]
    assert stats.skipped == 5
    assert any(":3: triple 1: subject '青石巷' is not in the text" in r for r in stats.reasons)
    assert any(":5: triple 1: object '王五' is not in the text" in r for r in stats.reasons)


def test_predicate_not_in_schema(tmp_path):
    schema = read_schema(SCHEMA)
    assert "作者" in schema.predicates and schema.types["歌手"] == [("歌曲", "人物")]
    ex = [
        IeExample("ab", [Triple("a", "作者", "b")], line=1, path="x.json"),
        IeExample("cd", [Triple("c", "丈夫", "d")], line=7, path="x.json"),
    ]
    with pytest.raises(DataError, match=r"x.json:7: predicate '丈夫' is not in the schema"):
        check_predicates(ex, set(schema.types), str(SCHEMA), None)
    stats = ReadStats()
    assert check_predicates(ex, set(schema.types), str(SCHEMA), stats) == ex[:1] and stats.skipped == 1


# --- the metric -----------------------------------------------------------------------------------
def test_metric_matches_hand_computed(tmp_path):
    lines = [
        {"text": "《Sweet Room》由阿明演唱", "spo_list": [_spo("sweet room", "歌手", "阿明")]},
        {
            "text": "《青石巷》作者林晚舟，江南文艺出版社出版",
            "spo_list": [_spo("青石巷", "作者", "林晚舟"), _spo("《青石巷》", "出版社", "江南文艺出版社")],
        },
    ]
    examples, _ = read_ske(_write(tmp_path, "gold.jsonl", lines))
    pipe = IePipeline.create(IeConfig().updated(TINY), examples)
    ids = pipe.predicate_ids
    found = [
        # 《Sweet Room》 with the brackets (case and one outer 《》 are normalised away): correct
        [(0, 11, ids["歌手"], 13, 14, 0.9)],
        # 青石巷/作者/林晚舟 correct; 青石巷/出版社/林晚舟 wrong; the publisher triple is missed
        [(1, 3, ids["作者"], 7, 9, 0.8), (1, 3, ids["出版社"], 7, 9, 0.7)],
    ]
    by_text = {ex.text: f for ex, f in zip(examples, found)}
    pipe.forward = lambda pieces: [by_text[p.text] for p in pieces]  # the model's part of the one prediction loop
    m = pipe.evaluate(examples)
    # tp = 2, predicted = 3, gold = 3: P = R = F1 = 2/3
    assert (m["tp"], m["predicted"], m["gold"]) == (2, 3, 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["per_type"]["出版社"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "predicted": 1, "gold": 1}
    assert m["per_type"]["歌手"]["f1"] == 1.0


# --- batched prediction: every subject of a batch in one object pass ----------------------------
def test_predict_scores_all_subjects_in_one_object_pass():
    examples, _ = read_ske(TRAIN)
    pipe = IePipeline.create(IeConfig().updated(TINY), examples)
    model, P = pipe.model, len(pipe.predicates)
    texts = ["甲乙丙丁戊", "子丑寅卯辰巳"]
    big = 20.0

    def subject_logits(h):
        s = torch.full((*h.shape[:2], 2), -big)
        s[0, 0, 0] = s[0, 1, 1] = big  # text 0: subject 0-1
        s[1, 0, 0] = s[1, 3, 0] = big  # text 1: subjects 0-0 and 3-4
        s[1, 0, 1] = s[1, 4, 1] = big
        return s

    calls = []

    def object_logits(h, mask, start, end):
        calls.append(start.tolist())
        o = torch.full((h.shape[0], h.shape[1], P, 2), -big)
        o[:, 3, 1, 0] = o[:, 3, 1, 1] = big  # every subject: one object at 3 for predicate 1
        return o

    model.subject_logits, model.object_logits = subject_logits, object_logits
    found = pipe.forward([pipe.preprocess({"text": t})[0] for t in texts])
    assert calls == [[0, 0, 3]]  # one pass for the three subjects of both texts
    assert [[f[:5] for f in row] for row in found] == [[(0, 1, 1, 3, 3)], [(0, 0, 1, 3, 3), (3, 4, 1, 3, 3)]]
    # Every pointer sits at sigmoid(20): the triple's score is their product.
    assert all(f[5] == pytest.approx(torch.sigmoid(torch.tensor(big)).item() ** 4) for row in found for f in row)
    spo = pipe.spo_list(texts[1], found[1])
    assert spo[0] == {
        "subject": "子",
        "predicate": pipe.predicates[1],
        "object": "卯",
        "subject_type": pipe.types[pipe.predicates[1]][0],
        "object_type": pipe.types[pipe.predicates[1]][1],
        "subject_start": 0,
        "subject_end": 1,
        "object_start": 3,
        "object_end": 4,
        "score": 1.0,
    }


# --- learning ---------------------------------------------------------------------------------------
def test_overfit_one_batch():
    torch.manual_seed(0)
    random.seed(0)
    examples, _ = read_ske(TRAIN)
    batch_ex = examples[:8]
    pipe = IePipeline.create(IeConfig().updated(TINY | {"schema": str(SCHEMA)}), examples)
    f1_before = pipe.evaluate(batch_ex)["f1"]
    opt = torch.optim.Adam(pipe.model.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        pipe.model.train()
        loss = pipe.loss(pipe.model, pipe.collate(batch_ex))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    pipe.model.eval()
    f1_after = pipe.evaluate(batch_ex)["f1"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 / 10
    assert f1_before < 0.2 and f1_after >= 0.9, (f1_before, f1_after)


# --- the CLI round trip ----------------------------------------------------------------------------------
def test_cli_train_predict_evaluate_round_trip(tmp_path):
    out = tmp_path / "run"
    args = [
        "--hidden-size",
        "32",
        "--dilations",
        "1,2,1",
        "--word-dim",
        "16",
        "--attention-heads",
        "2",
        "--embed-dropout",
        "0",
        "--dropout",
        "0",
        "--word-min-count",
        "1",
        "--lr",
        "0.01",
        "--warmup-steps",
        "5",
        "--batch-size",
        "26",
        "--max-steps",
        "40",
        "--eval-every",
        "20",
        "--ema-decay",
        "0.9",
        "--threads",
        "1",
    ]
    r = run_cli(
        "train",
        "ie",
        "--train",
        TRAIN,
        "--dev",
        TRAIN,
        "--schema",
        SCHEMA,
        "--output",
        out,
        *args,
        "--json",
        check=True,
    )
    summary = json.loads(r.stdout)
    assert summary["steps"] == 40 and summary["best_f1"] >= 0.8
    assert json.loads((out / "best" / "vocab.json").read_text(encoding="utf-8"))["train_triples"]["triples"] == 62

    pred_path = tmp_path / "pred.jsonl"
    run_cli(
        "predict", "ie", "--model", out, "--input", SAMPLES / "ie" / "input.jsonl", "--output", pred_path, check=True
    )
    preds = [json.loads(x) for x in pred_path.read_text(encoding="utf-8").splitlines()]
    inputs = [json.loads(x) for x in (SAMPLES / "ie" / "input.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["id"] for p in preds] == [i["id"] for i in inputs]
    assert sum(len(p["spo_list"]) for p in preds) > 0
    for p in preds:
        for t in p["spo_list"]:
            assert p["text"][t["subject_start"] : t["subject_end"]] == t["subject"]
            assert p["text"][t["object_start"] : t["object_end"]] == t["object"]
            assert {"subject_type", "object_type", "predicate"} <= set(t)

    # stdin -> stdout gives the same lines
    r = run_cli(
        "predict", "ie", "--model", out, input=(SAMPLES / "ie" / "input.jsonl").read_text(encoding="utf-8"), check=True
    )
    assert [json.loads(x) for x in r.stdout.splitlines()] == preds

    # the predictions read back as gold score 1.0 against the same model (one format in and out)
    r = run_cli("evaluate", "ie", "--model", out, "--data", pred_path, "--json", check=True)
    assert json.loads(r.stdout)["f1"] == 1.0


def test_cli_bad_predicate_is_line_numbered_or_skipped(tmp_path):
    lines = TRAIN.read_text(encoding="utf-8").splitlines()
    bad = {"text": "张三的妻子是李四", "spo_list": [{"subject": "张三", "predicate": "配偶", "object": "李四"}]}
    path = _write(tmp_path, "train.jsonl", [*lines[:3], bad, *lines[3:6]])
    common = ["--schema", SCHEMA, "--hidden-size", "16", "--dilations", "1", "--max-steps", "2", "--threads", "1"]
    r = run_cli("train", "ie", "--train", path, "--output", tmp_path / "a", *common)
    assert r.returncode == 1 and "train.jsonl:4: predicate '配偶' is not in the schema" in r.stderr
    r = run_cli("train", "ie", "--train", path, "--output", tmp_path / "b", *common, "--skip-bad", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["skipped_bad_records"] == 1 and summary["train_examples"] + summary["dev_examples"] == 6


def test_real_data_reads_and_locates_every_triple():
    examples, stats = read_ske(shared_data("ske2019_subset", "train_data.json"))
    triples = [t for ex in examples for t in ex.triples]
    assert len(examples) == 2601 and len(triples) == 5293 and stats.skipped == 0
    assert sum(t.case_folded for t in triples) == 10  # SOURCE.md: 10 annotations differ from the text in case


def test_long_texts_are_windowed_not_cut():
    examples, _ = read_ske(TRAIN)
    pipe = IePipeline.create(IeConfig().updated(TINY | {"max_len": 16, "window_overlap": 4}), examples)
    text = "甲" * 20 + "《海风集》作者陈若溪"  # 30 chars: the triple lies past the first window
    ex = IeExample(text, [Triple("海风集", "作者", "陈若溪", subject_spans=[(21, 23)], object_spans=[(27, 29)])])
    wins = pipe.training_examples([ex])
    assert len(wins) > 1 and all(len(w.text) <= 16 for w in wins)
    kept = [(w.offset, t.subject_spans, t.object_spans) for w in wins for t in w.triples]
    assert kept and all(
        w.text[s[0][0] : s[0][1] + 1] == "海风集" for w in wins for t in w.triples for s in [t.subject_spans]
    )
    # prediction over a text longer than the position table works through windows; offsets index the full text
    pipe.model.eval()
    spo = next(pipe.predict_records([{"text": text * 2}]))["spo_list"]
    assert all(
        0 <= d["subject_start"] <= d["subject_end"] < 60 and 0 <= d["object_start"] <= d["object_end"] < 60 for d in spo
    )
