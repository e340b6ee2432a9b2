"""Benchmark of `nlpcli train ie` on the SKE 2019 subset: dev F1, training throughput, predict speed,
and F1 against training-set size.

    python benchmarks/ie_ske.py --runs 0.25:7,0.5:7,1.0:7,1.0:20
    python benchmarks/ie_ske.py --encoder m3e-small --runs 1.0:20 --encoder-lr 1e-4 --batch-size 16

A seeded 10% of train_data.json (260 sentences) is carved out once as the dev set; each run FRACTION:MINUTES
trains on the first FRACTION of the rest (seeded order) with the preset for MINUTES, keeps the best checkpoint
by dev F1, and is scored with `nlpcli evaluate`'s code path. `--encoder NAME_OR_PATH` trains over that encoder
(default: the from-scratch DGCNN); any further `--option VALUE` is a train option. Writes
benchmarks/results/ie_ske.json for the DGCNN and ie_ske_ENCODER.json for another encoder (`--result NAME`
names the file otherwise). Temporary split files go to a temp dir, never into the repo.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import DATA as SHARED
from _common import Run, preset

from nlpcli import api
from nlpcli.callbacks import TrainCallbacks, TrainResult

DATA = SHARED / "ske2019_subset"


def split(train_file: Path, out: Path, fractions: list[float], seed: int) -> tuple[Path, dict[float, Path]]:
    lines = [x for x in train_file.read_text(encoding="utf-8").splitlines() if x.strip()]
    random.Random(seed).shuffle(lines)
    n_dev = len(lines) // 10
    dev, rest = lines[:n_dev], lines[n_dev:]
    (out / "dev.jsonl").write_text("\n".join(dev) + "\n", encoding="utf-8")
    files = {}
    for f in fractions:
        p = out / f"train_{int(f * 100)}.jsonl"
        p.write_text("\n".join(rest[: max(1, round(len(rest) * f))]) + "\n", encoding="utf-8")
        files[f] = p
    return out / "dev.jsonl", files


class StepClock(TrainCallbacks):
    """Time spent in training steps alone: the intervals between steps, less those holding an evaluation or a
    checkpoint save (the trainer's own steps/s counts those too)."""

    def __init__(self, save_every: int) -> None:
        self.save_every = save_every
        self.last = 0.0
        self.skip = True  # the first interval holds the set-up
        self.seconds = 0.0
        self.steps = 0

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        now = time.perf_counter()
        if not self.skip:
            self.seconds += now - self.last
            self.steps += 1
        self.last = now
        self.skip = bool(self.save_every) and step % self.save_every == 0

    def on_eval(self, step: int, metrics: dict[str, Any], is_best: bool) -> None:
        self.skip = True

    def on_end(self, result: TrainResult) -> None: ...


def encoder_label(name: str) -> str:
    """A file-name part for an encoder: a catalogue or hub name, or a local directory's name."""
    label = Path(name).name if Path(name).exists() else name.replace("/", "_")
    return re.sub(r"[^\w.+-]", "_", label)


def train_options(extra: list[str]) -> dict[str, str]:
    """`--name VALUE` / `--name=VALUE` pairs left over by argparse, as train overrides."""
    out, items = {}, list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--"):
            sys.exit(f"unexpected argument {item!r} (train options are --name VALUE)")
        name, eq, value = item[2:].partition("=")
        if not eq:
            if not items:
                sys.exit(f"{item} needs a value")
            value = items.pop(0)
        out[name] = value
    return out


def predict_speed(model_dir: Path, texts_file: Path, threads: int) -> dict[str, float]:
    pipe = api.load(str(model_dir), task="ie", device="cpu").pipeline
    lines = texts_file.read_text(encoding="utf-8").splitlines()
    records = [{"text": json.loads(x)["text"]} for x in lines if x.strip()]
    list(pipe.predict_records(records[:8]))  # warm-up
    t0 = time.perf_counter()
    found = list(pipe.predict_records(records))
    dt = time.perf_counter() - t0
    return {
        "sentences": len(records),
        "seconds": round(dt, 2),
        "sentences_per_s": round(len(records) / dt, 1),
        "triples_predicted": sum(len(r["spo_list"]) for r in found),
        "threads": threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="0.25:7,0.5:7,1.0:7,1.0:20", help="FRACTION:MINUTES,... (training share, budget)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default=None, help="directory for runs (default: a temp dir)")
    ap.add_argument("--encoder", default="dgcnn", help="dgcnn (default), a catalogue name, a local or hub model")
    ap.add_argument("--result", default=None, help="result name (default ie_ske, or ie_ske_ENCODER)")
    args, extra = ap.parse_known_args()
    options = train_options(extra)
    result = args.result or ("ie_ske" if args.encoder == "dgcnn" else f"ie_ske_{encoder_label(args.encoder)}")
    if not (DATA / "train_data.json").exists():
        sys.exit(f"{DATA} is not available")
    bench = Run()
    config = preset("ie-ske.toml")
    torch.set_num_threads(1)
    plan = [(float(f), float(m)) for f, m in (r.split(":") for r in args.runs.split(","))]
    fractions = sorted({f for f, _ in plan})
    work = Path(args.work or tempfile.mkdtemp(prefix="ie_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    dev_file, train_files = split(DATA / "train_data.json", work, fractions, args.seed)
    runs = []
    for k, (f, budget) in enumerate(plan):
        out = work / f"run_{k}_{int(f * 100)}"
        overrides = options | {
            "encoder": args.encoder,
            "schema": str(DATA / "all_50_schemas"),
            "time_budget": budget,
            "seed": args.seed,
        }
        clock = StepClock(api.make_config("ie", config, overrides).trainer.save_every)
        report = api.train("ie", train_files[f], out, dev_file, config, overwrite=True, callbacks=clock, **overrides)
        metrics = api.evaluate(out, dev_file, task="ie", device="cpu")
        run = {
            "fraction": f,
            "train_sentences": report["train_examples"],
            "dev_sentences": report["dev_examples"],
            "budget_min": budget,
            "steps": report["steps"],
            "epochs_done": report["epochs_done"],
            "stopped_by": report["stopped_by"],
            "train_seconds": round(report["elapsed_s"], 1),
            "train_chars_per_s" if args.encoder == "dgcnn" else "train_tokens_per_s": round(report["tokens_per_s"], 1),
            "train_sentences_per_s": round(report["steps_per_s"] * report["config"]["trainer"]["batch_size"], 1),
            # steps alone (no evaluation or checkpoint time): batch size x steps / seconds
            "train_step_sentences_per_s": round(
                clock.steps * report["config"]["trainer"]["batch_size"] / max(clock.seconds, 1e-9), 1
            ),
            "dev_precision": round(metrics["precision"], 4),
            "dev_recall": round(metrics["recall"], 4),
            "dev_f1": round(metrics["f1"], 4),
            "dev_gold_triples": metrics["gold"],
        }
        if k == len(plan) - 1:
            run["predict_dev"] = predict_speed(out, dev_file, 1)
            run["predict_test1"] = predict_speed(out, DATA / "test1_data_postag.json", 1)
        runs.append(run)
        print(json.dumps(run, ensure_ascii=False), flush=True)
    figures = {
        "preset": config,
        "encoder": args.encoder,
        "train_options": options,
        "dev": f"seeded 10% of train_data.json (seed {args.seed})",
        "runs": runs,
    }
    bench.finish(result, figures)


if __name__ == "__main__":
    main()
