"""lm + CGMH: readers, proposal construction, detailed balance, keyword safety, CLI round trip, bad input."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import warnings
from collections import Counter

import pytest
import torch
from util import SAMPLES, run_cli

from nlpcli import api
from nlpcli.errors import CheckpointError, ConfigError, DataError
from nlpcli.tasks.gen.lm import cgmh, settings
from nlpcli.tasks.gen.lm.data import Sentence, read_sentences
from nlpcli.tasks.gen.lm.model import SPECIALS, BiLM, reverse_rows, sentence_logprob
from nlpcli.tasks.gen.lm.pipeline import LmConfig, LmPipeline

TINY = {
    "embed_dim": 32,
    "hidden_size": 32,
    "epochs": 25,
    "batch_size": 8,
    "warmup_steps": 10,
    "min_count": 1,
    "threads": 1,
    "seed": 1,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine is shared: two spinning OpenMP threads on a loaded box are far slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    report = api.train("lm", SAMPLES / "lm" / "train.txt", out, **TINY)
    return out, report


# --- readers ----------------------------------------------------------------------------------


def test_reader_formats(tmp_path):
    conll = tmp_path / "c.txt"
    conll.write_text("北 B-LOC\n京 I-LOC\n好 O\n\n上 B-LOC\n海 I-LOC\n", encoding="utf-8")
    tsv = tmp_path / "t.txt"
    tsv.write_text("baby\t生 完 小 孩 ， 很 感 动\n体验2D巅峰 倚天屠龙记\t8\n", encoding="utf-8")
    jl = tmp_path / "j.jsonl"
    jl.write_text('{"text": "你好世界"}\n\n{"text": "再见"}\n', encoding="utf-8")
    assert [s.text for s in read_sentences(conll)[0]] == ["北京好", "上海"]
    assert [s.text for s in read_sentences(tsv)[0]] == ["生完小孩，很感动", "体验2D巅峰 倚天屠龙记"]
    got = read_sentences(jl)[0]
    assert [(s.text, s.line) for s in got] == [("你好世界", 1), ("再见", 3)]
    jl.write_text('{"text": "你好"}\n{"txt": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=":2:"):
        read_sentences(jl)
    sents, stats = read_sentences(jl, skip_bad=True)
    assert len(sents) == 1 and stats.skipped == 1


# --- a toy pipeline ------------------------------------------------------------------------------


ARCHS = ["lstm", "transformer"]


def toy_pipeline(words=("a", "b", "k"), seed=3, scale=2.0, arch="lstm") -> LmPipeline:
    torch.manual_seed(seed)
    cfg = LmConfig().updated(
        dict(arch=arch, embed_dim=8, hidden_size=8, heads=2, num_layers=1, dropout=0.0, gen_max_len=4, gen_min_len=1)
    )
    tokens = SPECIALS + list(words)
    model = BiLM(cfg.model, len(tokens))
    with torch.no_grad():  # a peaked, far from uniform distribution makes a wrong rule visible
        for p in model.parameters():
            p.mul_(scale)
    return LmPipeline(cfg, {"tokens": tokens}, model.eval())


def chains_of(rows: list[list[tuple[int, int]]], width: int = 6) -> cgmh.Chains:
    n = len(rows)
    tokens = torch.zeros(n, width, dtype=torch.long)
    kw = torch.full((n, width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor([t for t, _ in row])
        kw[i, : len(row)] = torch.tensor([k for _, k in row])
    return cgmh.Chains(tokens, kw, torch.tensor([len(r) for r in rows]), torch.zeros(n))


def test_proposal_rows():
    ch = chains_of([[(3, -1), (5, 0), (4, -1)]] * 3)
    action = torch.tensor([cgmh.INSERT, cgmh.REPLACE, cgmh.DELETE])
    pos = torch.tensor([1, 2, 0])
    cands = torch.tensor([[7, 8], [7, 8], [7, 8]])
    tokens, kw, length = cgmh.build_rows(ch, pos, action, cands)
    assert tokens[0, :, :4].tolist() == [[3, 7, 5, 4], [3, 8, 5, 4], [3, 5, 4, 0]]  # insert before x_1; extra = x
    assert kw[0, 0, :4].tolist() == [-1, -1, 0, -1]
    assert length[0].tolist() == [4, 4, 3]
    assert tokens[1, :, :3].tolist() == [[3, 5, 7], [3, 5, 8], [3, 5, 4]]  # replace x_2; extra = x
    assert tokens[2, :, :3].tolist() == [[7, 5, 4], [8, 5, 4], [5, 4, 0]]  # delete x_0: candidates, then x'
    assert length[2].tolist() == [3, 3, 2]


def test_moves_never_touch_keywords():
    # tokens: free, kw0 piece 1, kw0 piece 2, free, kw1
    ch = chains_of([[(3, -1), (4, 0), (5, 0), (3, -1), (4, 1)]] * 8, width=8)
    action = torch.tensor(
        [cgmh.REPLACE, cgmh.DELETE, cgmh.INSERT, cgmh.INSERT, cgmh.INSERT, cgmh.REPLACE, cgmh.DELETE, cgmh.INSERT]
    )
    pos = torch.tensor([1, 4, 2, 1, 5, 0, 3, 4])
    legal = cgmh._move_is_legal(ch, pos, action, max_len=8, width=8)
    # Keyword tokens cannot be replaced/deleted; no insert inside kw0; inserts at its edges and the end are fine.
    assert legal.tolist() == [False, False, False, True, True, True, True, True]
    full = chains_of([[(3, -1), (4, 0), (5, -1)]], width=3)
    assert not cgmh._move_is_legal(full, torch.tensor([1]), torch.tensor([cgmh.INSERT]), 3, 3).item()


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_scores_match_one_by_one(arch):
    pipe = toy_pipeline(arch=arch)
    tokens = torch.tensor([[3, 4, 5, 0], [5, 5, 0, 0], [4, 3, 5, 3]])
    lengths = torch.tensor([3, 2, 4])
    start = torch.tensor([0, 1, 2])
    batched = cgmh.score_rows(pipe, tokens, lengths, start, batched=True)
    single = cgmh.score_rows(pipe, tokens, lengths, start, batched=False)
    assert torch.allclose(batched, single, atol=1e-5)
    full = cgmh.score_rows(pipe, tokens, lengths, torch.zeros(3, dtype=torch.long))
    assert full[0] == batched[0] and (full[1:] < batched[1:]).all()  # more positions, more negative terms


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_shared_scores_match_one_by_one(arch, monkeypatch):
    """Candidates scored from the prefix state (LSTM) or KV cache (transformer) equal full scoring from m on,
    for every kind of move, including rows whose suffix is empty (a delete of the last token), two layers,
    and prefixes of different lengths in one bucket (the cache's padding masked)."""
    torch.manual_seed(0)
    cfg = LmConfig().updated(dict(arch=arch, embed_dim=16, hidden_size=16, num_layers=2, dropout=0.0, gen_max_len=8))
    pipe = LmPipeline(cfg, {"tokens": SPECIALS + list("abcdefg")}, BiLM(cfg.model, len(SPECIALS) + 7).eval())
    ch = chains_of([[(3, -1), (4, 0), (5, -1), (6, -1)], [(7, -1), (8, -1)], [(9, -1), (3, -1), (4, 1)]], width=8)
    action = torch.tensor([cgmh.DELETE, cgmh.INSERT, cgmh.REPLACE])
    pos = torch.tensor([3, 2, 0])
    cands = torch.tensor([[5, 6, 7], [3, 9, 4], [8, 8, 5]])
    tokens, _, length = cgmh.build_rows(ch, pos, action, cands)
    prefix = cgmh.read_prefix(pipe, ch, pos)
    shared = cgmh.candidate_logprob(pipe, prefix, tokens.flatten(0, 1), length.flatten(), pos, 4)
    single = cgmh.score_rows(pipe, tokens.flatten(0, 1), length.flatten(), pos.repeat_interleave(4), batched=False)
    assert torch.allclose(shared, single, atol=1e-5)
    assert length[0, 3] == 3 and pos[0] == 3  # the delete row of chain 0 scores only its end token
    continue_logprob = type(pipe.model.fwd).continue_logprob
    monkeypatch.setattr(
        type(pipe.model.fwd), "continue_logprob", lambda self, *a, **k: continue_logprob(self, *a, **k, buckets=1)
    )
    one_bucket = cgmh.candidate_logprob(pipe, prefix, tokens.flatten(0, 1), length.flatten(), pos, 4)
    assert torch.allclose(one_bucket, single, atol=1e-5)
    # The prefix's own log-probability (what the fast proposal subtracts from a sentence's) is the sentence's
    # score from the start less its score from m.
    own = cgmh.read_prefix(pipe, ch, pos, scored=True).own
    whole = cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(pos))
    assert own is not None and torch.allclose(own, whole - cgmh.score_rows(pipe, ch.tokens, ch.length, pos), atol=1e-5)
    # The proposal's forward half is the prefix distribution: the same as reading the rows in full.
    bos = torch.full((3, 1), 2)
    full = pipe.model.fwd.logits(pipe.model.fwd.hidden(torch.cat([bos, ch.tokens], 1)))[torch.arange(3), pos]
    assert torch.allclose(prefix.logp, torch.log_softmax(full, -1), atol=1e-5)


