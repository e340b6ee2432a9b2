"""`ie --encoder PATH`: relation extraction over a Hugging Face encoder (a tiny random BERT saved locally whose
vocabulary covers samples/ie; no downloads). Positions are tokens; offsets in the output are characters."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from util import SAMPLES, run_cli

from nlpcli.tasks.ie.relation.data import IeExample, Triple, read_ske
from nlpcli.tasks.ie.relation.pipeline import IeConfig, IePipeline

IE = SAMPLES / "ie"
TRAIN = IE / "train.jsonl"
SCHEMA = IE / "schema.jsonl"
DATE_TEXT = "陈一帆，1988年1月9日出生于新加坡，新加坡籍演员"  # a training sentence; "1988" is two wordpieces


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-bert")
    chars = sorted(
        {
            c
            for f in ("train.jsonl", "input.jsonl")
            for c in (IE / f).read_text(encoding="utf-8")
            if not c.isspace() and not c.isascii()
        }
    )
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    # "19" + "##88": "1988" becomes two wordpieces of two characters each (a mention "98" is cut by them)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *letters, *("##" + c for c in letters), "19", "##88"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(d / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _pipe(tiny_bert: Path, examples: list[IeExample] | None = None, **overrides: Any) -> IePipeline:
    if examples is None:
        examples, _ = read_ske(TRAIN)
    config = IeConfig().updated({"encoder": str(tiny_bert), "schema": str(SCHEMA), "dropout": 0.0} | overrides)
    return IePipeline.create(config, examples)


def _tokens(pipe: IePipeline, text: str) -> list[str]:
    return pipe.tokenizer.convert_ids_to_tokens(pipe.encode(text).ids["input_ids"])


# --- character spans <-> token positions ---------------------------------------------------------------
def test_gold_spans_map_to_tokens_and_cut_mentions_are_dropped_and_counted(tiny_bert: Path) -> None:
    text = "陈一帆，1988年1月9日出生"
    date = Triple("陈一帆", "出生日期", "1988年1月9日", subject_spans=[(0, 2)], object_spans=[(4, 12)])
    cut = Triple("陈一帆", "国籍", "98", subject_spans=[(0, 2)], object_spans=[(5, 6)])  # across "19" "##88"
    ex = IeExample(text, [date, cut], line=1, path="x.jsonl")
    pipe = _pipe(tiny_bert, [ex])
    assert pipe.assets["train_triples"] == {
        "triples": 2,
        "exact": 2,
        "case_insensitive": 0,
        "repeated_mentions": 0,
        "cut_by_tokens": 1,
    }
    tokens = _tokens(pipe, text)
    assert tokens[:8] == ["[CLS]", "陈", "一", "帆", "，", "19", "##88", "年"]
    batch = pipe.collate([ex])
    assert batch["subject"].tolist() == [[1, 3]]  # 陈一帆: tokens 1-3 (after [CLS])
    s = batch["subject_labels"][0]
    assert s[:, 0].nonzero().flatten().tolist() == [1] and s[:, 1].nonzero().flatten().tolist() == [3]
    o = batch["object_labels"][0]
    date_id, cut_id = pipe.predicate_ids["出生日期"], pipe.predicate_ids["国籍"]
    end = tokens.index("日")
    assert o[:, date_id, 0].nonzero().flatten().tolist() == [5]
    assert o[:, date_id, 1].nonzero().flatten().tolist() == [end]
    assert not o[:, cut_id].any()  # "98" starts inside a wordpiece and ends inside the next: no target
    assert batch["span_mask"][0].tolist() == [False] + [True] * (len(tokens) - 2) + [False]  # specials never span


# --- batched decoding on the encoder path ---------------------------------------------------------------
def test_all_subjects_scored_in_one_object_pass_and_mapped_back_to_characters(tiny_bert: Path) -> None:
    pipe = _pipe(tiny_bert)
    model, P = pipe.model, len(pipe.predicates)
    texts = ["陈一帆1988年出生", "吴佳怡和陈一帆"]
    # tokens: [CLS] 陈 一 帆 19 ##88 年 出 生 [SEP]  /  [CLS] 吴 佳 怡 和 陈 一 帆 [SEP]
    assert _tokens(pipe, texts[0])[4:6] == ["19", "##88"]
    big = 20.0

    def subject_logits(h: torch.Tensor) -> torch.Tensor:
        s = torch.full((*h.shape[:2], 2), -big)
        s[:, 0] = big  # [CLS] scores high but is no span position
        s[0, 1, 0] = s[0, 3, 1] = big  # text 0: 陈一帆
        s[1, 1, 0] = s[1, 3, 1] = big  # text 1: 吴佳怡 and 陈一帆
        s[1, 5, 0] = s[1, 7, 1] = big
        return s

    calls = []

    def object_logits(h: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        calls.append(start.tolist())
        o = torch.full((h.shape[0], h.shape[1], P, 2), -big)
        o[:, 4, 1, 0] = o[:, 6, 1, 1] = big  # every subject: an object over tokens 4-6 for predicate 1
        return o

    model.subject_logits, model.object_logits = subject_logits, object_logits  # type: ignore[method-assign]
    found = pipe.forward([pipe.preprocess({"text": t})[0] for t in texts])
    assert calls == [[1, 1, 5]]  # one object pass for the three subjects of both texts
    # text 0: tokens 4-6 = "1988年" = characters 3-7; text 1: tokens 4-6 = "和陈一" = characters 3-5
    assert [[f[:5] for f in row] for row in found] == [[(0, 2, 1, 3, 7)], [(0, 2, 1, 3, 5), (4, 6, 1, 3, 5)]]
    spo = pipe.spo_list(texts[0], found[0])
    assert (spo[0]["subject"], spo[0]["object"]) == ("陈一帆", "1988年")


# --- learning -----------------------------------------------------------------------------------------
def test_overfit_a_few_sentences_exact_triples(tiny_bert: Path) -> None:
    torch.manual_seed(0)
    random.seed(0)
    examples, _ = read_ske(TRAIN)
    few = [ex for ex in examples if ex.text == DATE_TEXT] + examples[:5]
    pipe = _pipe(tiny_bert, examples)
    groups = pipe.param_groups()
    assert groups is not None
    opt = torch.optim.Adam([{"params": g["params"], "lr": 3e-3 * g.get("lr_scale", 1.0)} for g in groups])

    def triples() -> list[set[tuple[str, str, str]]]:
        return [{(d["subject"], d["predicate"], d["object"]) for d in r["spo_list"]} for r in predicted()]

    def predicted() -> list[dict[str, Any]]:
        return list(pipe.predict_records({"text": ex.text} for ex in few))

    gold = [{(t.subject, t.predicate, t.object) for t in ex.triples} for ex in few]
    assert not any(triples())  # an untrained model finds nothing (pointer biases start low)
    for _ in range(150):
        pipe.model.train()
        loss = pipe.loss(pipe.model, pipe.collate(few))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert triples() == gold
    assert ("陈一帆", "出生日期", "1988年1月9日") in gold[0]
    for record in predicted():
        for d in record["spo_list"]:
            assert record["text"][d["subject_start"] : d["subject_end"]] == d["subject"]
            assert record["text"][d["object_start"] : d["object_end"]] == d["object"]


def test_param_groups_encoder_lr_for_the_encoder_trainer_lr_for_the_heads(tiny_bert: Path) -> None:
    pipe = _pipe(tiny_bert, lr=2e-3, encoder_lr=5e-5)
    groups = pipe.param_groups()
    assert groups is not None and len(groups) == 2
    encoder = {id(p) for p in pipe.model.encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == encoder and groups[0]["lr_scale"] == pytest.approx(5e-5 / 2e-3)
    heads = {id(p) for p in groups[1]["params"]}
    assert "lr_scale" not in groups[1] and heads and not heads & encoder
    assert heads | encoder == {id(p) for p in pipe.model.parameters()}
    assert pipe.model.position is None and pipe.model.attention is None  # the encoder has its own


# --- windows fit the encoder's positions -------------------------------------------------------------
def test_long_text_windows_fit_the_encoder_positions(tiny_bert: Path) -> None:
    pipe = _pipe(tiny_bert)
    assert pipe.max_tokens == 128  # the tiny BERT's position table
    text = "陈一帆，1988年1月9日出生于新加坡，新加坡籍演员。" * 12  # 324 characters
    pieces = pipe.preprocess({"text": text})
    assert len(pieces) > 2 and all(len(pipe.encode(p.text).offsets) <= 128 for p in pieces)
    assert max(len(p.text) for p in pieces) == 126  # 128 positions less [CLS] and [SEP]
    pipe.model.eval()
    spo = next(pipe.predict_records([{"text": text}]))["spo_list"]  # runs (an untrained model may find nothing)
    assert all(0 <= d["subject_start"] <= d["subject_end"] < len(text) for d in spo)

    class Expanding:  # a tokenizer that makes three tokens of every character
        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": [0] * (3 * len(text) + 2)}

        def num_special_tokens_to_add(self) -> int:
            return 2

    pipe.tokenizer = Expanding()
    wins = pipe.text_windows(text)
    assert all(3 * (w.end - w.start) + 2 <= 128 for w in wins) and max(w.end - w.start for w in wins) > 30
    assert wins[0].start == 0 and wins[-1].end == len(text)


# --- the command line: train, save, load offline, predict ------------------------------------------------
def test_cli_train_saves_encoder_and_predicts_offline(tiny_bert: Path, tmp_path: Path, monkeypatch) -> None:
    encoder = tmp_path / "bert"
    shutil.copytree(tiny_bert, encoder)
    out = tmp_path / "run"
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
        "--encoder",
        encoder,
        "--lr",
        "3e-3",
        "--encoder-lr",
        "1e-3",
        "--dropout",
        "0",
        "--warmup-steps",
        "10",
        "--batch-size",
        "13",
        "--ema-decay",
        "0",
        "--max-steps",
        "100",
        "--eval-every",
        "20",
        "--threads",
        "1",
        "--json",
        check=True,
    )
    assert json.loads(r.stdout)["best_f1"] >= 0.8
    best = out / "best"
    assert (best / "encoder" / "config.json").exists() and (best / "encoder" / "tokenizer.json").exists()
    saved = json.loads((best / "config.json").read_text(encoding="utf-8"))["config"]["encoder"]
    assert saved["name"] == str(encoder) and saved["lr"] == 1e-3
    assert json.loads((best / "vocab.json").read_text(encoding="utf-8"))["train_triples"]["cut_by_tokens"] == 0

    shutil.rmtree(encoder)  # loading needs nothing but the checkpoint, and never the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    records = [json.loads(x) for x in (IE / "input.jsonl").read_text(encoding="utf-8").splitlines()]
    records.append({"id": "date", "text": DATE_TEXT})
    pred = tmp_path / "pred.jsonl"
    run_cli(
        "predict",
        "ie",
        "--model",
        out,
        "--output",
        pred,
        input="".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
        check=True,
    )
    preds = [json.loads(x) for x in pred.read_text(encoding="utf-8").splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in records]
    assert sum(len(p["spo_list"]) for p in preds) >= 5
    for p in preds:
        for t in p["spo_list"]:
            assert p["text"][t["subject_start"] : t["subject_end"]] == t["subject"]
            assert p["text"][t["object_start"] : t["object_end"]] == t["object"]
    date = [t for t in preds[-1]["spo_list"] if t["predicate"] == "出生日期"]
    assert [(t["subject"], t["object"], t["object_start"], t["object_end"]) for t in date] == [
        ("陈一帆", "1988年1月9日", 4, 13)
    ]
    # the prediction file reads back as gold and scores 1.0 against the same model
    r = run_cli("evaluate", "ie", "--model", out, "--data", pred, "--json", check=True)
    assert json.loads(r.stdout)["f1"] == 1.0
