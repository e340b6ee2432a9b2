"""CPU levers for prediction with a trained NER model, measured side by side on one thread.

    python benchmarks/encoder_speed.py --model runs/bench-ner_cluener_m3e-small --scratch runs/bench-ner_cluener

On the CLUENER split of benchmarks/ner_benchmark.py (its 1,074 dev sentences): predict sentences/s and micro F1
for the model as trained (fp32), with dynamic int8 Linear layers (`--quantize`), under bf16 autocast, with
eager vs scaled-dot-product attention, and after torch.compile; and the machine's one-thread fp32 matmul peak
beside the training throughput the benchmark recorded (the share of the peak that training reached).
Writes benchmarks/results/encoder_speed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import Run
from ner_benchmark import split

import nlpcli
from nlpcli.tasks.base import Pipeline


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of an n x n fp32 matmul on this thread (the best of a few runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9)
    return best


def measure(pipe: Pipeline, dev: Path, texts: list[str], autocast: torch.dtype | None = None) -> dict[str, Any]:
    """Sentences/s of predicting `texts` (after a warm-up batch) and F1 on the dev file, as `evaluate` scores."""
    ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        pipe(texts[:64])
        t = time.perf_counter()
        pipe(texts, batch_size=64)
        seconds = time.perf_counter() - t
        f1 = nlpcli.evaluate(pipe, dev)["f1"]
    return {"sentences_per_s": round(len(texts) / seconds, 1), "micro_f1": round(f1, 4)}


def training_share(run: Path, peak: float, params: int) -> dict[str, Any]:
    """Training FLOP/s (about 6 x parameters x tokens/s, the matmuls of forward and backward) against the peak."""
    end = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if '"event": "end"' in x][-1]
    achieved = 6 * params * end["tokens_per_s"] / 1e9
    return {
        "train_tokens_per_s": round(end["tokens_per_s"], 1),
        "non_embedding_parameters": params,
        "train_gflops": round(achieved, 1),
        "share_of_peak": round(achieved / peak, 3),
    }


def non_embedding_parameters(pipe: Pipeline) -> int:
    return sum(p.numel() for name, p in pipe.model.named_parameters() if "embed" not in name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained CLUENER NER run with a pretrained encoder")
    ap.add_argument("--scratch", default=None, help="a trained CLUENER NER run with the DGCNN, for comparison")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes to compile)")
    args = ap.parse_args()
    bench = Run()
    torch.set_num_threads(1)
    peak = matmul_peak()
    out: dict[str, Any] = {"model": args.model, "matmul_peak_gflops_1_thread": round(peak, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        _, dev = split("cluener", Path(tmp))
        texts = [json.loads(x)["text"] for x in dev.read_text(encoding="utf-8").splitlines()]
        pipe = nlpcli.load(args.model, device="cpu").pipeline
        out["training"] = training_share(Path(args.model), peak, non_embedding_parameters(pipe))
        out["fp32"] = measure(pipe, dev, texts)
        out["bf16_autocast"] = measure(pipe, dev, texts, torch.bfloat16)
        hf = pipe.model.encoder.model
        if hasattr(hf, "set_attn_implementation"):
            for impl in ("eager", "sdpa"):
                hf.set_attn_implementation(impl)
                out[f"attention_{impl}"] = measure(pipe, dev, texts)
        out["int8_dynamic"] = measure(nlpcli.load(args.model, device="cpu", quantize=True).pipeline, dev, texts)
        if args.compile:
            compiled = nlpcli.load(args.model, device="cpu").pipeline
            compiled.model = torch.compile(compiled.model, dynamic=True)
            t = time.perf_counter()
            compiled(texts[:64])
            out["compile_seconds"] = round(time.perf_counter() - t, 1)
            out["torch_compile"] = measure(compiled, dev, texts)
        if args.scratch:
            scratch = nlpcli.load(args.scratch, device="cpu").pipeline
            out["scratch_dgcnn_fp32"] = measure(scratch, dev, texts)
            out["scratch_dgcnn_int8_dynamic"] = measure(
                nlpcli.load(args.scratch, device="cpu", quantize=True).pipeline, dev, texts
            )
    bench.finish("encoder_speed", out)


if __name__ == "__main__":
    main()