# --- detailed balance ----------------------------------------------------------------------------


def exact_target(pipe: LmPipeline, max_len: int, kw_id: int, free: list[int], min_len: int = 1) -> dict[tuple, float]:
    """pi(state) for every (sentence, keyword position) with one locked keyword token, by enumeration."""
    states, seqs = [], []
    for n in range(min_len, max_len + 1):
        for seq in itertools.product([*free, kw_id], repeat=n):
            for p in (i for i, t in enumerate(seq) if t == kw_id):
                states.append((seq, p))
                seqs.append(seq)
    width = max(len(s) for s in seqs)
    tokens = torch.tensor([list(s) + [0] * (width - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        logp = sentence_logprob(pipe.model.fwd, tokens, lengths)
    probs = torch.softmax(logp.double(), 0).tolist()
    return dict(zip(states, probs))


@pytest.mark.parametrize("arch", ARCHS)
def test_detailed_balance_matches_exact_target(arch):
    pipe = toy_pipeline(arch=arch)
    kw_id, free, max_len = 5, [3, 4], 4
    target = exact_target(pipe, max_len, kw_id, free)
    s = cgmh.SamplerSettings(top_k=3, max_sentence_len=max_len, min_len=1, proposal="full")  # K covers all: exact
    n_chains, burn, steps = 400, 60, 360
    ch = cgmh.Chains.start([[[kw_id]]] * n_chains, max_len, torch.device("cpu"))
    ch.logp = cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(ch.length))
    gen = torch.Generator().manual_seed(0)
    counts: Counter = Counter()
    for step in range(steps):
        cgmh.mh_step(pipe, ch, s, gen)
        if step >= burn:
            for t, k, n in zip(ch.tokens.tolist(), ch.kw.tolist(), ch.length.tolist()):
                counts[(tuple(t[:n]), k.index(0))] += 1
    total = sum(counts.values())
    assert set(counts) <= set(target)
    tv = 0.5 * sum(abs(counts.get(x, 0) / total - p) for x, p in target.items())
    assert tv < 0.05, tv
    # The incrementally tracked log-probabilities still equal a fresh scoring of the sentences.
    fresh = cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(ch.length))
    assert torch.allclose(fresh, ch.logp, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_detailed_balance_test_catches_a_wrong_rule(monkeypatch, arch):
    """The same check fails when the insert/delete proposal ratio is dropped (accept by pi alone)."""
    pipe = toy_pipeline(arch=arch)
    kw_id, free, max_len = 5, [3, 4], 4
    target = exact_target(pipe, max_len, kw_id, free)
    real = cgmh._decide

    def wrong(score, cands, ch, m, action, s, u, gen):
        choice, accept, delta = real(score, cands, ch, m, action, s, u, gen)
        naive = torch.log(u[:, 0]) < delta  # min(1, pi(x') / pi(x)): no g, no action probabilities
        moves = (action == cgmh.INSERT) | (action == cgmh.DELETE)
        return choice, torch.where(moves, naive, accept), delta

    monkeypatch.setattr(cgmh, "_decide", wrong)
    s = cgmh.SamplerSettings(top_k=3, max_sentence_len=max_len, min_len=1, proposal="full")
    ch = cgmh.Chains.start([[[kw_id]]] * 400, max_len, torch.device("cpu"))
    ch.logp = cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(ch.length))
    gen = torch.Generator().manual_seed(0)
    counts: Counter = Counter()
    for step in range(360):
        cgmh.mh_step(pipe, ch, s, gen)
        if step >= 60:
            for t, k, n in zip(ch.tokens.tolist(), ch.kw.tolist(), ch.length.tolist()):
                counts[(tuple(t[:n]), k.index(0))] += 1
    total = sum(counts.values())
    tv = 0.5 * sum(abs(counts.get(x, 0) / total - p) for x, p in target.items())
    assert tv > 0.1, tv


def stationary_tv(
    pipe: LmPipeline, proposal: str, n: int = 4000, steps: int = 40, burn: int = 10, min_len: int = 1
) -> float:
    """Chains started in exact draws from the target must stay there: the total variation distance between the
    target and the states visited over `steps` steps (after `burn`). Unlike a run from one start state this
    does not wait for the chain to mix, so it also checks a proposal that mixes slowly on a peaked toy LM."""
    target = exact_target(pipe, 4, 5, [3, 4], min_len)
    states = list(target)
    gen = torch.Generator().manual_seed(0)
    picks = torch.multinomial(torch.tensor([target[x] for x in states]), n, replacement=True, generator=gen)
    ch = cgmh.Chains.start([[[5]]] * n, 4, torch.device("cpu"))
    for c, i in enumerate(picks.tolist()):
        seq, at = states[i]
        ch.tokens[c, : len(seq)] = torch.tensor(seq)
        ch.kw[c] = -1
        ch.kw[c, at] = 0
        ch.length[c] = len(seq)
    ch.logp = cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(ch.length))
    s = cgmh.SamplerSettings(top_k=3, max_sentence_len=4, min_len=min_len, proposal=proposal)
    counts: Counter = Counter()
    for step in range(steps):
        cgmh.mh_step(pipe, ch, s, gen)
        if step >= burn:
            for t, k, length in zip(ch.tokens.tolist(), ch.kw.tolist(), ch.length.tolist()):
                counts[(tuple(t[:length]), k.index(0))] += 1
    # The tracked log-probabilities (the fast proposal reads the current sentence's from them) stay exact.
    assert torch.allclose(ch.logp, cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(ch.length)), atol=1e-4)
    assert set(counts) <= set(target)  # never a state outside the target's support (shorter than min_len)
    total = sum(counts.values())
    return 0.5 * sum(abs(counts.get(x, 0) / total - p) for x, p in target.items())


