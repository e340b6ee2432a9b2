"""`--word-vectors`: pretrained vectors initialise the from-scratch encoder's char and word tables."""

from __future__ import annotations

import json

import pytest
import torch
from util import ROOT, SAMPLES, run_cli

from nlpcli.config import read_config_file
from nlpcli.data import vocab as V
from nlpcli.tasks.ie.ner.pipeline import NerConfig, NerPipeline

NER = SAMPLES / "ner"
DIM = 8


@pytest.fixture
def vectors_file(tmp_path):
    """A word2vec text file: some words of the NER sample, one word it never has, and single characters."""
    words = ["北京", "公司", "中国", "从未出现过的词", "京", "公"]
    g = torch.Generator().manual_seed(0)
    table = torch.randn(len(words), DIM, generator=g)
    lines = [f"{len(words)} {DIM}"] + [w + " " + " ".join(f"{x:.6f}" for x in row) for w, row in zip(words, table)]
    path = tmp_path / "vectors.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, dict(zip(words, table))


def _pipeline(path, **extra) -> NerPipeline:
    cfg = NerConfig().updated(read_config_file(ROOT / "configs" / "tiny" / "ner.toml"))
    cfg = cfg.updated({"word_vectors": str(path)} | extra)
    examples, _ = NerPipeline.read(NER / "train.jsonl")
    return NerPipeline.create(cfg, examples)


def test_vectors_initialise_both_tables_and_join_the_vocabulary(vectors_file):
    path, vectors = vectors_file
    pipe = _pipeline(path)
    enc = pipe.config.encoder
    assert (enc.word_dim, enc.char_dim, enc.use_words) == (DIM, DIM, True)  # widths follow the vectors
    words, chars = pipe.assets["words"], pipe.assets["chars"]
    assert "从未出现过的词" in words  # a word never seen in training still gets its vector
    embed = pipe.model.encoder.embed
    for w in ("北京", "公司", "从未出现过的词"):
        assert torch.allclose(embed.words.weight[words.index(w)], vectors[w], atol=1e-5)
    for c in ("京", "公"):
        assert torch.allclose(embed.chars.weight[chars.index(c)], vectors[c], atol=1e-5)
    assert embed.char_proj is not None and embed.char_proj.in_features == DIM  # projected to hidden_size
    assert pipe.assets["word_vectors"]["words_with_vector"] == len(vectors)  # every vector word joined
    # The words the text is cut into now look up those rows.
    ids = pipe.encode("北京的公司").ids["word_ids"]
    assert ids[0] == ids[1] == words.index("北京") and ids[3] == words.index("公司")
    assert V.UNK not in (ids[0], ids[3])


def test_frozen_vectors_do_not_move_and_a_checkpoint_round_trips(vectors_file, tmp_path):
    path, _ = vectors_file
    pipe = _pipeline(path, freeze_word_vectors=True)
    table = pipe.model.encoder.embed.words.weight
    before = table.detach().clone()
    chars_before = pipe.model.encoder.embed.chars.weight.detach().clone()
    opt = torch.optim.Adam([p for p in pipe.model.parameters() if p.requires_grad], lr=1e-2)
    examples, _ = NerPipeline.read(NER / "train.jsonl")
    for _ in range(3):
        loss = pipe.loss(pipe.model, pipe.collate(examples[:8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not table.requires_grad and torch.equal(table, before)
    assert not torch.equal(pipe.model.encoder.embed.chars.weight, chars_before)  # the char table still trains
    saved = pipe.save(tmp_path / "ckpt")
    loaded = NerPipeline.load(saved, precision="fp32")  # as `pipe` computes, on any CPU
    records = [{"text": "北京的华为公司"}]
    assert list(loaded.predict_records(records)) == list(pipe.predict_records(records))


def test_cli_word_vectors_from_the_catalogue_need_a_pull(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPCLI_HOME", str(tmp_path / "home"))
    r = run_cli(
        "train",
        "ner",
        "--config",
        "configs/tiny/ner.toml",
        "--train",
        NER / "train.jsonl",
        "--output",
        tmp_path / "run",
        "--word-vectors",
        "word2vec-zhwiki",
        "--max-steps",
        "1",
    )
    assert r.returncode == 1 and r.stderr.strip().endswith("run: nlpcli models pull word2vec-zhwiki"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_trains_with_a_word2vec_file(vectors_file, tmp_path):
    path, _ = vectors_file
    out = tmp_path / "run"
    r = run_cli(
        "train",
        "ner",
        "--config",
        "configs/tiny/ner.toml",
        "--train",
        NER / "train.jsonl",
        "--dev",
        NER / "dev.jsonl",
        "--output",
        out,
        "--word-vectors",
        path,
        "--max-steps",
        "20",
        "--json",
        check=True,
    )
    assert json.loads(r.stdout)["steps"] == 20
    saved = json.loads((out / "best" / "config.json").read_text())["config"]["encoder"]
    assert saved["word_vectors"] == str(path) and saved["word_dim"] == DIM
