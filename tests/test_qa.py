"""The qa task: DGCNN blocks, decoding, voting, metrics, readers, learning, and the CLI end to end."""

from __future__ import annotations

import json
import random

import pytest
import torch
from util import SAMPLES, run_cli, shared_data

from nlpcli.errors import DataError
from nlpcli.nn.dgcnn import DGCNN, GatedDilatedBlock
from nlpcli.tasks.qa.data import read_qa
from nlpcli.tasks.qa.decode import Candidate, best_spans, vote
from nlpcli.tasks.qa.metrics import cmrc_scores, normalize_answer, qa_metrics, sogou_scores
from nlpcli.tasks.qa.model import AttentionPool, match_ids, pointer_probs, span_loss
from nlpcli.tasks.qa.pipeline import QaConfig, QaPipeline

TINY = {
    "hidden_size": 48,
    "word_dim": 16,
    "char_min_count": 1,
    "word_min_count": 1,
    "dropout": 0.0,
    "embed_dropout": 0.0,
    "passage_dilations": "1,2,4,1",
    "question_dilations": "1,2",
}


# --- blocks -----------------------------------------------------------------------------------
def test_gated_block_shapes_and_padding_invariance():
    torch.manual_seed(0)
    block = GatedDilatedBlock(16, dilation=2, in_dim=8).eval()
    x = torch.randn(2, 11, 8)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    y = block(x, mask)
    assert y.shape == (2, 11, 16)
    assert torch.all(y[1, 7:] == 0)
    # Changing what sits in the padding, or how much padding there is, changes nothing real.
    x2 = x.clone()
    x2[1, 7:] = 100.0
    assert torch.allclose(block(x2, mask)[1, :7], y[1, :7], atol=1e-6)
    stack = DGCNN(8, [1, 2, 4, 1]).eval()
    alone = stack(x[1:, :7], torch.ones(1, 7, dtype=torch.bool))
    assert torch.allclose(stack(x, mask)[1, :7], alone[0], atol=1e-5)


def test_attention_pool_ignores_padding():
    torch.manual_seed(0)
    pool = AttentionPool(8)
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, torch.randn(1, 3, 8) * 50], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    assert torch.allclose(pool(padded, mask), pool(x, torch.ones(1, 5, dtype=torch.bool)), atol=1e-6)


def test_match_ids_marks_passage_tokens_found_in_their_own_question():
    q = torch.tensor([[5, 6, 0], [7, 1, 0]])  # question 1 holds an unknown char (1) and padding (0)
    p = torch.tensor([[6, 9, 5, 0], [7, 1, 0, 0], [5, 7, 9, 0]])
    owner = torch.tensor([0, 1, 1])
    assert match_ids(p, q, owner).tolist() == [
        [True, False, True, False],
        [True, False, False, False],
        [False, True, False, False],
    ]


def test_span_loss_and_softmax_pointers():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float)
    target = torch.tensor([[False, True, False, False], [False] * 4])  # the second passage has no answer
    good = torch.tensor([[0.0, 9.0, 0.0, 50.0], [0.0, 0.0, 0.0, 0.0]])
    bad = torch.tensor([[9.0, 0.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]])
    assert span_loss(good, target, mask) < 0.01 < span_loss(bad, target, mask)
    # Padding takes no probability, and the gate scales a passage's whole distribution.
    out = {"start": good, "end": good, "gate": torch.tensor([20.0, -20.0])}
    start, _ = pointer_probs(out, mask)
    assert start[0, 3] == 0 and abs(float(start[0].sum()) - 1) < 1e-4 and float(start[1].sum()) < 1e-6


def test_model_outputs_do_not_depend_on_batch_padding():
    pipe = QaPipeline.create(QaConfig().updated(TINY), read_qa(SAMPLES / "qa" / "train.jsonl")[0]).to(
        torch.device("cpu")
    )
    pipe.model.eval()
    enc = pipe.inputs.encode
    q = [enc("中国的首都是哪里？"), enc("谁写了红楼梦")]
    ps = [enc("北京是首都。"), enc("《红楼梦》是清代作家曹雪芹创作的章回体长篇小说。")]
    both = pipe.model(pipe.inputs.tensors(q, ps, torch.tensor([0, 1])))
    alone = pipe.model(pipe.inputs.tensors(q[:1], ps[:1], torch.tensor([0])))
    n = len(ps[0].chars)
    for key in ("start", "end"):
        assert torch.allclose(both[key][0, :n], alone[key][0], atol=1e-5)
    assert torch.allclose(both["gate"][0], alone["gate"][0], atol=1e-5)


