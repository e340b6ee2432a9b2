"""ONNX export: prediction speed of torch, onnxruntime and onnxruntime int8, and int8's F1 change.

    python benchmarks/onnx_speed.py                 # the preset's model trained 1 minute (speed; F1 is low then)
    python benchmarks/onnx_speed.py --minutes 20    # the preset's own budget

The model of configs/ner-msra.toml (ner-msra's recipe; it was the DGCNN with word features before the BiLSTM
replaced it) trains for --minutes on MSRA news (split as
ner_benchmark.py msra does) and is scored on those People's Daily sentences (PER/LOC/ORG); a small DGCNN
(tests/test_ner_pipeline.py's, 150 steps on samples/ner) is scored on samples/ner/dev.jsonl. Each is exported
with `nlpcli export`, and that graph quantised with onnxruntime's quantize_dynamic (int8 weights: matrix
products only, and every op it can, convolutions included). Every form predicts the first --sentences
sentences of People's Daily dev in process (one thread for torch and onnxruntime, batches of 64).
-> benchmarks/results/onnx_speed.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import ROOT, Run, nlpcli, preset, write_jsonl
from ner_benchmark import split

from nlpcli.tasks.ie.ner.data import NerExample
from nlpcli.tasks.ie.ner.pipeline import NerPipeline

SAMPLES = ROOT / "samples" / "ner"
# The small model: tests/test_ner_pipeline.py's, 150 steps on the bundled samples (F1 there is its own).
SMALL = "--hidden-size 64 --dilations 1,2,4,1 --head-size 16 --word-dim 32 --warmup-steps 10 --batch-size 16 "
SMALL += "--lr 5e-3 --seed 1 --max-steps 150 --eval-every 50 --threads 1"
SMALL_ARGS = SMALL.split()


def sentences_per_s(model: Path, texts: list[str]) -> float:
    """In process, model loaded once, batches of 64, one thread (torch's and onnxruntime's)."""
    import torch

    from nlpcli import api

    torch.set_num_threads(1)  # the onnxruntime session takes torch's thread count
    pipe = api.load(str(model), task="ner", device="cpu").pipeline
    pipe.predict_spans(texts[:64])  # warm-up
    start = time.perf_counter()
    pipe.predict_spans(texts, batch_size=64)
    return len(texts) / (time.perf_counter() - start)


def _label(example: NerExample) -> dict[str, dict[str, list[list[int]]]]:
    """Gold spans in the CLUENER layout the ner reader takes: {type: {text: [[start, end], ...]}}."""
    label: dict[str, dict[str, list[list[int]]]] = {}
    for s, e, t in example.spans:
        label.setdefault(t, {}).setdefault(example.text[s : e + 1], []).append([s, e])
    return label


def forms(run: Path, work: Path) -> dict[str, Path]:
    """The checkpoint, its `nlpcli export`, and that graph quantised (matrix products only; all it can)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exported = work / f"{run.name}-onnx"
    nlpcli("export", run, "--output", exported)
    out = {"torch": run, "onnx": exported}
    for name, ops in (("onnx_int8_matmul", ["MatMul", "Gemm"]), ("onnx_int8_all", None)):
        out[name] = work / f"{run.name}-{name}"
        shutil.copytree(exported, out[name])
        only = {"op_types_to_quantize": ops} if ops else {}
        quantize_dynamic(exported / "model.onnx", out[name] / "model.onnx", weight_type=QuantType.QInt8, **only)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0, help="training budget of the DGCNN")
    ap.add_argument("--sentences", type=int, default=500, help="People's Daily dev sentences predicted")
    args = ap.parse_args()
    bench = Run()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, test = split("msra", work)
        examples = NerPipeline.read(test)[0][: args.sentences]
        write_jsonl(work / "test.jsonl", [{"text": e.text, "label": _label(e)} for e in examples])
        texts = [e.text for e in examples]
        dgcnn, small = work / "dgcnn", work / "small"
        nlpcli(
            "train",
            "ner",
            "--config",
            preset("ner-msra.toml"),
            "--train",
            train,
            "--output",
            dgcnn,
            "--time-budget",
            str(args.minutes),
            "--json",
        )
        nlpcli(
            "train",
            "ner",
            "--train",
            SAMPLES / "train.jsonl",
            "--dev",
            SAMPLES / "dev.jsonl",
            "--output",
            small,
            *SMALL_ARGS,
            "--json",
        )
        for model, scored_on in ((dgcnn, work / "test.jsonl"), (small, SAMPLES / "dev.jsonl")):
            for form, path in forms(model, work).items():
                metrics = json.loads(nlpcli("evaluate", "ner", "--model", path, "--data", scored_on, "--json"))
                row = {"sentences_per_s": round(sentences_per_s(path, texts), 1), "micro_f1": round(metrics["f1"], 4)}
                figures[f"{model.name}_{form}"] = row
                print(model.name, form, row, flush=True)
    bench.finish("onnx_speed", {"test_sentences": len(texts), "dgcnn_minutes": args.minutes, **figures})


if __name__ == "__main__":
    main()