@pytest.mark.parametrize("proposal", settings.PROPOSALS)
@pytest.mark.parametrize("arch", ARCHS)
def test_the_target_is_stationary_under_both_proposals(arch, proposal):
    assert stationary_tv(toy_pipeline(arch=arch), proposal) < 0.04  # ~0.02 is the sampling noise here


@pytest.mark.parametrize("arch", ARCHS)
def test_stationarity_test_catches_a_fast_proposal_without_its_ratio(monkeypatch, arch):
    """The fast proposal draws words by the LMs' word probabilities, not by pi: dropping g's ratio from the
    acceptance (accept by pi alone) leaves the target, and the same check sees it (TV ~0.35-0.4)."""
    real = cgmh._draw_fast
    monkeypatch.setattr(cgmh, "_draw_fast", lambda *a: (real(*a)[0], torch.zeros(len(a[4]))))
    assert stationary_tv(toy_pipeline(arch=arch), "fast") > 0.15


def test_kept_transformer_cache_equals_a_fresh_reading():
    """The fast proposal keeps both GPTs' keys, values and states over each sentence across steps and only reads
    what a move changed: after many accepted moves of every kind, the kept cache equals reading every sentence
    afresh (at each sentence's real positions) and gives the same draws as re-reading each step."""
    torch.manual_seed(0)
    cfg = LmConfig().updated(dict(arch="transformer", hidden_size=16, num_layers=2, dropout=0.0, gen_max_len=8))
    pipe = LmPipeline(cfg, {"tokens": SPECIALS + list("abcdefg")}, BiLM(cfg.model, len(SPECIALS) + 7).eval())
    start = [[[3], [4, 5]], [[6]], [[7], [8]]] * 4
    s = cgmh.SamplerSettings(top_k=4, max_sentence_len=8, min_len=1, proposal="fast")
    runs = []
    for kept in (True, False):
        ch = cgmh.Chains.start(start, 8, torch.device("cpu"))
        ch.logp = cgmh.score_rows(pipe, ch.tokens, ch.length, torch.zeros_like(ch.length))
        gen = torch.Generator().manual_seed(1)
        moves = 0
        for _ in range(40):
            if not kept:
                ch.cache = None  # read again from scratch every step
            moves += int(cgmh.mh_step(pipe, ch, s, gen).sum())
        runs.append(ch)
    kept_ch, fresh_ch = runs
    assert moves > 100  # many accepted moves (of 480 chain-steps)
    assert torch.equal(kept_ch.tokens, fresh_ch.tokens) and torch.allclose(kept_ch.logp, fresh_ch.logp, atol=1e-5)
    assert kept_ch.cache is not None
    fresh = cgmh.ChainCache.read(pipe, kept_ch)
    real = torch.arange(9) <= kept_ch.length.unsqueeze(1)  # <s> and the sentence, both directions
    for got, want in ((kept_ch.cache.fwd, fresh.fwd), (kept_ch.cache.bwd, fresh.bwd)):
        assert torch.allclose(got.hidden[real], want.hidden[real], atol=1e-5)
        for (k, v), (k2, v2) in zip(got.past, want.past):
            at = real[:, None, :].expand(-1, k.shape[1], -1)
            assert torch.allclose(k[at], k2[at], atol=1e-5) and torch.allclose(v[at], v2[at], atol=1e-5)
    assert torch.allclose(kept_ch.cache.lp[real], fresh.lp[real], atol=1e-5)
    assert torch.allclose((kept_ch.cache.lp * real).sum(1), kept_ch.logp, atol=1e-4)
    # A step that does not keep the cache (the full proposal) drops it: the next fast step reads afresh.
    gen = torch.Generator().manual_seed(2)
    cgmh.mh_step(pipe, kept_ch, cgmh.SamplerSettings(top_k=4, max_sentence_len=8, min_len=1, proposal="full"), gen)
    assert kept_ch.cache is None
    cgmh.mh_step(pipe, kept_ch, s, gen)
    assert kept_ch.cache is not None
    real = torch.arange(9) <= kept_ch.length.unsqueeze(1)
    fresh = cgmh.ChainCache.read(pipe, kept_ch)
    assert torch.allclose(kept_ch.cache.fwd.hidden[real], fresh.fwd.hidden[real], atol=1e-5)
    assert torch.allclose((kept_ch.cache.lp * real).sum(1), kept_ch.logp, atol=1e-4)


