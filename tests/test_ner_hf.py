"""`--encoder PATH`: a Hugging Face encoder (a tiny random BERT saved locally; no downloads)."""

import json

import pytest
from util import SAMPLES, run_cli

NER = SAMPLES / "ner"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    chars = sorted(
        {
            c
            for f in ("train.jsonl", "dev.jsonl")
            for c in (NER / f).read_text(encoding="utf-8")
            if not c.isspace() and not c.isascii()
        }
    )
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + letters + ["##" + c for c in letters]
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


def test_hf_encoder_trains_saves_and_predicts_offline(tiny_bert, tmp_path):
    run = tmp_path / "run"
    run_cli(
        "train",
        "ner",
        "--train",
        NER / "train.jsonl",
        "--dev",
        NER / "dev.jsonl",
        "--output",
        run,
        "--encoder",
        tiny_bert,
        "--max-steps",
        "150",
        "--eval-every",
        "50",
        "--lr",
        "2e-3",
        "--encoder-lr",
        "1e-3",
        "--warmup-steps",
        "10",
        "--batch-size",
        "16",
        "--head-size",
        "16",
        check=True,
    )
    assert (run / "best" / "encoder" / "tokenizer.json").exists()
    evals = [json.loads(line)["f1"] for line in (run / "train_log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals[-1] > evals[0] and max(evals) > 0.5
    # Latin letters and spaces: token offsets must map back to characters.
    text = "周杰最近迷上了 CSOL ，每天都要玩两个小时。"
    proc = run_cli(
        "predict", "ner", "--model", run, input=json.dumps({"text": text}, ensure_ascii=False) + "\n", check=True
    )
    (line,) = [json.loads(s) for s in proc.stdout.splitlines()]
    assert line["entities"], line
    for e in line["entities"]:
        assert text[e["start"] : e["end"]] == e["text"] and not e["text"].startswith(" ")
