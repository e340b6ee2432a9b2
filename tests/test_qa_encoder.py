"""`qa --encoder PATH`: the pretrained-encoder reader, on tiny random local encoders (no downloads): BERTs
(WordPiece, a character a token, token types) and an XLM-R (e5-small's kind: SentencePiece pieces of
several characters, a bare "▁", `<s> q </s></s> p </s>` without token types, positions from padding_idx + 1)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from util import SAMPLES, run_cli

from nlpcli.errors import ConfigError
from nlpcli.nn.encoder import HFEncoder
from nlpcli.tasks.qa.data import read_qa
from nlpcli.tasks.qa.inputs import EncoderInputs
from nlpcli.tasks.qa.model import EncoderReader
from nlpcli.tasks.qa.pipeline import QaConfig, QaPipeline

QA = SAMPLES / "qa"
FILLER = "这是一段无关的文字。"
WINDOWS = {"max_len": 48, "window_overlap": 16}


def _chars() -> list[str]:
    text = "".join(f.read_text(encoding="utf-8") for f in sorted(QA.glob("*.jsonl"))) + FILLER
    return sorted({c for c in text if not c.isspace() and not c.isascii()})


SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def make_bert(d: Path, positions: int) -> Path:
    """A random 2-layer BERT whose vocabulary holds every character of samples/qa and of these tests."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = _chars()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + letters + ["##" + c for c in letters]
    d.mkdir(parents=True)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(d / "vocab.txt"))
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=positions, **SMALL)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def make_xlmr(d: Path) -> Path:
    """A random 2-layer XLM-R with a SentencePiece (Unigram) tokenizer over the same characters, plus a few
    multi-character pieces as e5-small has them ("竹子", "▁北京")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in _chars()] + [("竹子", -1.0), ("▁北京", -1.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    specials = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>"}
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", mask_token="<unk>", **specials
    )
    config = XLMRobertaConfig(vocab_size=len(pieces), max_position_embeddings=514, pad_token_id=1, **SMALL)
    d.mkdir(parents=True)
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert") / "bert-512", 512)


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_xlmr(tmp_path_factory.mktemp("xlmr") / "xlmr")


def _pipeline(bert: Path, **settings: object) -> QaPipeline:
    config = QaConfig().updated({"encoder": str(bert), **WINDOWS, **settings})
    return QaPipeline.create(config, read_qa(QA / "train.jsonl")[0])


# --- inputs: the pair, its token types, and the encoder's positions ------------------------------------
def test_pair_fits_the_positions_by_cutting_the_question_never_the_window(tiny_bert):
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    inputs = EncoderInputs(tokenizer, limit=40, window=20, type_vocab_size=2)
    question = "中国的首都是哪个城市？" * 5  # 55 tokens
    passage = "北京是中华人民共和国的首都，也是全国的政治和文化中心。"
    row = inputs.row(question, passage, 3, 23)
    ids = row.encoded.ids
    assert len(ids["input_ids"]) == 40  # [CLS] 17 question tokens [SEP] 20 window tokens [SEP]
    assert tokenizer.decode(ids["input_ids"][1:18]).replace(" ", "") == question[:17]
    assert ids["token_type_ids"] == [0] * 19 + [1] * 21
    # Only the window's tokens map to characters (of the window), all of them, in order.
    assert [o for o in row.encoded.offsets if o[1] > o[0]] == [(i, i + 1) for i in range(20)]
    first, last = row.encoded.positions(1, 2)  # window characters 1..2 are passage characters 4..5
    assert tokenizer.decode(ids["input_ids"][first : last + 1]).replace(" ", "") == passage[4:6]
    assert row.encoded.chars(first, last) == (1, 2)
    # A short question is kept whole.
    short = inputs.row("首都是哪里？", passage, 0, 20).encoded.ids["input_ids"]
    assert len(short) == 3 + 6 + 20
    # A window that leaves the question no room is refused when the pipeline is built.
    with pytest.raises(ConfigError, match="--window 20 or less"):
        EncoderInputs(tokenizer, limit=40, window=21, type_vocab_size=2)


def test_position_limits_of_bert_and_roberta_style_encoders():
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    bert = BertModel(BertConfig(vocab_size=30, max_position_embeddings=64, **SMALL))
    roberta = XLMRobertaModel(XLMRobertaConfig(vocab_size=30, max_position_embeddings=66, pad_token_id=1, **SMALL))
    assert HFEncoder(bert).max_tokens() == 64
    assert HFEncoder(roberta).max_tokens() == 64  # positions count from padding_idx + 1

    class Tokenizer:
        model_max_length = 32

    assert HFEncoder(bert).max_tokens(Tokenizer()) == 32  # the tokenizer's own limit, when lower


def test_text_encoder_cuts_at_the_encoders_positions_and_pads_with_the_pad_id(tiny_xlmr):
    """ner and ie inputs: a text longer than the encoder's positions is cut there (not at a fixed 512), and a
    batch pads input_ids with the tokenizer's pad id (XLM-R's is 1; its positions count from it)."""
    from transformers import AutoTokenizer, XLMRobertaModel

    from nlpcli.nn.encoder import TextEncoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr)
    limit = HFEncoder(XLMRobertaModel.from_pretrained(tiny_xlmr)).max_tokens(tokenizer)
    encode = TextEncoder({}, tokenizer, limit=20)
    long, short = encode("北京是中华人民共和国的首都。" * 5), encode("北京")
    assert len(long.ids["input_ids"]) == 20 and long.offsets[-1] == (0, 0)  # ends with its special token
    batch = encode.pad([long, short])
    assert batch["input_ids"].shape == (2, 20) and (batch["input_ids"][1, len(short.offsets) :] == 1).all()
    assert limit == 512


def test_xlmr_pairs_have_no_token_types_and_pad_with_its_pad_id(tiny_xlmr):
    pipe = _pipeline(tiny_xlmr)
    assert isinstance(pipe.inputs, EncoderInputs) and pipe.inputs.limit == 512
    record = {"question": "熊猫主要吃什么？", "passages": ["大熊猫主要以竹子为食。", "北京是中华人民共和国的首都。"]}
    rows = [p.row for p in pipe.preprocess(record)]
    batch = pipe.inputs.batch(rows)
    assert "token_type_ids" not in batch and batch["input_ids"][0, -1] == pipe.tokenizer.pad_token_id == 1
    # The piece "竹子" is one position covering two characters; "▁北京" covers "北京" (not the added "▁").
    first = rows[0].encoded
    assert first.positions(6, 7) is not None and first.positions(6, 6) is None
    i, j = rows[1].encoded.positions(0, 1)
    assert i == j and rows[1].encoded.chars(i, j) == (0, 1)


def test_long_question_and_passage_stay_within_a_small_encoder(tmp_path):
    bert = make_bert(tmp_path / "bert-64", 64)
    with pytest.raises(ConfigError, match="--window"):
        _pipeline(bert)  # 48-character windows leave a 64-position encoder too little room for the question
    pipe = _pipeline(bert, max_len=40, window_overlap=12)
    record = {"question": "熊猫主要吃什么？" * 20, "passages": [FILLER * 20 + "大熊猫主要以竹子为食。"]}
    pieces = pipe.preprocess(record)
    assert len(pieces) > 5 and all(len(p.row.encoded.ids["input_ids"]) == 64 for p in pieces)
    (out,) = pipe.predict_records([record])  # runs the model: an over-long pair would fail in its position table
    assert set(out) >= {"answer", "start", "end"}


# --- windows and ownership ---------------------------------------------------------------------------
class _ContextFree(nn.Module):
    """A reader that points at fixed tokens whatever their context: start on `a`, end on `b`, gate open."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        big = torch.tensor(60.0)
        start = torch.where(ids == self.a, big, -big)
        end = torch.where(ids == self.b, big, -big)
        return {"start": start, "end": end, "gate": big.expand(ids.shape[0])}