@pytest.mark.parametrize("proposal", settings.PROPOSALS)
def test_min_len_floor_keeps_the_truncated_target_stationary(proposal):
    """hard_min_len: the target is the LM's distribution over sentences of at least min_len tokens; chains
    started in exact draws from it stay there, and none ever gets shorter."""
    assert stationary_tv(toy_pipeline(arch="transformer"), proposal, min_len=3) < 0.04


def test_min_len_floor_blocks_only_deletes_below_it():
    ch = chains_of([[(3, -1), (4, 0), (5, -1)], [(3, -1), (4, 0), (5, -1), (6, -1)]], width=8)
    delete, pos = torch.tensor([cgmh.DELETE] * 2), torch.tensor([0, 0])
    assert cgmh._move_is_legal(ch, pos, delete, 8, 8, min_len=3).tolist() == [False, True]
    assert cgmh._move_is_legal(ch, pos, delete, 8, 8, min_len=0).tolist() == [True, True]


def test_unknown_proposal_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown proposal"):
        cgmh.SamplerSettings(proposal="greedy").check()
    with pytest.raises(ConfigError, match="min_len 50 is above max_sentence_len 40"):
        cgmh.SamplerSettings(min_len=50).check()


# --- generation on a trained model --------------------------------------------------------------


def test_training_lowers_nll(trained):
    out, report = trained
    evals = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    nll = [e["nll"] for e in evals if e["event"] == "eval"]
    assert report["best_metric"] < nll[0] - 0.5
    pipe = api.load(str(out), task="lm", device="cpu").pipeline
    assert report["best_metric"] < math.log(len(pipe.vocab))  # better than a uniform guess