# --- decoding and voting ---------------------------------------------------------------------
def test_best_spans_matches_brute_force_and_respects_limits():
    torch.manual_seed(0)
    start, end = torch.rand(6, 15), torch.rand(6, 15)
    score, i, j = best_spans(start, end, max_answer_len=4, threshold=0.1)
    for n in range(6):
        best = max(
            ((start[n, a] * end[n, b]).item(), a, b)
            for a in range(15)
            for b in range(a, min(a + 4, 15))
            if start[n, a] > 0.1 and end[n, b] > 0.1
        )
        assert score[n].item() == pytest.approx(best[0])
        assert (i[n].item(), j[n].item()) == best[1:]
    # An end before the start or below the threshold never counts; no candidate gives score 0.
    s = torch.tensor([[0.0, 0.9, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0]])
    e = torch.tensor([[0.9, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.9]])
    score, i, j = best_spans(s, e, max_answer_len=5, threshold=0.1)
    assert (i[0].item(), j[0].item()) == (1, 3) and score[0].item() == pytest.approx(0.45)
    assert score[1].item() == 0.0


def test_vote_prefers_agreeing_passages_and_max_does_not():
    cands = [
        Candidate("北京", 0.7, 0, 0, 1),
        Candidate("北京。", 0.7, 1, 3, 5),
        Candidate("北京", 0.7, 2, 0, 1),
        Candidate("上海", 0.9, 3, 0, 1),
    ]
    best, score = vote(cands, "vote")
    assert best.text in ("北京", "北京。") and score == pytest.approx(3 * 0.49 / 3.1)
    assert vote(cands, "max")[0].text == "上海"
    assert vote([], "vote") == (None, 0.0)


# --- metrics ----------------------------------------------------------------------------------
def test_sogou_metric_normalisation_and_variants():
    assert normalize_answer("１２３ＡＢ， c") == "123abc"
    assert sogou_scores("１５年", ["15年"]) == (1.0, 1.0)
    assert sogou_scores("《红楼梦》", ["红楼梦"]) == (1.0, 1.0)
    assert sogou_scores("林含英", ["林海音", "林含英"]) == (1.0, 1.0)
    assert sogou_scores("巴西,俄罗斯", ["俄罗斯 巴西"])[0] == 1.0  # same pieces, any order
    acc, f1 = sogou_scores("曹雪芹先生", ["曹雪芹"])
    assert acc == 0.0 and f1 == pytest.approx(2 * 0.6 * 1 / 1.6)
    assert sogou_scores("", ["北京"]) == (0.0, 0.0)
    assert sogou_scores("", []) == (1.0, 1.0) and sogou_scores("北京", []) == (0.0, 0.0)


def test_cmrc_metric_and_corpus_metrics():
    assert cmrc_scores("光荣和ω-force", ["光荣和ω-force"]) == (1.0, 1.0)
    em, f1 = cmrc_scores("光荣公司", ["光荣和ω-force", "光荣"])
    assert em == 0.0 and f1 == pytest.approx(2 * 0.5 * 1 / 1.5)  # best gold: "光荣", LCS 2 of 4 predicted chars
    m = qa_metrics([["北京"], ["上海"], []], ["北京", "", ""], ["webqa", "squad", "webqa"])
    assert m["accuracy"] == pytest.approx(2 / 3) and m["score"] == pytest.approx(2 / 3)
    assert m["em"] == 0.0 and m["squad_examples"] == 1
    assert m["no_answer"] == {"gold": 1, "predicted": 2, "correct": 1, "accuracy": 1.0}


