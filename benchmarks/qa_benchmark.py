"""QA benchmark: train on the WebQA train split plus CMRC 2018 dev and DRCD dev under a time budget, then
report the held-out WebQA score, predict questions/s, and voting vs. best-single-passage on the DGCNN-format
samples.

    python benchmarks/qa_benchmark.py                     # preset configs/qa-webqa.toml -> results/qa.json
    python benchmarks/qa_benchmark.py --webqa-repeat 2    # -> results/qa_webqa2.json
    python benchmarks/qa_benchmark.py --webqa-only        # -> results/qa_webqa_only.json
    python benchmarks/qa_benchmark.py --encoder m3e-small # -> results/qa_m3e-small.json, runs/qa-bench_m3e-small
    python benchmarks/qa_benchmark.py --skip-train --run runs/qa-bench   # measure an existing run

Extra `nlpcli train` options may follow (e.g. --time-budget 10, --encoder e5-small --encoder-lr 5e-5); an
--encoder other than dgcnn names the result file and the default run directory, so runs side by side do not
overwrite each other.

--webqa-repeat N lists the WebQA train split N times (in-domain questions weigh N times as much).
Splits are written under --work (outside the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from pathlib import Path

import torch
from _common import DATA, Run, nlpcli, preset

from nlpcli import api

WEBQA = DATA / "webqa" / "me_test.ann.json"
EXTRA = [DATA / "cmrc2018" / "cmrc2018_dev.json", DATA / "drcd" / "DRCD_dev.json"]
MULTI = [DATA / "webqa" / "dgcnn_format_sample" / "WebQA.json", DATA / "sogouqa" / "SogouQA.json"]


def split_webqa(work: Path, n_dev: int, n_test: int, seed: int) -> dict[str, Path]:
    """Seeded question-level split of the annotated WebQA file into JSONL train/dev/test."""
    data = json.loads(WEBQA.read_text(encoding="utf-8"))
    ids = sorted(data)
    random.Random(seed).shuffle(ids)
    parts = {"test": ids[:n_test], "dev": ids[n_test : n_test + n_dev], "train": ids[n_test + n_dev :]}
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, keys in parts.items():
        paths[name] = work / f"webqa_{name}.jsonl"
        tmp = paths[name].with_suffix(f".{os.getpid()}.tmp")  # renamed into place: a run beside this one
        with open(tmp, "w", encoding="utf-8") as f:  # never reads a half-written split
            for k in keys:
                ev = list(data[k]["evidences"].values())
                rec = {
                    "id": k,
                    "question": data[k]["question"],
                    "passages": [{"passage": e["evidence"], "answer": e["answer"][0]} for e in ev],
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, paths[name])
    return paths


def encoder_option(extra: list[str]) -> str:
    """The --encoder (or --encoder.name) value among the extra train options; "dgcnn" when absent."""
    value = "dgcnn"
    for k, arg in enumerate(extra):
        for flag in ("--encoder", "--encoder.name"):
            if arg == flag and k + 1 < len(extra):
                value = extra[k + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
    return value


def predict_speed(run: str, path: Path, repeats: int = 1) -> dict:
    pipe = api.load(run, task="qa", device="cpu").pipeline
    lines = path.read_text(encoding="utf-8").splitlines()
    t = time.perf_counter()
    n = 0
    for _ in range(repeats):
        n += sum(1 for _ in api.predict(pipe, lines, str(path)))
    s = time.perf_counter() - t
    return {"questions": n, "seconds": round(s, 2), "questions_per_s": round(n / s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="training output (default runs/qa-bench, + _ENCODER for an encoder)")
    ap.add_argument("--work", default="/tmp/nlpcli-qa-bench")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--webqa-only", action="store_true", help="leave out CMRC 2018 dev and DRCD dev")
    ap.add_argument("--webqa-repeat", type=int, default=1, help="list the WebQA train split this many times")
    ap.add_argument("--result", default=None, help="result name (default qa[_ENCODER][_webqa...])")
    args, extra = ap.parse_known_args()
    encoder = encoder_option(extra)
    tag = "" if encoder == "dgcnn" else "_" + re.sub(r"[^\w.-]+", "-", Path(encoder).name or encoder)
    args.run = args.run or f"runs/qa-bench{tag}"
    bench = Run()
    splits = split_webqa(Path(args.work), 200, 300, args.seed)
    train_files = [splits["train"]] * args.webqa_repeat + ([] if args.webqa_only else EXTRA)
    config = preset("qa-webqa.toml")
    torch.set_num_threads(1)
    results: dict = {
        "preset": config,
        "encoder": encoder,
        "extra_options": extra,
        "webqa_split": f"seed {args.seed}: 300 test, 200 dev, 2000 train questions of {WEBQA.name}",
    }
    if not args.skip_train:
        t = time.time()
        nlpcli(
            "train",
            "qa",
            "--config",
            config,
            "--train",
            *train_files,
            "--dev",
            splits["dev"],
            "--output",
            args.run,
            "--overwrite",
            *extra,
            capture=False,
        )
        results["train_wall_s"] = round(time.time() - t, 1)
    log = [json.loads(x) for x in (Path(args.run) / "train_log.jsonl").read_text().splitlines()]
    end = [r for r in log if r.get("event") == "end"][-1]
    keys = ("step", "stop_reason", "elapsed_s", "best_metric", "steps_per_s", "tokens_per_s")  # evaluations count
    results["train"] = {k: end[k] for k in keys}
    with torch.no_grad():
        results["webqa_test"] = api.evaluate(args.run, splits["test"], task="qa", device="cpu")
        results["predict_speed_webqa_test"] = predict_speed(args.run, splits["test"])
        # DRCD test: never trained on (the train mix has DRCD dev), and not in m3e-small's contrastive data.
        drcd = api.evaluate(args.run, DATA / "drcd" / "DRCD_test.json", task="qa", device="cpu")
        results["drcd_test"] = {k: drcd[k] for k in ("score", "em", "cmrc_f1", "examples") if k in drcd}
        voting = {}
        for path in MULTI:
            for mode in ("vote", "max"):
                pipe = api.load(args.run, task="qa", device="cpu", voting=mode).pipeline
                examples, _ = pipe.read(path, None, skip_bad=True)  # the last list item is truncated
                voting[f"{path.parent.name}/{path.name} {mode}"] = pipe.evaluate(examples)
        results["voting"] = voting
    name = args.result or (
        "qa"
        + tag
        + ("_webqa_only" if args.webqa_only else "")
        + (f"_webqa{args.webqa_repeat}" if args.webqa_repeat > 1 else "")
    )
    bench.finish(name, results)


if __name__ == "__main__":
    main()
