"""CGMH benchmark: train lm on the shared news corpora, generate from held-out keywords, report the README numbers.

    python benchmarks/lm_cgmh.py --sets 100 --steps 100     # trains from configs/lm-cgmh.toml (15 minutes)

    python benchmarks/lm_cgmh.py --model DIR --proposal fast --judge JUDGE --result lm_cgmh_fast   # reuse a model

Held out: a seeded 1,000 sentences of the pooled corpora (never trained on). Keyword sets: 1-4 jieba words
(>= 2 characters) from 100 of them. Reports keyword coverage, forward-LM NLL per token of the outputs next to
that of the held-out sentences, distinct-2, sentences/s, and batched vs one-at-a-time candidate scoring.
Held-out perplexity is also given per character with every UNK token charged its spelling (lm_pretrain.py's
open-vocabulary figure), so word and char models compare. --judge names an lm checkpoint trained on a split
disjoint from the sampler's (lm_corpus.py --judge-split, or --judge-train FILE --exclude SAMPLER_TEXT for a text
file to train one on): the outputs' per-char NLL under it, beside that of the held-out sentences, is the fluency
check of issue 15. Writes benchmarks/results/lm_cgmh.json (or --result).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA, Run, preset
from lm_pretrain import SpellingModel, open_vocab, per_char, scored_chars, unk_charge

from nlpcli import api
from nlpcli.data import vocab as V
from nlpcli.tasks.gen.lm import cgmh
from nlpcli.tasks.gen.lm.data import Sentence, read_sentences
from nlpcli.tasks.gen.lm.pipeline import tokenize

CORPORA = [
    "msra_ner_news/dh_msra.zip",
    "nlpcc2017_news_headlines/test.full/test.char",
    "thucnews_titles/train.txt",
    "thucnews_titles/dev.txt",
]


def split_corpus(work: Path, held_out: int, seed: int) -> tuple[Path, list[str]]:
    """Pool the corpora, hold out a seeded sample; the training file goes to a scratch dir, not the repo."""
    sents = []
    for c in CORPORA:
        sents.extend(s.text for s in read_sentences(DATA / c)[0])
    sents = list(dict.fromkeys(sents))  # exact duplicates would leak held-out sentences into training
    rng = random.Random(seed)
    rng.shuffle(sents)
    work.mkdir(parents=True, exist_ok=True)
    train = work / "train.txt"
    train.write_text("\n".join(sents[held_out:]) + "\n", encoding="utf-8")
    return train, sents[:held_out]


def write_judge_text(out: Path, held: list[str], exclude: list[Path]) -> None:
    """Text for a fluency judge that neither the sampler nor the held-out set holds: the pooled corpora but MSRA
    news (which `models build gpt-zh` trains on), less the held-out sentences and the lines of `exclude`."""
    unseen = set(held)
    for path in exclude:
        unseen.update(path.read_text(encoding="utf-8").splitlines())
    sents = [s.text for c in CORPORA if not c.startswith("msra") for s in read_sentences(DATA / c)[0]]
    kept = [s for s in dict.fromkeys(sents) if s not in unseen]
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    print(f"{out}: {len(kept)} sentences ({len(sents) - len(kept)} held out, excluded or repeated)")


def keyword_sets(sentences: list[str], n: int, seed: int) -> tuple[list[list[str]], list[str]]:
    rng = random.Random(seed)
    sets, sources = [], []
    for s in sentences:
        words = list(dict.fromkeys(w for w in V.words(s) if len(w) >= 2 and any("\u4e00" <= c <= "\u9fff" for c in w)))
        if not words:
            continue
        k = min(len(words), rng.randint(1, 4))
        picked = sorted(rng.sample(range(len(words)), k))
        sets.append([words[i] for i in picked])
        sources.append(s)
        if len(sets) == n:
            break
    return sets, sources


def parse_pairs(text: str) -> dict[str, str]:
    """key=value,key=value (strings; the config converts them to its fields' types)."""
    return dict(kv.split("=", 1) for kv in text.split(",") if kv)


def distinct_2(pipe, texts: list[str]) -> float:
    tokens = (tokenize(Sentence(x), pipe.config.model.unit) for x in texts)
    grams = [tuple(t[i : i + 2]) for t in tokens for i in range(len(t) - 1)]
    return len(set(grams)) / max(len(grams), 1)


def chars(text: str) -> int:
    return len("".join(text.split()))


def sentence_nll(pipe, texts: list[str]) -> list[float]:
    """Each text's total forward-LM NLL (its tokens and the end token)."""
    return pipe.token_nll(texts, total=True)


def per_char_nll(pipe, texts: list[str]) -> float:
    """Forward-LM NLL per character (end token included in the total, whitespace not counted)."""
    return sum(sentence_nll(pipe, texts)) / max(sum(map(chars, texts)), 1)


def length_matched(out_nll: np.ndarray, out_len: np.ndarray, real_nll: np.ndarray, real_len: np.ndarray) -> dict:
    """Per-char NLL of outputs and of real held-out sentences of the same lengths. A sentence's first characters
    and its end cost far more than the rest, so per-char NLL falls with length (under the judge: 6.3 for
    held-out sentences of 8-11 chars, 4.0 from 40 on): short outputs measured against all held-out sentences
    (29 chars on average) would be held to a bar no real sentence of their length meets. By length band (bands
    with at least 10 real sentences), and over those bands with the real figure weighted by the outputs' chars
    in each band (direct standardisation). Arguments: each sentence's total NLL and its chars."""
    bands, covered, weighted = [], np.zeros(len(out_nll), dtype=bool), 0.0
    for lo, hi in ((1, 8), (8, 12), (12, 16), (16, 24), (24, 40), (40, 10_000)):
        o, r = (lo <= out_len) & (out_len < hi), (lo <= real_len) & (real_len < hi)
        band = {"chars": f"{lo}-{hi - 1}" if hi < 10_000 else f"{lo}+", "outputs": int(o.sum()), "real": int(r.sum())}
        if o.any() and r.any():
            band["nll_per_char_outputs"] = round(float(out_nll[o].sum() / out_len[o].sum()), 4)
            band["nll_per_char_real"] = round(float(real_nll[r].sum() / real_len[r].sum()), 4)
        if o.any() and r.sum() >= 10:
            covered |= o
            weighted += out_len[o].sum() * real_nll[r].sum() / real_len[r].sum()
        bands.append(band)
    n = out_len[covered].sum()
    return {
        "outputs_in_bands": int(covered.sum()),
        "nll_per_char_outputs": round(float(out_nll[covered].sum() / n), 4) if n else None,
        "nll_per_char_real_same_lengths": round(float(weighted / n), 4) if n else None,
        "by_length": bands,
    }


def judge_scores(judge_dir: str, outputs: list[str], sources: list[str], held: list[str]) -> dict:
    """Per-char NLL under an LM the sampler did not use (trained on a disjoint split): outputs vs real text."""
    judge = api.load(judge_dir, task="lm", device="cpu").pipeline
    # Each text scored once: totals and chars serve both the overall figures and the length bands.
    out_nll, out_len = np.array(sentence_nll(judge, outputs)), np.array([chars(t) for t in outputs])
    real_nll, real_len = np.array(sentence_nll(judge, held)), np.array([chars(t) for t in held])
    return {
        "model": judge_dir,
        "unit": judge.config.model.unit,
        "nll_per_char_outputs": round(float(out_nll.sum() / max(out_len.sum(), 1)), 4),
        "nll_per_char_source_sentences": round(per_char_nll(judge, sources), 4),
        "nll_per_char_held_out_sentences": round(float(real_nll.sum() / max(real_len.sum(), 1)), 4),
        "length_matched": length_matched(out_nll, out_len, real_nll, real_len),
    }


def unk_free_comparison(pipe, other_dir: str, held: list[str]) -> dict:
    """Per-char perplexity of this model and another on the held-out sentences in which neither has an UNK
    token: the same text, no model scoring a cheap UNK class (word and char models compare at face value)."""
    other = api.load(other_dir, task="lm", device="cpu").pipeline

    def known(p, text: str) -> bool:
        return all(p.vocab.id(t) != V.UNK for t in tokenize(Sentence(text), p.config.model.unit))

    texts = [t for t in held if known(pipe, t) and known(other, t)]
    out: dict = {"sentences": len(texts), "chars": sum(len("".join(t.split())) for t in texts), "other": other_dir}
    for name, p in (("this", pipe), ("other", other)):
        nll = per_char_nll(p, texts)
        out[name] = {
            "unit": p.config.model.unit,
            "nll_per_char": round(nll, 4),
            "ppl_per_char": round(math.exp(nll), 2),
        }
    return out


def scoring_speedup(pipe, sets: list[list[str]], steps: int, seed: int) -> dict:
    """The same chains, steps and seed, candidate sentences scored as one batch vs one at a time."""
    out = {}
    for mode in (True, False):
        st = cgmh.StepStats()
        list(pipe.iter_generate(sets, stats=st, batched=mode, num=1, steps=steps, seed=seed))
        out["batched" if mode else "one_at_a_time"] = {
            "scored_sentences": st.scored_sentences,
            "score_seconds": round(st.score_seconds, 3),
            "sentences_per_s": round(st.scored_sentences / st.score_seconds, 1),
        }
    out["speedup"] = round(out["batched"]["sentences_per_s"] / out["one_at_a_time"]["sentences_per_s"], 1)
    inf = pipe.config.inference
    out["setting"] = f"{len(sets)} keyword sets x {max(1, inf.chains)} chains, {steps} steps, top-K {inf.top_k}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/nlpcli_lm_bench")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--sets", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument(
        "--speed-sets",
        type=int,
        nargs="+",
        default=[8, 64],
        help="keyword sets run side by side in the scoring comparison (64: one full default batch)",
    )
    ap.add_argument("--speed-steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="", help="reuse a trained lm instead of training")
    ap.add_argument("--lm", default="", help="extra lm config as key=value,key=value (over the preset)")
    ap.add_argument("--proposal", default=None, help="sampler proposal: full | fast (default: the model's)")
    ap.add_argument("--top-k", type=int, default=None, help="sampler top-K (default: the model's)")
    ap.add_argument("--chains", type=int, default=None, help="chains per keyword set (default: the model's)")
    ap.add_argument("--batch-chains", type=int, default=None, help="chains side by side (default: the model's)")
    ap.add_argument("--sampler-seed", type=int, default=None, help="seed of the sampler only (default: --seed)")
    ap.add_argument("--quantize", action="store_true", help="dynamic int8 Linear layers for the sampler")
    ap.add_argument("--precision", default="fp32", help="the sampler's: fp32 | bf16 (autocast; CPUs with AMX)")
    ap.add_argument("--sampler", default="", help="other sampler settings as key=value,... (e.g. min_len=10)")
    ap.add_argument("--judge", default="", help="an lm checkpoint trained on a disjoint split: fluency judge")
    ap.add_argument("--compare-lm", default="", help="another lm checkpoint: per-char ppl on UNK-free sentences")
    ap.add_argument(
        "--judge-train",
        default="",
        help="write a judge's training text to this file and stop: the pooled corpora but MSRA news, less the "
        "held-out sentences and every line of --exclude (the sampler's own training text, e.g. gpt-zh's)",
    )
    ap.add_argument("--exclude", action="append", default=[], help="a text file whose lines the judge never sees")
    ap.add_argument("--result", default="lm_cgmh", help="name of the result file in benchmarks/results/")
    ap.add_argument("--no-speed-sets", action="store_true", help="skip the batched vs one-at-a-time comparison")
    args = ap.parse_args()
    bench = Run()
    config = preset("lm-cgmh.toml")
    torch.set_num_threads(1)
    work = Path(args.work)
    train_file, held = split_corpus(work, args.held_out, args.seed)
    if args.judge_train:
        write_judge_text(Path(args.judge_train), held, [Path(p) for p in args.exclude])
        return
    result: dict = {"preset": config, "held_out_sentences": len(held)}
    model = args.model
    if not model:
        model = str(work / "run")
        overrides = parse_pairs(args.lm)
        t0 = time.time()
        rep = api.train("lm", train_file, model, config=config, overwrite=True, **overrides)
        result["train"] = {
            "steps": rep["steps"],
            "seconds": round(time.time() - t0, 1),
            "train_sentences": rep["train_examples"],
            "tokens_per_s": round(rep["tokens_per_s"], 1),
            "config": rep["config"],
        }
    pipe = api.load(model, task="lm", device="cpu", quantize=args.quantize, precision=args.precision).pipeline
    given = (("proposal", args.proposal), ("top_k", args.top_k), ("chains", args.chains))
    given += (("batch_chains", args.batch_chains),)
    sampler = {k: v for k, v in given if v is not None} | parse_pairs(args.sampler)
    pipe.config.inference = pipe.config.inference.updated(sampler)
    held_lm = pipe.evaluate([Sentence(s) for s in held])
    result["held_out_lm"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in held_lm.items()}
    # Per character, with every UNK token charged its spelling (lm_pretrain.py's open-vocabulary figure):
    # comparable across word and char models.
    held_file = work / "held_out.txt"
    held_file.write_text("\n".join(held) + "\n", encoding="utf-8")
    figs = per_char(held_lm, scored_chars(held_file))
    spell = SpellingModel(train_file, pipe.config.model.unit)
    result["held_out_per_char"] = figs | open_vocab(figs, unk_charge(pipe, held_file, spell))
    if args.compare_lm:
        result["unk_free_comparison"] = unk_free_comparison(pipe, args.compare_lm, held)
    sets, sources = keyword_sets(held, args.sets, args.seed)
    t0 = time.time()
    sampler_seed = args.seed if args.sampler_seed is None else args.sampler_seed
    gens = list(pipe.iter_generate(sets, num=1, steps=args.steps, seed=sampler_seed))
    seconds = time.time() - t0
    outputs = [g.sentences[0]["text"] for g in gens]
    covered = sum(all(w in o for w in ws) for ws, o in zip(sets, outputs))
    out_nll = pipe.token_nll(outputs)
    src_nll = pipe.token_nll(sources)
    inf = pipe.config.inference
    result["generation"] = {
        "keyword_sets": len(sets),
        "words_per_set": {n: sum(len(s) == n for s in sets) for n in range(1, 5)},
        "steps": args.steps,
        "chains_per_set": max(1, inf.chains),
        "top_k": inf.top_k,
        "proposal": inf.proposal,
        "batch_chains": inf.batch_chains,
        "sampler_seed": sampler_seed,
        "quantize": args.quantize,
        "precision": args.precision,
        "min_len": inf.min_len,
        "keyword_coverage": covered / len(sets),
        "nll_outputs": round(sum(out_nll) / len(out_nll), 4),
        "nll_source_sentences": round(sum(src_nll) / len(src_nll), 4),
        "distinct_2_outputs": round(distinct_2(pipe, outputs), 4),
        "distinct_2_sources": round(distinct_2(pipe, sources), 4),
        "seconds": round(seconds, 1),
        "sentences_per_s": round(len(sets) / seconds, 3),
        "examples": [{"words": w, "output": o} for w, o in list(zip(sets, outputs))[:10]],
        "mean_output_chars": round(sum(map(chars, outputs)) / len(outputs), 2),
        "outputs": outputs,
    }
    if args.judge:
        result["judge"] = judge_scores(args.judge, outputs, sources, held)
    if not args.no_speed_sets:
        result["scoring"] = [scoring_speedup(pipe, sets[:n], args.speed_steps, args.seed) for n in args.speed_sets]
    bench.finish(args.result, result)


if __name__ == "__main__":
    main()
