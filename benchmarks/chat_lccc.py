"""Chat benchmark on LCCC-base valid: train with a time budget on a seeded split, then report held-out
response perplexity per character next to a character-bigram baseline on the same split and vocabulary,
distinct-1/2 of sampled replies, and generation tokens/s with and without the KV cache.

    python benchmarks/chat_lccc.py [--test 2000] [--out runs/bench_chat]   # trains from configs/chat-lccc.toml

Writes benchmarks/results/chat_lccc.json (or --result NAME). The split files go under --out (never into the repo).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from _common import DATA, ROOT, Run, preset

from nlpcli import api
from nlpcli.tasks.gen.chat.metrics import bigram_nll, bigram_pairs, perplexity
from nlpcli.tasks.gen.chat.pipeline import ChatPipeline

LCCC = DATA / "lccc" / "LCCC-base_valid.json"


def split(data: Path, n_test: int, seed: int, out: Path) -> tuple[Path, Path, int, int]:
    """A seeded held-out split of the LCCC file: (train file, test file, sizes)."""
    dialogues = json.loads(data.read_text(encoding="utf-8"))
    order = list(range(len(dialogues)))
    random.Random(seed).shuffle(order)
    test_idx = set(order[:n_test])
    train = [d for i, d in enumerate(dialogues) if i not in test_idx]
    test = [dialogues[i] for i in sorted(test_idx)]
    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = out / "train.json", out / "test.json"
    train_path.write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    test_path.write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")
    return train_path, test_path, len(train), len(test)


def bigram_baseline(pipe: ChatPipeline, train_path: Path, test_path: Path) -> dict:
    """Char-bigram perplexity per character of the same test responses, on the model's vocabulary."""
    train, _ = pipe.read(train_path)
    test, _ = pipe.read(test_path)
    tr = [pipe.encode_example(e) for e in pipe.windows(train, "all")]
    te_windows = pipe.windows(test, "responses")
    te = [pipe.encode_example(e) for e in te_windows]
    train_pairs = bigram_pairs([e.ids for e in tr], [e.scored for e in tr])
    test_pairs = bigram_pairs([e.ids for e in te], [e.scored for e in te])
    nll = bigram_nll(train_pairs, test_pairs, pipe.tokenizer.size)
    chars = sum(w.chars for w in te_windows)
    return {"ppl": perplexity(nll, chars), "scored_chars": chars, "train_pairs": len(train_pairs)}


def speed(pipe: ChatPipeline, histories: list[list[str]], use_cache: bool, batch_size: int) -> dict:
    pipe.reply_ids(histories[:2], use_cache=use_cache, batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    ids = pipe.reply_ids(histories, generator=pipe.seeded_generator(), use_cache=use_cache, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    tokens = sum(len(r) + 1 for r in ids)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--test", type=int, default=2000, help="dialogues held out for the test split")
    ap.add_argument("--speed-histories", type=int, default=128)
    ap.add_argument("--samples", type=int, default=500, help="test histories sampled for distinct-1/2")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_chat"))
    ap.add_argument("--result", default="chat_lccc", help="name of the result file in benchmarks/results/")
    args, extra = ap.parse_known_args()
    bench = Run()
    config = preset("chat-lccc.toml")
    torch.set_num_threads(1)
    out = Path(args.out)
    train_path, test_path, n_train, n_test = split(LCCC, args.test, args.seed, out)
    overrides = dict(zip([a.lstrip("-") for a in extra[::2]], extra[1::2])) | {"seed": args.seed}
    report = api.train("chat", train_path, out / "model", config=config, overwrite=True, **overrides)
    pipe = api.load(str(out / "model"), task="chat", device="cpu", eval_samples=args.samples).pipeline
    test, _ = pipe.read(test_path)
    with torch.no_grad():
        metrics = pipe.evaluate(test)
        histories = [d.turns[:-1] for d in test if len(d.turns) >= 2][: args.speed_histories]
        cached = speed(pipe, histories, True, 64)
        uncached = speed(pipe, histories, False, 64)
    baseline = bigram_baseline(pipe, train_path, test_path)
    bench.finish(
        args.result,
        {
            "preset": config,
            "extra_options": extra,
            "data": f"{LCCC.name}: {n_train} train dialogues (dev of {report['dev_examples']} carved from them), "
            f"{n_test} held out (seed {args.seed})",
            "train": {
                "steps": report["steps"],
                "stopped_by": report["stopped_by"],
                "elapsed_s": round(report["elapsed_s"], 1),
                "train_tokens_per_s": round(report["tokens_per_s"], 1),
                "best_dev_ppl": report["best_metric"],
                "parameters": sum(p.numel() for p in pipe.model.parameters()),
            },
            "config": report["config"],
            "test": {
                k: metrics[k]
                for k in ("ppl", "scored_chars", "distinct_1", "distinct_2", "replies_sampled", "mean_reply_chars")
            },
            "bigram_baseline": baseline,
            "decoding": pipe.config.inference.decoding().__dict__,
            "generation": {"kv_cache": cached, "no_cache": uncached, "histories": len(histories), "batch_size": 64},
        },
    )


if __name__ == "__main__":
    main()