def test_keywords_always_present_over_seeds(trained):
    pipe = api.load(str(trained[0]), task="lm", device="cpu").pipeline
    sets = [["北京", "游客"], ["上海"], ["北京天安门", "学生"], ["经济", "科技", "公司", "发展"], ["龘北京"]]
    assert len(pipe.keyword_ids("北京天安门")) >= 2  # a keyword that is several tokens
    for seed in range(5):
        for words, gen in zip(sets, pipe.iter_generate(sets, num=3, steps=30, seed=seed)):
            assert gen.sentences
            for s in gen.sentences:
                assert all(w in s["text"] for w in words), (words, s)


def test_generation_is_deterministic_and_improves_on_the_start(trained):
    pipe = api.load(str(trained[0]), task="lm", device="cpu").pipeline
    sets = [["北京", "游客"], ["学校"]]
    a = list(pipe.iter_generate(sets, num=2, steps=60, seed=3))
    b = list(pipe.iter_generate(sets, num=2, steps=60, seed=3))
    assert [g.sentences for g in a] == [g.sentences for g in b]
    # The sampler finds sentences the LM likes better than the bare keywords it starts from.
    start_nll = pipe.token_nll(["北京游客", "学校"])
    best_nll = pipe.token_nll([a[0].sentences[0]["text"], a[1].sentences[0]["text"]])
    assert sum(best_nll) < sum(start_nll)
    # total=True: each text's whole NLL, its tokens and the end token (what per-char figures divide).
    texts = ["北京游客", "学校"]
    per_token = zip(start_nll, (len(pipe.encode(Sentence(t))) + 1 for t in texts))
    assert pipe.token_nll(texts, total=True) == pytest.approx([x * n for x, n in per_token], rel=1e-5)


