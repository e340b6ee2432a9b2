"""`--encoder auto`: the task's best measured catalogue encoder when it is in the cache, else the DGCNN with
a hint; what was chosen is saved, so the checkpoint loads the same way anywhere."""

from __future__ import annotations

import json

from util import ROOT, SAMPLES, run_cli

from nlpcli.config import read_config_file
from nlpcli.models import cache
from nlpcli.nn.encoder import AUTO, AutoChoice, EncoderConfig, resolve_auto
from nlpcli.tasks.ie.ner.pipeline import NerConfig, NerPipeline

CHOICES = (
    AutoChoice((("name", "m3e-small"),), "m3e-small", "+3.5 F1"),
    AutoChoice((("name", "dgcnn"), ("word_vectors", "word2vec-zhwiki")), "word2vec-zhwiki", "+1 F1"),
)


def _fake_entry(name: str) -> None:
    with cache.staged_entry(name, {"name": name}) as d:
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
    assert "encoder auto: dgcnn from scratch" in r.stderr  # the test session's cache is empty
    saved = json.loads((out / "last" / "config.json").read_text())["config"]["encoder"]["name"]
    assert saved == "dgcnn"  # concrete in the checkpoint: loading never depends on the cache
    cfg = NerConfig().updated(read_config_file(ROOT / "configs" / "tiny" / "ner.toml")).updated({"encoder": "auto"})
    pipe = NerPipeline.create(cfg, NerPipeline.read(SAMPLES / "ner" / "train.jsonl")[0])
    assert pipe.config.encoder.name == "dgcnn" and pipe.assets["encoder_note"].startswith("encoder auto:")