# --- readers ----------------------------------------------------------------------------------
def test_readers_all_formats(tmp_path):
    dgcnn = [
        {
            "id": "1",
            "question": "首都?",
            "passages": [{"passage": "首都是北京，北京很大", "answer": "北京"}, {"passage": "无关", "answer": ""}],
        },
        {"passages": [{"passage": "截断", "answer": ""}]},
    ]
    (tmp_path / "d.json").write_text(json.dumps(dgcnn, ensure_ascii=False, indent=1), encoding="utf-8")
    with pytest.raises(DataError, match=r"d.json:\d+: missing or empty 'question'"):
        read_qa(tmp_path / "d.json")
    exs, stats = read_qa(tmp_path / "d.json", skip_bad=True)
    assert stats.skipped == 1 and exs[0].passages[0].spans == [(3, 4), (6, 7)] and exs[0].answers == ["北京"]
    (tmp_path / "qid_answer_expand").write_text("1\t北京\t北京|北京市\n", encoding="utf-8")
    assert read_qa(tmp_path / "d.json", skip_bad=True)[0][0].answers == ["北京", "北京市"]

    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "甲乙丙丁乙丙",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "何?",
                                "answers": [{"text": "乙丙", "answer_start": 4}, {"text": "丁", "answer_start": 9}],
                            }
                        ],
                    }
                ]
            }
        ]
    }
    (tmp_path / "s.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    ex = read_qa(tmp_path / "s.json")[0][0]
    assert ex.kind == "squad" and ex.passages[0].spans == [(3, 3), (4, 5)]  # misaligned offset re-found

    webqa = {"Q1": {"question": "谁?", "evidences": {"Q1#00": {"answer": ["纣王"], "evidence": "商纣王亡国"}}}}
    (tmp_path / "w.json").write_text(json.dumps(webqa, ensure_ascii=True), encoding="utf-8")
    assert read_qa(tmp_path / "w.json")[0][0].passages[0].spans == [(1, 2)]

    lines = ['{"question": "q", "passages": ["甲乙"], "answer": "乙"}', '{"question": "q", "passages": []}']
    (tmp_path / "j.jsonl").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=r"j.jsonl:2: empty passage list"):
        read_qa(tmp_path / "j.jsonl")
    (tmp_path / "bad.jsonl").write_bytes(lines[0].encode() + b'\n{"question": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not UTF-8"):
        read_qa(tmp_path / "bad.jsonl")


# --- learning ---------------------------------------------------------------------------------
def test_overfit_one_batch():
    random.seed(0)
    torch.manual_seed(0)
    examples = read_qa(SAMPLES / "qa" / "train.jsonl")[0][:8]
    pipe = QaPipeline.create(QaConfig().updated(TINY), examples)
    items = pipe.training_examples(examples)
    before = pipe.evaluate(examples)["score"]
    opt = torch.optim.AdamW(pipe.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        pipe.model.train()
        loss = pipe.loss(pipe.model, pipe.collate(items))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    pipe.model.eval()
    after = pipe.evaluate(examples)["score"]
    assert losses[-1] < losses[0] / 5
    assert after >= 0.8 > before


# --- CLI end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("qa") / "run"
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    run_cli(
        "train",
        "qa",
        "--train",
        SAMPLES / "qa" / "train.jsonl",
        "--dev",
        SAMPLES / "qa" / "train.jsonl",
        "--output",
        out,
        "--max-steps",
        "80",
        "--eval-every",
        "20",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "5",
        "--ema-decay",
        "0",
        "--epochs",
        "100",
        *opts,
        check=True,
    )
    return out


def test_train_predict_evaluate(trained, tmp_path):
    evals = [json.loads(x) for x in (trained / "train_log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals[0]["score"] < max(e["score"] for e in evals) and max(e["score"] for e in evals) >= 0.8
    out = tmp_path / "answers.jsonl"
    run_cli("predict", "qa", "--model", trained, "--input", SAMPLES / "qa" / "input.jsonl", "--output", out, check=True)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in rows[:3]] == ["北京", "曹雪芹", "竹子"]
    assert rows[0]["passage_index"] == 1 and rows[0]["passages"][1][rows[0]["start"] : rows[0]["end"]] == "北京"
    assert rows[3]["answer"] == "" and rows[3]["passage_index"] is None
    # A prediction file reads back as gold.
    proc = run_cli("evaluate", "qa", "--model", trained, "--data", out, "--json", check=True)
    assert json.loads(proc.stdout)["score"] == 1.0
    proc = run_cli("evaluate", "qa", "--model", trained, "--data", SAMPLES / "qa" / "train.jsonl", "--json", check=True)
    metrics = json.loads(proc.stdout)
    assert metrics["score"] >= 0.8 and {"accuracy", "f1", "no_answer"} <= set(metrics)


def test_predict_one_off_and_bad_input(trained, tmp_path):
    proc = run_cli(
        "predict",
        "qa",
        "--model",
        trained,
        "--question",
        "熊猫主要吃什么？",
        "--passage",
        "老虎是肉食动物。",
        "--passage",
        "大熊猫主要以竹子为食。",
        check=True,
    )
    row = json.loads(proc.stdout)
    assert row["answer"] == "竹子" and row["passage_index"] == 1 and row["passages"][1] == "大熊猫主要以竹子为食。"
    # A 100k-character passage is windowed, not cut: the answer near its end is found at the right offset.
    long_passage = "这是一段无关的文字。" * 10000 + "大熊猫主要以竹子为食。"
    bad = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"question": "熊猫主要吃什么？", "passages": [long_passage]}, ensure_ascii=False),
        '{"passages": ["甲"]}',
        '{"question": "q", "passages": []}',
    ]
    bad.write_bytes(("\n".join(lines) + "\n").encode() + b'{"question": "\xff"}\n')
    proc = run_cli("predict", "qa", "--model", trained, "--input", bad)
    assert proc.returncode == 1 and "bad.jsonl:2: missing or empty 'question'" in proc.stderr
    proc = run_cli("predict", "qa", "--model", trained, "--input", bad, "--skip-bad")
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == 0 and len(rows) == 1 and "skipped 3" in proc.stderr
    assert rows[0]["answer"] == "竹子" and rows[0]["start"] == long_passage.rindex("竹子")
    proc = run_cli("predict", "qa", "--model", trained, "--input", bad, "--question", "q")
    assert proc.returncode == 2


def test_webqa_shared_file_reads():
    path = shared_data("webqa", "me_test.ann.json")
    examples, _ = read_qa(path)
    assert len(examples) >= 2000 and sum(p.labelled for ex in examples for p in ex.passages) > 0.99 * len(examples)
