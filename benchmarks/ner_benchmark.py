"""NER benchmark: train from a preset under its time budget, report dev F1 and speeds.

    python benchmarks/ner_benchmark.py cluener     # preset configs/ner-cluener.toml (20 minutes, one thread)
    python benchmarks/ner_benchmark.py cmeee       # preset configs/ner-cmeee.toml

cluener: CLUENER train.json split 90/10 with seed 42 (the official dev set is not in ../shared).
cmeee:   the first 3,000 texts of ../shared/data/cmeee/CMeEE_dev.json train, the other 1,000 test;
         it also reports how many nested gold entities were predicted exactly.
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


def split(name: str, work: Path) -> tuple[Path, Path]:
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


def predict_in_process(run: Path, texts: list[str]) -> float:
    """Sentences/s with the model loaded once, batches of 64, one thread (what a long batch job sees)."""
    import torch

    from nlpcli import api

    torch.set_num_threads(1)
    pipe = api.load_pipeline("ner", str(run), "cpu")
    pipe.predict_spans(texts[:64])  # warm-up
    start = time.perf_counter()
    pipe.predict_spans(texts, batch_size=64)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["cluener", "cmeee"])
    ap.add_argument("--run", default=None, help="output directory (default runs/bench-ner-DATASET)")
    ap.add_argument("--skip-train", action="store_true", help="measure an already trained --run")
    args, extra = ap.parse_known_args()
    bench = Run()
    run = Path(args.run or ROOT / "runs" / f"bench-ner-{args.dataset}")
    config = preset(f"ner-{args.dataset}.toml")
    with tempfile.TemporaryDirectory() as tmp:
        train, dev = split(args.dataset, Path(tmp))
        if args.skip_train:
            end = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()][-1]
            summary = {"steps": end["step"], "tokens_per_s": end["tokens_per_s"]}
        else:
            summary = json.loads(
                nlpcli(
                    "train",
                    "ner",
                    "--config",
                    config,
                    "--train",
                    train,
                    "--dev",
                    dev,
                    "--output",
                    run,
                    "--overwrite",
                    "--json",
                    *extra,
                )
            )
        metrics = json.loads(nlpcli("evaluate", "ner", "--model", run, "--data", dev, "--json"))
        texts = [{"text": json.loads(line)["text"]} for line in dev.read_text(encoding="utf-8").splitlines()]
        write_jsonl(Path(tmp) / "input.jsonl", texts)
        start = time.perf_counter()
        nlpcli(
            "predict",
            "ner",
            "--model",
            run,
            "--input",
            Path(tmp) / "input.jsonl",
            "--output",
            Path(tmp) / "pred.jsonl",
            "--batch-size",
            "64",
        )
        predict_s = time.perf_counter() - start
        batched = predict_in_process(run, [t["text"] for t in texts])
    bench.finish(
        f"ner_{args.dataset}",
        {
            "dataset": args.dataset,
            "preset": config,
            "extra_options": extra,
            "split": "CLUENER train.json shuffled (seed 42): 90% train, 10% dev"
            if args.dataset == "cluener"
            else "CMeEE_dev.json: first 3,000 texts train, the other 1,000 test",
            "steps": summary["steps"],
            "train_tokens_per_s": summary["tokens_per_s"],
            "dev_examples": len(texts),
            "micro_precision": metrics["precision"],
            "micro_recall": metrics["recall"],
            "micro_f1": metrics["f1"],
            "nested_gold": metrics["nested"]["gold"],
            "nested_correct": metrics["nested"]["correct"],
            # Whole command: process start, torch import and model load included.
            "predict_command_sentences_per_s": len(texts) / predict_s,
            "predict_batched_sentences_per_s": batched,
            "per_type_f1": {t: round(m["f1"], 4) for t, m in metrics["per_type"].items()},
        },
    )


if __name__ == "__main__":
    main()