def test_new_checkpoints_sample_fast_and_older_ones_keep_their_sampler(trained, tmp_path):
    """proposal = fast is the default for models trained now; a checkpoint saved before the setting existed
    keeps the sampler it was made with (full), so it generates what it generated."""
    out, _ = trained
    assert api.load(out, task="lm").pipeline.config.inference.proposal == "fast"
    old = tmp_path / "old"
    shutil.copytree(out / "best", old)
    meta = json.loads((old / "config.json").read_text(encoding="utf-8"))
    del meta["config"]["inference"]["proposal"], meta["config"]["inference"]["hard_min_len"]
    (old / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    assert api.load(old, task="lm").pipeline.config.inference.proposal == "full"
    assert not api.load(old, task="lm").pipeline.config.inference.hard_min_len  # min_len only ranks, as it did


def test_keyword_errors(trained):
    pipe = api.load(str(trained[0]), task="lm", device="cpu").pipeline
    with pytest.raises(ConfigError, match="no keywords"):
        pipe.encode_keywords([])
    with pytest.raises(ConfigError, match="empty"):
        pipe.encode_keywords(["北京", " "])
    assert pipe.encode_keywords(["龘靐"]) == [[1]]  # unknown to the model: one unknown token, still placed
    with pytest.raises(ConfigError, match="steps"):
        list(pipe.iter_generate([["北京"]], steps=0))
    # The one set no sentence can hold: keywords longer than the longest sentence.
    with pytest.raises(ConfigError, match=r"take \d+ tokens, more than the longest sentence"):
        pipe.check_keywords(["北京"] * 41)


# --- keywords the model does not know: placed as written, never dropped ----------------------------

UNKNOWN_SETS = [["浅析", "北京"], ["浅析"], ["经济", "浅析", "发展"], ["龘北京", "学生"]]


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    """A tiny char-level lm (a few steps: coverage does not depend on fluency)."""
    out = tmp_path_factory.mktemp("lm_char") / "run"
    api.train("lm", SAMPLES / "lm" / "train.txt", out, unit="char", max_steps=20, **TINY)
    return api.load(str(out), task="lm", device="cpu").pipeline


def _check_every_keyword_kept(pipe: LmPipeline) -> None:
    assert pipe.encode_keywords(["浅析"]) == [[1]]  # none of its characters is known: one unknown token
    for proposal in settings.PROPOSALS:
        results = list(pipe.iter_generate(UNKNOWN_SETS, num=2, steps=40, seed=0, proposal=proposal))
        assert [g.words for g in results] == UNKNOWN_SETS  # every set generated, none dropped
        for words, gen in zip(UNKNOWN_SETS, results):
            assert gen.sentences, words
            for s in gen.sentences:
                assert all(w in s["text"] for w in words), (proposal, words, s)
                assert "[UNK]" not in s["text"]  # the keyword itself, not the unknown token's name
                assert len(s["text"]) > len("".join(words)) or s["text"] == "".join(words)


def test_unknown_keywords_kept_word_level(trained):
    pipe = api.load(str(trained[0]), task="lm", device="cpu").pipeline
    assert pipe.config.model.unit == "word"
    _check_every_keyword_kept(pipe)


def test_unknown_keywords_kept_char_level(char_lm):
    assert char_lm.config.model.unit == "char"
    _check_every_keyword_kept(char_lm)


def test_generate_skip_bad_writes_an_error_record(trained, tmp_path, monkeypatch):
    """A set no sentence can hold stops the run (exit 1, nothing written), or with --skip-bad becomes an error
    record in its place while every other set, an unknown keyword included, is generated (exit 0)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    keywords = tmp_path / "kw.txt"
    keywords.write_text("浅析 北京\n\n" + "北京 " * 41 + "\n学生 学校\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    args = ("generate", "--model", trained[0], "--input", keywords, "--output", target, "--steps", "5")
    p = run_cli(*args)
    assert p.returncode == 1 and "kw.txt:3" in p.stderr and not target.exists()
    p = run_cli(*args, "--skip-bad")
    assert p.returncode == 0, p.stderr
    assert "1 keyword set(s) could not be served" in p.stderr and "line 3" in p.stderr
    lines = [json.loads(x) for x in target.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in lines] == [1, 3, 4]
    assert "error" in lines[1] and "sentences" not in lines[1] and "longest sentence" in lines[1]["error"]
    for r in (lines[0], lines[2]):
        assert r["sentences"] and all(all(w in s["text"] for w in r["words"]) for s in r["sentences"])


# --- the command line -----------------------------------------------------------------------------


def test_cli_train_evaluate_generate(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a loaded shared machine: one thread per process is faster
    out = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "epochs"]
    run_cli("train", "lm", "--train", SAMPLES / "lm" / "train.txt", "--output", out, "--epochs", "8", *args, check=True)
    ev = run_cli("evaluate", "lm", "--model", out, "--data", SAMPLES / "lm" / "train.txt", "--json", check=True)
    metrics = json.loads(ev.stdout)
    assert {"nll_fwd", "nll_bwd", "ppl_fwd", "ppl_bwd"} <= set(metrics) and metrics["ppl_fwd"] > 1
    table = run_cli("evaluate", "lm", "--model", out, "--data", SAMPLES / "lm" / "train.txt", check=True)
    assert "ppl_bwd" in table.stdout and f"{metrics['ppl_bwd']:.4f}" in table.stdout
    gen = run_cli(
        "generate", "--model", out, "--words", "北京", "游客", "--num", "2", "--steps", "20", "--json", check=True
    )
    result = json.loads(gen.stdout)
    assert result["words"] == ["北京", "游客"] and 1 <= len(result["sentences"]) <= 2
    assert all("北京" in s["text"] and "游客" in s["text"] for s in result["sentences"])

    target = tmp_path / "out.jsonl"
    run_cli(
        "generate",
        "--model",
        out,
        "--input",
        SAMPLES / "lm" / "keywords.txt",
        "--output",
        target,
        "--steps",
        "10",
        "--precision",
        "bf16",
        check=True,
    )
    lines = [json.loads(x) for x in target.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in lines] == [1, 2, 4, 5]  # the blank line 3 is skipped
    assert all(all(w in s["text"] for w in r["words"]) for r in lines for s in r["sentences"])

    # Bad input: clear errors, and the output file already there is left as it was.
    bad = tmp_path / "bad.txt"
    bad.write_text("北京 游客\n" + "北京 " * 41 + "\n", encoding="utf-8")
    before = target.read_bytes()
    p = run_cli("generate", "--model", out, "--input", bad, "--output", target, "--steps", "5")
    assert p.returncode == 1 and "bad.txt:2" in p.stderr and target.read_bytes() == before
    assert run_cli("generate", "--model", out).returncode == 2  # no words
    p = run_cli("generate", "--model", out, "--words", "北京", "--steps", "0")
    assert p.returncode == 1 and "steps" in p.stderr


# --- the GPT language model: packing, learning, checkpoints, --init -------------------------------

SUBJECTS, VERBS, OBJECTS = (
    ["我", "你", "他", "她", "我们"],
    ["喜欢吃", "不想吃", "每天吃"],
    ["苹果", "香蕉", "米饭", "面条"],
)
GPT_TINY = {
    "arch": "transformer",
    "unit": "char",
    "hidden_size": 32,
    "num_layers": 2,
    "heads": 2,
    "dropout": 0.0,
    "min_count": 1,
    "max_len": 24,
    "positions": 42,
    "gen_max_len": 20,
}


def grammar_corpus(tmp_path):
    """60 sentences of a tiny grammar; every 6th held out (all its words still appear in training)."""
    sentences = [s + v + o + "。" for s in SUBJECTS for v in VERBS for o in OBJECTS]
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("\n".join(x for i, x in enumerate(sentences) if i % 6) + "\n", encoding="utf-8")
    dev.write_text("\n".join(x for i, x in enumerate(sentences) if i % 6 == 0) + "\n", encoding="utf-8")
    return train, dev


def test_packed_windows_cover_the_stream_once():
    cfg = LmConfig().updated(GPT_TINY | {"pack": True, "max_len": 5})
    sents = [Sentence(t) for t in ["我喜欢", "你好", "他每天吃米饭"]]
    pipe = LmPipeline.create(cfg, sents)
    windows = pipe.training_examples(sents)
    stream = [2, *pipe.encode(sents[0]), 2, *pipe.encode(sents[1]), 2, *pipe.encode(sents[2]), 2]
    assert all(len(w) == 6 for w in windows)  # max_len inputs + the last target
    targets = [t for w in windows for t in w[1:].tolist() if t]
    assert targets == stream[1:]  # every token a target exactly once, only the last window padded
    batch = pipe.collate(windows)
    assert batch["_tokens"] == len(stream) - 1
    # The backward LM reads each window reversed: together, the reversed stream.
    back = reverse_rows(batch["windows"], batch["lengths"])
    assert back[-1, : batch["lengths"][-1]].tolist() == windows[-1][: batch["lengths"][-1]].flip(0).tolist()


def test_packed_gpt_learns_and_round_trips(tmp_path, monkeypatch):
    train, dev = grammar_corpus(tmp_path)
    out = tmp_path / "run"
    fields = GPT_TINY | {"pack": True, "batch_size": 4, "max_steps": 150, "epochs": 1000, "lr": 3e-3}
    fields |= {"warmup_steps": 10, "eval_every": 50, "threads": 1, "seed": 1}
    report = api.train("lm", train, out, dev=dev, **fields)
    pipe = api.load(str(out), task="lm", device="cpu").pipeline
    uniform = math.log(len(pipe.vocab))
    # Held-out sentences (never seen whole), scored one by one from <s>: far below a uniform guess.
    assert report["best_metric"] < 0.4 * uniform, (report["best_metric"], uniform)
    # The checkpoint round trip: the loaded model scores the dev set exactly as the best one did.
    again = pipe.evaluate(pipe.read(dev)[0])
    assert again["nll"] == pytest.approx(report["best_metric"], abs=1e-5)
    gen = pipe.generate(["苹果"], num=1, steps=40, seed=0)
    assert gen and "苹果" in gen[0]["text"]
    # `generate --quantize`: int8 Linear layers in the GPT; the sampler still keeps the keyword, and the
    # quantised model scores the dev set within a little of the float one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quick = api.load(str(out), task="lm", device="cpu", quantize=True).pipeline
    assert not [w for w in caught if "quantiz" in str(w.message)]  # torch's API notices stay off the user's screen
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quick.model.modules())
    assert quick.evaluate(pipe.read(dev)[0])["nll"] == pytest.approx(again["nll"], abs=0.05)
    assert "苹果" in quick.generate(["苹果"], num=1, steps=40, seed=0)[0]["text"]
    # `generate --precision bf16`: the sampler computes in bf16 (its kept cache holds bf16 keys) and still keeps
    # the keyword.
    half = api.load(str(out), task="lm", device="cpu", precision="bf16").pipeline
    kept: list[torch.dtype] = []
    read = cgmh.ChainCache.read

    def read_and_note(lm, ch):
        cache = read(lm, ch)
        kept.append(cache.fwd.past[0][0].dtype)
        return cache

    monkeypatch.setattr(cgmh.ChainCache, "read", read_and_note)
    assert "苹果" in half.generate(["苹果"], num=1, steps=40, seed=0)[0]["text"]
    assert kept == [torch.bfloat16]

    # --init: fine-tuning keeps the checkpoint's vocabulary and shape (whatever this run's say) and starts
    # from its weights.
    more = tmp_path / "more"
    report2 = api.train(
        "lm", dev, more, dev=dev, init=str(out), arch="lstm", hidden_size=8, max_steps=1, lr=1e-9, threads=1
    )
    tuned = api.load(str(more), task="lm", device="cpu").pipeline
    assert tuned.config.model.arch == "transformer" and tuned.config.model.hidden_size == 32
    assert tuned.vocab.itos == pipe.vocab.itos
    assert report2["best_metric"] == pytest.approx(again["nll"], abs=1e-3)


def test_old_transformer_checkpoint_is_refused_in_one_line(tmp_path):
    with pytest.raises(CheckpointError, match=r"older nlpcli.*retrain"):
        LmPipeline.adapt_state(LmConfig(), {"fwd.blocks.layers.0.linear1.weight": torch.zeros(1)}, tmp_path)
