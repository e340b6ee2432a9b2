"""ONNX export: prediction speed of torch, onnxruntime and onnxruntime int8, and int8's F1 change.

    python benchmarks/onnx_speed.py                 # a DGCNN trained 1 minute on MSRA (configs/ner-msra.toml)
    python benchmarks/onnx_speed.py --minutes 20    # the preset's own budget

The DGCNN (configs/ner-msra.toml, word features) trains for --minutes on MSRA news (split as
ner_benchmark.py msra does); the tiny test model (configs/tiny/ner.toml, 30 steps on samples/ner) beside it.
Each is exported with `nlpcli export` and `nlpcli export --int8`; all three forms predict the first
--sentences sentences of People's Daily dev in process (one thread for torch and onnxruntime, batches of 64),
and the DGCNN's three are scored there (micro F1, PER/LOC/ORG). -> benchmarks/results/onnx_speed.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import ROOT, Run, nlpcli, preset, write_jsonl
from ner_benchmark import split

from nlpcli.tasks.ie.ner.data import NerExample
from nlpcli.tasks.ie.ner.pipeline import NerPipeline

FORMS = {"torch": [], "onnx": ["--output"], "onnx_int8": ["--int8", "--output"]}


def sentences_per_s(model: Path, texts: list[str]) -> float:
    """In process, model loaded once, batches of 64, one thread (torch's and onnxruntime's)."""
    import torch

    from nlpcli import api

    torch.set_num_threads(1)  # the onnxruntime session takes torch's thread count
    pipe = api.load(str(model), task="ner", device="cpu")
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
    out = {"torch": run}
    for name, flags in FORMS.items():
        if flags:
            out[name] = work / f"{run.name}-{name}"
            nlpcli("export", run, *flags, out[name])
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
        dgcnn, tiny = work / "dgcnn", work / "tiny"
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
            "--config",
            "configs/tiny/ner.toml",
            "--train",
            ROOT / "samples/ner/train.jsonl",
            "--output",
            tiny,
            "--max-steps",
            "30",
            "--json",
        )
        for model, scored in ((dgcnn, True), (tiny, False)):
            for form, path in forms(model, work).items():
                row = {"sentences_per_s": round(sentences_per_s(path, texts), 1)}
                if scored:
                    metrics = json.loads(
                        nlpcli("evaluate", "ner", "--model", path, "--data", work / "test.jsonl", "--json")
                    )
                    row["micro_f1"] = round(metrics["f1"], 4)
                figures[f"{model.name}_{form}"] = row
                print(model.name, form, row, flush=True)
    bench.finish("onnx_speed", {"test_sentences": len(texts), "dgcnn_minutes": args.minutes, **figures})


if __name__ == "__main__":
    main()
