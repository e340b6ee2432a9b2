"""The benchmarks' train/test splits on the real data: no scored sentence is also a training sentence."""

from __future__ import annotations

import sys
from pathlib import Path

from util import ROOT, shared_data

sys.path.insert(0, str(ROOT / "benchmarks"))

import ner_benchmark

from nlpcli.tasks.ie.ner.data import read_bio, read_ner


def test_the_msra_split_trains_on_no_people_s_daily_dev_sentence(tmp_path: Path) -> None:
    """MSRA news holds most of People's Daily dev (2,143 of its 2,318 sentences, and near copies of others); the
    benchmark scores on that dev set, so none of them, nor any 20 characters of one, may be in the training file
    it writes, and the rest of MSRA must be."""
    shared_data("msra_ner_news", "dh_msra.zip")
    shared_data("people_daily_ner", "example.dev")
    train, test = ner_benchmark.split("msra", tmp_path)
    scored = {ex.text for ex in read_bio(test)}
    trained, _ = read_ner(train)
    assert not scored & {ex.text for ex in trained}
    stretches = {t[i : i + 20] for t in scored for i in range(len(t) - 19)}
    assert not any(ex.text[i : i + 20] in stretches for ex in trained for i in range(len(ex.text) - 19))
    msra = read_bio(ner_benchmark.DATA / "msra_ner_news" / "dh_msra.zip")
    assert 50_000 < len(trained) <= sum(ex.text not in scored for ex in msra) - 150
    assert sum(len(ex.spans) for ex in trained) > 70_000  # the entities came across with their sentences
