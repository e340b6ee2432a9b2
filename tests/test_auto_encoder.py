"""`--encoder auto`: the task's best measured catalogue encoder when it is in the cache, else the DGCNN with
a hint; what was chosen is saved, so the checkpoint loads the same way anywhere."""

from __future__ import annotations

import json

from util import ROOT, SAMPLES, run_cli

from nlpcli.config import read_config_file
from nlpcli.models import cache
from nlpcli.nn.encoder import AUTO, LARGE_TRAINING_SET, AutoChoice, EncoderConfig, create_encoder, resolve_auto
from nlpcli.tasks.ie.ner.pipeline import NerConfig, NerPipeline

CHOICES = (
    AutoChoice((("name", "m3e-small"),), "m3e-small", "+3.5 F1"),
    AutoChoice((("name", "dgcnn"), ("word_vectors", "word2vec-zhwiki")), "word2vec-zhwiki", "+1 F1"),
)


def _fake_entry(name: str, verified: bool | None = None) -> None:
    marker = {"name": name} | ({"verified": verified} if verified is not None else {})
    with cache.staged_entry(name, marker) as d:
        (d / "placeholder").write_text("x")


def test_auto_takes_the_first_pulled_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path))
    cfg = EncoderConfig(name=AUTO)
    chosen, note = resolve_auto(cfg, CHOICES)
    assert chosen.name == "dgcnn" and not chosen.word_vectors
    assert note.endswith("`nlpcli models pull m3e-small` would give +3.5 F1")
    _fake_entry("word2vec-zhwiki")
    chosen, note = resolve_auto(cfg, CHOICES)
    assert (chosen.name, chosen.word_vectors) == ("dgcnn", "word2vec-zhwiki") and "word2vec-zhwiki" in note
    _fake_entry("m3e-small")
    assert resolve_auto(cfg, CHOICES)[0].name == "m3e-small"


def test_a_large_training_set_takes_the_dgcnn_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path))
    _fake_entry("m3e-small")
    cfg = EncoderConfig(name=AUTO)
    assert resolve_auto(cfg, CHOICES, examples=500, large=1000)[0].name == "m3e-small"
    chosen, note = resolve_auto(cfg, CHOICES, examples=1001, large=1000)
    assert chosen.name == "dgcnn" and not chosen.word_vectors
    assert note.startswith("encoder auto: dgcnn from scratch (1,001 training texts, more than 1,000: the DGCNN")
    assert note.endswith("`nlpcli models pull word2vec-zhwiki` would give +1 F1")  # not the skipped m3e-small
    _fake_entry("word2vec-zhwiki")  # the DGCNN with vectors is still the DGCNN
    chosen, note = resolve_auto(cfg, CHOICES, examples=1001, large=1000)
    assert (chosen.name, chosen.word_vectors) == ("dgcnn", "word2vec-zhwiki") and "more than 1,000" in note


def test_create_encoder_counts_the_training_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path))
    _fake_entry("m3e-small")
    texts = [chr(0x4E00 + i % 500) for i in range(LARGE_TRAINING_SET + 1)]
    new = create_encoder(EncoderConfig(name=AUTO, use_words=False), texts, CHOICES)
    assert new.config.name == "dgcnn" and f"{LARGE_TRAINING_SET + 1:,} training texts" in new.note
    assert new.assets["encoder_note"] == new.note


def test_word_vectors_with_auto_take_the_dgcnn_with_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path))
    _fake_entry("m3e-small")  # would be chosen, but the vectors ask for the DGCNN (case 1.105)
    chosen, note = resolve_auto(EncoderConfig(name=AUTO, word_vectors="wv.txt"), CHOICES)
    assert (chosen.name, chosen.word_vectors) == ("dgcnn", "wv.txt")
    assert note == "encoder auto: dgcnn with the word vectors wv.txt (--word-vectors asks for the DGCNN)"


def test_word_vectors_with_auto_are_read(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path / "home"))  # the CLI below inherits it
    _fake_entry("m3e-small")
    bad = tmp_path / "wv.txt"
    bad.write_text("not a word2vec file\n", encoding="utf-8")
    r = run_cli(
        "train",
        "ner",
        "--config",
        ROOT / "configs" / "tiny" / "ner.toml",
        "--train",
        SAMPLES / "ner" / "train.jsonl",
        "--output",
        tmp_path / "run",
        "--word-vectors",
        bad,
        "--max-steps",
        "1",
    )
    assert r.returncode == 1 and "wv.txt" in r.stderr and "m3e-small" not in r.stderr, r.stderr


def test_an_unverified_entry_is_skipped_with_a_line_saying_so(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path))
    _fake_entry("m3e-small", verified=False)  # `models pull --no-verify` (case 3.19)
    chosen, note = resolve_auto(EncoderConfig(name=AUTO), CHOICES)
    assert chosen.name == "dgcnn"
    assert "m3e-small skipped: its cache entry was never verified (pulled with --no-verify)" in note
    _fake_entry("word2vec-zhwiki", verified=True)
    chosen, note = resolve_auto(EncoderConfig(name=AUTO), CHOICES)
    assert chosen.word_vectors == "word2vec-zhwiki" and note.startswith("encoder auto: word2vec-zhwiki (+1 F1; ")
    assert "m3e-small skipped" in note


def test_train_with_auto_records_the_choice(tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        "ner",
        "--config",
        ROOT / "configs" / "tiny" / "ner.toml",
        "--train",
        SAMPLES / "ner" / "train.jsonl",
        "--output",
        out,
        "--encoder",
        "auto",
        "--max-steps",
        "2",
        check=True,
    )
    # the test session's cache is empty; said once, before the first step
    assert r.stderr.count("encoder auto: dgcnn from scratch") == 1
    assert r.stderr.index("encoder auto:") < r.stderr.index("step 2:")
    saved = json.loads((out / "last" / "config.json").read_text())["config"]["encoder"]["name"]
    assert saved == "dgcnn"  # concrete in the checkpoint: loading never depends on the cache
    cfg = NerConfig().updated(read_config_file(ROOT / "configs" / "tiny" / "ner.toml")).updated({"encoder": "auto"})
    pipe = NerPipeline.create(cfg, NerPipeline.read(SAMPLES / "ner" / "train.jsonl")[0])
    assert pipe.config.encoder.name == "dgcnn" and pipe.assets["encoder_note"].startswith("encoder auto:")
