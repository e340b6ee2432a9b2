"""benchmarks/lm_corpus.py: normalisation, sentence splitting, filters, held-out removal, the dev split."""

from __future__ import annotations

import sys
from pathlib import Path

from util import ROOT, shared_data

sys.path.insert(0, str(ROOT / "benchmarks"))

import lm_corpus as C


def test_normalise_folds_alphanumerics_and_keeps_chinese_punctuation() -> None:
    assert C.normalise(" １９９８年\u3000ＡＢｃ，好！\u200b（图）\t x ") == "1998年 ABc，好！（图） x"
    assert C.unspace("生 完 小 孩 ， T . T") == "生完小孩，T.T"


def test_sentences_split_after_terminal_punctuation_with_closing_quotes() -> None:
    text = "他说：“好。”然后走了！真的吗？是的……嗯"
    assert C.sentences(text, 100) == ["他说：“好。”", "然后走了！", "真的吗？", "是的……", "嗯"]


def test_long_sentences_are_cut_at_clauses_and_lose_no_text() -> None:
    clause = "这是一个很长的分句，"
    text = clause * 9 + "最后。"
    pieces = C.sentences(text, 25)
    assert all(len(p) <= 25 for p in pieces)
    assert "".join(pieces) == text
    assert pieces[0] == clause * 2  # whole clauses, not a hard cut
    assert C.sentences("啊" * 60, 25) == ["啊" * 25, "啊" * 25, "啊" * 10]


def test_chinese_share_counts_a_latin_word_once() -> None:
    assert C.chinese_share("《光环5》Logo泄露 Kinect版几无悬念") > 0.5
    assert C.chinese_share("233333") == 0.0
    assert C.chinese_share(". Will not stay here from now on!") == 0.0
    assert C.chinese_share("？！") == 0.0


def test_held_out_exact_sentences_and_shared_substrings() -> None:
    held = C.HeldOut(ngram=8)
    held.add("test", ["第一句话在这里。第二句也在这里呢！", "好的谢谢"])
    assert held.hit(C.match_key("第二句也在这里呢！")) == "exact"  # a sentence of a held-out passage
    assert held.hit(C.match_key("好的谢谢")) == "exact"
    assert held.hit(C.match_key("前面多了字：第一句话在这里。")) == "ngram"
    assert held.hit(C.match_key("完全无关的另一句话。")) is None
    assert held.counts["test"] == {"texts": 2, "chars": 21}
    runs = C.HeldOut(ngram=8)
    runs.add("test", ["太好了！！！！！！！！！！"])
    assert runs.hit(C.match_key("不错！！！！！！！！！！")) is None  # a run of one character is no evidence


def _source(name: str, texts: list[str], passages: bool = False) -> C.Source:
    return C.Source(name, name, lambda: texts, passages=passages)


def test_build_filters_dedups_and_removes_held_out_then_splits_dev() -> None:
    held = C.HeldOut(ngram=10)
    held.add("bench", ["这是基准测试要打分的句子。"])
    srcs = [
        _source(
            "a",
            ["北京今天下雨了。", "短", "hello world, how are you", "北京今天下雨了。", "这是基准测试要打分的句子。"],
        ),
        _source("b", ["北京今天下雨了。上海今天晴天。", "我们知道这是基准测试要打分的句子。"], passages=True),
    ]
    kept, stats = C.build(srcs, held, C.Settings())
    assert kept == [("a", "北京今天下雨了。"), ("b", "上海今天晴天。")]
    a, b = stats["a"], stats["b"]
    assert (a.records, a.too_short, a.non_chinese, a.duplicates, a.held_out_exact) == (5, 1, 1, 1, 1)
    assert (b.records, b.pieces, b.duplicates, b.held_out_ngram, b.lines) == (2, 3, 1, 1, 1)
    assert a.chars == len("北京今天下雨了。")
    lines = [("s", f"第{i}行文字") for i in range(50)]
    train, dev = C.split_dev(lines, 10, seed=0)
    assert len(dev) == 10 and len(train) == 40 and not set(train) & set(dev)
    assert C.split_dev(lines, 10, seed=0) == (train, dev)


def test_judge_split_is_disjoint_and_keeps_the_lm_cgmh_sources_from_the_judge() -> None:
    news = C.LM_CGMH_SOURCES[0]
    train = [(news if i % 3 == 0 else "other", f"第{i}行文字") for i in range(600)]
    sampler, judge = C.judge_split(train)
    assert not set(sampler) & set(judge)
    assert not set(judge) & {line for src, line in train if src in C.LM_CGMH_SOURCES}
    assert set(sampler) | set(judge) == {line for src, line in train if src not in C.LM_CGMH_SOURCES} | set(sampler)
    assert 200 < len(sampler) < 400  # about half, by a hash of the line
    assert C.judge_split(list(reversed(train)))[0] == list(reversed(sampler))  # a line's side is its own


def test_write_lines_returns_the_files_sha256(tmp_path: Path) -> None:
    import hashlib

    sha = C.write_lines(tmp_path / "x.txt", ["一", "二"])
    assert (tmp_path / "x.txt").read_bytes() == "一\n二\n".encode()
    assert sha == hashlib.sha256("一\n二\n".encode()).hexdigest()


def test_the_benchmarks_held_out_sentences_stay_out_of_the_corpus(tmp_path: Path) -> None:
    """On the real data: lm_cgmh.py's held-out sentences and chat_lccc.py's test utterances (the splits made
    by those scripts' own functions) are in none of the kept lines of the corpora they come from."""
    shared_data("lccc", "LCCC-base_valid.json")
    shared_data("msra_ner_news", "dh_msra.zip")
    splits = C.make_splits(tmp_path)
    held = C.HeldOut(C.Settings.ngram)
    for name, texts, simplify in C.held_out_sets(splits):
        held.add(name, texts(), simplify)
    wanted = {"thucnews_titles", "nlpcc2017_headlines", "msra_ner_news", "lccc"}
    srcs = [s for s in C.sources(splits, tmp_path / "pkgs") if s.name in wanted]  # no registry download
    kept, stats = C.build(srcs, held, C.Settings())
    keys = {C.match_key(line) for _, line in kept}
    lm_held = [C.match_key(C.normalise(s)) for s in splits.lm_cgmh_held_out]
    assert len(lm_held) == C.LM_CGMH_HELD_OUT
    assert not keys & set(lm_held)
    import json

    test = json.loads(splits.lccc_test.read_text(encoding="utf-8"))
    assert len(test) == C.CHAT_TEST
    assert not keys & {C.match_key(C.unspace(u)) for d in test for u in d}
    assert sum(s.held_out_exact for s in stats.values()) >= len(lm_held) * 0.9  # those pools hold them