@pytest.mark.parametrize("at", [5, 38, 40, 47, 70, 200])
@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_xlmr"])
def test_windows_and_ownership_give_what_one_large_window_gives(encoder, at, request):
    """Every window that holds the answer sees it, but only the window owning its start proposes it: the
    windowed answer, offsets and voted score equal those of one window over the whole passage (a double
    count would vote 2/3 instead of 1/2)."""
    pipe = _pipeline(request.getfixturevalue(encoder))
    vocab = pipe.tokenizer.get_vocab()
    if "竹子" in vocab:  # one piece: it starts and ends the answer
        pipe.model = _ContextFree(vocab["竹子"], vocab["竹子"])  # type: ignore[assignment]
    else:
        pipe.model = _ContextFree(vocab["竹"], vocab["子"])  # type: ignore[assignment]
    passage = (FILLER * 25)[:at] + "竹子" + (FILLER * 25)[at:]
    record = {"question": "熊猫吃什么？", "passages": ["老虎吃肉。", passage]}
    assert len(pipe.preprocess(record)) > 6
    (windowed,) = pipe.predict_records([record])
    pipe.config = pipe.config.updated({"max_len": 400})
    assert len(pipe.preprocess(record)) == 2
    (whole,) = pipe.predict_records([record])
    assert windowed == whole
    assert (windowed["passage_index"], windowed["start"], windowed["end"]) == (1, at, at + 2)
    assert windowed["answer"] == "竹子" and windowed["score"] == pytest.approx(0.5)


# --- learning ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_xlmr"])
def test_encoder_reader_learns_exact_answers(encoder, request, tmp_path):
    random.seed(0)
    torch.manual_seed(0)
    examples = read_qa(QA / "train.jsonl")[0][:8]
    pipe = _pipeline(request.getfixturevalue(encoder), lr=3e-3, encoder_lr=1e-3)
    items = pipe.training_examples(examples)
    before = pipe.evaluate(examples)
    groups = pipe.param_groups()
    assert groups is not None and sum(len(g["params"]) for g in groups) == len(list(pipe.model.parameters()))
    assert groups[0]["lr_scale"] == pytest.approx(1 / 3) and "lr_scale" not in groups[1]
    opt = torch.optim.AdamW([{"params": g["params"], "lr": 3e-3 * g.get("lr_scale", 1.0)} for g in groups])
    losses = []
    for _ in range(60):
        pipe.model.train()
        loss = pipe.loss(pipe.model, pipe.collate(items))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    pipe.model.eval()
    after = pipe.evaluate(examples)
    assert losses[-1] < losses[0] / 5
    assert after["accuracy"] == 1.0 > before["accuracy"]
    # Saved and loaded as a pair: the same predictions, batched or one window at a time.
    records = [{"question": ex.question, "passages": [p.text for p in ex.passages]} for ex in examples]
    predicted = list(pipe.predict_records(records))
    # fp32, as `pipe` computes (auto is bf16 on a CPU with native bf16, whose rounding moves with the padding)
    loaded = QaPipeline.load(pipe.save(tmp_path / "ckpt"), precision="fp32")
    assert isinstance(loaded.model, EncoderReader) and loaded.config == pipe.config
    one_by_one = list(loaded.predict_records(records, batch_size=1))
    assert list(loaded.predict_records(records)) == predicted
    # another batch shape may round a score differently in its last place (fp32 kernels differ by shape)
    assert [{**r, "score": None} for r in one_by_one] == [{**r, "score": None} for r in predicted]
    assert [r["score"] for r in one_by_one] == pytest.approx([r["score"] for r in predicted], abs=1e-5)


# --- CLI end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained from a copy of the tiny BERT that is deleted afterwards: the checkpoint must hold all it needs.

    The samples, and the same questions with filler around each passage (longer than a window: training
    crops them), so that the tiny model learns that filler holds no answer."""
    tmp = tmp_path_factory.mktemp("qa-encoder")
    source = tmp / "bert"
    shutil.copytree(tiny_bert, source)
    lines = (QA / "train.jsonl").read_text(encoding="utf-8").splitlines()
    padded = []
    for line in lines:
        record = json.loads(line)
        for p in record["passages"]:
            p["passage"] = FILLER * 3 + p["passage"] + FILLER
        padded.append(json.dumps(record, ensure_ascii=False))
    train = tmp / "train.jsonl"
    train.write_text("\n".join(lines + padded) + "\n", encoding="utf-8")
    out = tmp / "run"
    run_cli(
        "train",
        "qa",
        "--train",
        train,
        "--dev",
        QA / "train.jsonl",
        "--output",
        out,
        "--encoder",
        source,
        "--max-steps",
        "120",
        "--eval-every",
        "40",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--encoder-lr",
        "1e-3",
        "--warmup-steps",
        "5",
        "--ema-decay",
        "0",
        "--epochs",
        "100",
        "--max-len",
        "48",
        "--window-overlap",
        "16",
        check=True,
    )
    shutil.rmtree(source)
    return out


def test_train_save_load_offline_predict(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (trained / "best" / "encoder" / "tokenizer.json").exists()
    evals = [json.loads(x) for x in (trained / "train_log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals[0]["score"] < max(e["score"] for e in evals) and max(e["score"] for e in evals) >= 0.9
    # The sample questions, and one whose passage is many windows long with the answer near its end.
    long_passage = FILLER * 30 + "大熊猫主要以竹子为食。" + FILLER
    inputs = tmp_path / "in.jsonl"
    lines = (QA / "input.jsonl").read_text(encoding="utf-8").splitlines()
    lines.append(
        json.dumps({"question": "熊猫主要吃什么？", "passages": ["老虎是肉食动物，主要捕食鹿和野猪。", long_passage]})
    )
    inputs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    run_cli("predict", "qa", "--model", trained, "--input", inputs, "--output", out, check=True)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in rows] == ["北京", "曹雪芹", "竹子", "", "竹子"]
    for r in rows:
        if r["answer"]:  # offsets index the passage as given
            assert r["passages"][r["passage_index"]][r["start"] : r["end"]] == r["answer"]
    assert rows[4]["passage_index"] == 1 and rows[4]["start"] == long_passage.index("竹子")
    # A prediction file reads back as gold.
    proc = run_cli("evaluate", "qa", "--model", trained, "--data", out, "--json", check=True)
    assert json.loads(proc.stdout)["score"] == 1.0
