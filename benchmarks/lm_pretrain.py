"""Pretraining benchmark of the shared Chinese causal LM (issue 15), through `nlpcli train lm`.

    python benchmarks/lm_corpus.py                                  # the corpus, once (-> /tmp/nlpcli-lm-corpus)
    python benchmarks/lm_pretrain.py --minutes 600 --session-minutes 60      # starts runs/lm-pretrain
    python benchmarks/lm_pretrain.py --resume --session-minutes 60           # the next session goes on
    python benchmarks/lm_pretrain.py --resume                                # ... on to the end of its budget
    python benchmarks/lm_pretrain.py --resume --session-minutes 0            # measure only

--minutes is the whole pretraining's time budget (trainer.time_budget: the learning rate decays over it);
--session-minutes stops this invocation's training after that much wall time with SIGTERM, on which the trainer
saves last/ and exits 143, and `--resume` continues from there with the same step, data order and schedule.
Further `nlpcli train` options pass through (e.g. --num-layers 4, --batch-size 128).

After training it reports the session's training tokens/s, steps and wall time, the load average beside them,
held-out perplexity per character of the best checkpoint (the forward LM: its total NLL over the characters and
one end token per line, over the characters; on the corpus dev.txt, on lm_cgmh.py's held-out sentences and on
chat_lccc.py's test utterances), and the share of this machine's one-thread fp32 matmul speed that training
reaches (model FLOPs per token ~ 6 x matrix parameters + 6 x layers x context x width for attention).
Writes benchmarks/results/lm_pretrain.json; each session's figures are kept in RUN/pretrain_sessions.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, Run, preset

DEFAULT_CORPUS = Path("/tmp/nlpcli-lm-corpus")
HELD_OUT = {  # name -> file under the corpus dir (written by lm_corpus.py)
    "corpus_dev": "dev.txt",
    "lm_cgmh_held_out": "heldout/lm_cgmh.txt",
    "lccc_test_utterances": "heldout/lccc_test_utterances.txt",
}
SESSIONS = "pretrain_sessions.json"
SPEED_KEYS = (
    "command",
    "step",
    "wall_s",
    "train_tokens_per_s",
    "train_gflops",
    "matmul_gflops_1thread",
    "share_of_matmul_peak",
    "load_average_before",
    "load_average_after",
)


def cli_env() -> dict[str, str]:
    # One thread in the training process whatever the config says, as in this one (matmul_gflops).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def nlpcli_run(args: list[Any], session_s: float, started: Callable[[], bool]) -> tuple[int, float]:
    """Run `nlpcli ARGS`; after session_s seconds (0: no limit), once `started()` says training has taken a
    step (reading the corpus takes a while; a session must move the run on), send SIGTERM, on which a
    training saves last/ and exits 143. Returns the exit code and the wall time."""
    print("$ nlpcli " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "nlpcli.cli", *map(str, args)], cwd=ROOT, env=cli_env())
    try:
        while proc.poll() is None:
            if session_s and time.time() - t0 >= session_s and started():
                print(f"session time up ({session_s / 60:g} min): stopping the training (it saves last/)", flush=True)
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(1.0)
        proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # Ctrl-C reached the training too: it saves last/ and exits 130
        raise
    return proc.returncode, time.time() - t0


def scored_chars(path: Path) -> int:
    """Characters an LM scores in a file: each line as the lm reader cleans it, whitespace dropped (the
    tokenizer drops it too), whatever the token unit."""
    from nlpcli.tasks.gen.lm.data import read_sentences

    return sum(len("".join(s.text.split())) for s in read_sentences(path)[0])


def per_char(metrics: dict[str, Any], chars: int) -> dict[str, Any]:
    """Per-character perplexity from `evaluate lm`'s per-token figures: NLL per token (an end token per line
    or window included) x tokens = the total NLL, spread over the characters."""
    # evaluate's "sentences" are the model's windows: a line longer than train_window is several, each with an end.
    out: dict[str, Any] = {"chars": chars, "tokens": metrics["tokens"], "windows": metrics["sentences"]}
    for d in ("fwd", "bwd"):
        if f"nll_{d}" in metrics:
            nll = metrics[f"nll_{d}"] * metrics["tokens"] / chars
            out[f"nll_per_char_{d}"] = round(nll, 4)
            out[f"ppl_per_char_{d}"] = round(math.exp(nll), 2)
            out[f"ppl_per_token_{d}"] = round(metrics[f"ppl_{d}"], 2)
    out["unk_rate"] = round(metrics.get("unk_rate", 0.0), 5)
    return out


class SpellingModel:
    """An open-vocabulary charge for UNK tokens, so that a word LM's per-char perplexity compares fairly with a
    char LM's: a word LM that predicts UNK has not said which characters follow. Each UNK token is charged
    -log p_spell(its text), p_spell(w) = s (1 - s)^(n - 1) prod_c p(c): characters from an add-one unigram, a
    geometric length with the mean token length. Both estimated on the first `lines` lines of the training file.
    A proper distribution over strings (it also gives mass to in-vocabulary strings, so it overcharges a little:
    the word LM's figure is an upper bound)."""

    def __init__(self, train_file: Path, unit: str, lines: int = 20000) -> None:
        from collections import Counter
        from itertools import islice

        from nlpcli.tasks.gen.lm.data import Sentence
        from nlpcli.tasks.gen.lm.pipeline import tokenize

        with open(train_file, encoding="utf-8") as f:
            texts = [x.strip() for x in islice(f, lines) if x.strip()]
        tokens = [t for x in texts for t in tokenize(Sentence(x), unit)]
        self.counts = Counter(c for t in tokens for c in t)
        self.total = sum(self.counts.values()) + len(self.counts) + 1  # add-one, one bucket for unseen chars
        self.stop = len(tokens) / max(sum(map(len, tokens)), 1)  # 1 / mean token length

    def nll(self, token: str) -> float:
        chars = sum(-math.log((self.counts.get(c, 0) + 1) / self.total) for c in token)
        return chars - math.log(self.stop) - (len(token) - 1) * math.log(1 - self.stop) if self.stop < 1 else chars


def unk_charge(pipe: Any, path: Path, spell: SpellingModel) -> tuple[float, int]:
    """Total spelling NLL of the UNK tokens of a file, as the model tokenizes it, and how many there were."""
    from nlpcli.data import vocab as V
    from nlpcli.tasks.gen.lm.data import read_sentences
    from nlpcli.tasks.gen.lm.pipeline import tokenize

    total, n = 0.0, 0
    for ex in read_sentences(path)[0]:
        for t in tokenize(ex, pipe.config.model.unit):
            if pipe.vocab.id(t) == V.UNK:
                total += spell.nll(t)
                n += 1
    return total, n


def open_vocab(figures: dict[str, Any], charge: tuple[float, int]) -> dict[str, Any]:
    """per_char's forward figures with every UNK token charged its spelling (SpellingModel)."""
    nll = figures["nll_per_char_fwd"] + charge[0] / figures["chars"]
    return {
        "unk_tokens": charge[1],
        "nll_per_char_fwd_open_vocab": round(nll, 4),
        "ppl_per_char_fwd_open_vocab": round(math.exp(nll), 2),
    }


def matmul_gflops(n: int = 1024, repeats: int = 5, calls: int = 10) -> float:
    """fp32 n x n matmul speed on one thread, best of `repeats` timings of `calls` products (GFLOP/s)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * calls / best / 1e9


def model_flops(pipe: Any, context: float) -> dict[str, Any]:
    """Training FLOPs per token, Kaplan et al. 2020: 6 x the parameters that multiply (matrices, not lookup
    tables; a tied output layer counts its embedding once) + 6 x attention layers x context x width."""
    from torch import nn

    model, cfg = pipe.model, pipe.config.model
    vocab = len(getattr(pipe, "itos", None) or pipe.assets.get("tokens", []))
    params = list(model.parameters())  # shared (tied) parameters appear once
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matrices = sum(p.numel() for p in params if p.dim() >= 2 and id(p) not in tables)
    # No matrix with a row per token: the output layer multiplies by the (tied) token embedding.
    if not any(p.dim() == 2 and vocab in p.shape for p in params if id(p) not in tables):
        matrices += sum(
            m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab
        )
    attention = [
        m for m in model.modules() if isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")
    ]
    width = getattr(cfg, "hidden_size", 0)
    per_token = 6 * matrices + 6 * len(attention) * context * width
    return {
        "parameters": sum(p.numel() for p in params),
        "matrix_parameters": matrices,
        "attention_layers": len(attention),
        "context_for_attention": round(context, 1),
        "train_flops_per_token": round(per_token),
        "vocab": vocab,
    }


def session_log(run: Path, skip: int) -> list[dict[str, Any]]:
    """train_log.jsonl lines written after the first `skip` ones (this session's)."""
    path = run / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()[skip:] if x.strip()]


def file_sha256(path: Path) -> str:
    from nlpcli.models.archive import sha256_file

    return sha256_file(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="output dir of benchmarks/lm_corpus.py")
    ap.add_argument("--run", default=str(ROOT / "runs" / "lm-pretrain"), help="training output dir")
    ap.add_argument("--minutes", type=float, default=0, help="the whole pretraining's time budget (new run: needed)")
    ap.add_argument(
        "--session-minutes", type=float, default=None, help="stop this session's training after this; 0: measure only"
    )
    ap.add_argument("--resume", action="store_true", help="continue --run (its config, data order and schedule)")
    ap.add_argument("--overwrite", action="store_true", help="start --run anew even if it holds a model")
    ap.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/lm_pretrain.json")
    ap.add_argument("--result", default="lm_pretrain", help="name of the result file in benchmarks/results/")
    args, extra = ap.parse_known_args()
    corpus, run = Path(args.corpus), Path(args.run)
    train_file = corpus / "train.txt"
    missing = [p for p in [train_file, *(corpus / f for f in HELD_OUT.values())] if not p.is_file()]
    if missing:
        sys.exit(f"{missing[0]} is missing: run `python benchmarks/lm_corpus.py --work {corpus}` first")
    if not args.resume and not args.minutes:
        sys.exit("a new run needs --minutes (the whole pretraining's time budget)")
    bench = Run()
    config = preset("lm-pretrain.toml")
    corpus_sha = file_sha256(train_file)
    sessions_file = run / SESSIONS
    sessions = json.loads(sessions_file.read_text(encoding="utf-8")) if args.resume and sessions_file.is_file() else []
    if sessions and sessions[-1]["corpus_sha256"] != corpus_sha:
        sys.exit(f"{train_file} is not the corpus this run started on (sha256 differs): resuming would change the data")
    peak_before = matmul_gflops()
    session_min = args.session_minutes or 0.0  # 0 here: no limit but the run's own
    train_args: list[Any] = ["train", "lm", "--train", train_file, "--dev", corpus / "dev.txt", "--output", run]
    if args.resume:
        train_args += ["--resume"] + (["--time-budget", args.minutes] if args.minutes else [])
    else:
        train_args += ["--config", config, "--time-budget", args.minutes] + (["--overwrite"] if args.overwrite else [])
    train_args += extra
    session: dict[str, Any] = {"command": bench.command, "corpus_sha256": corpus_sha, "session_minutes": session_min}
    if args.session_minutes != 0:
        # This session's lines of train_log.jsonl: those after the ones there now (a new run starts a new log).
        log_path = run / "train_log.jsonl"
        log_lines = len(log_path.read_text(encoding="utf-8").splitlines()) if args.resume and log_path.is_file() else 0
        session["load_average_before"] = [round(x, 2) for x in os.getloadavg()]

        def started() -> bool:
            return any(r.get("event") == "step" for r in session_log(run, log_lines))

        code, wall = nlpcli_run(train_args, session_min * 60, started)
        session["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        if code not in (0, 143):
            sys.exit(f"training failed with exit code {code}")
        log = session_log(run, log_lines)
        steps = [r for r in log if r.get("event") == "step"]
        end = next((r for r in reversed(log) if r.get("event") == "end"), None)
        stopped = "session time (SIGTERM)" if code == 143 else "nothing trained (the run had reached its end)"
        session |= {
            "exit_code": code,
            "stopped_by": end["stop_reason"] if end else stopped,
            "wall_s": round(wall, 1),
            "first_step": steps[0]["step"] if steps else None,
            "step": (end or (steps[-1] if steps else {})).get("step"),
            # The trainer's own figure at the last progress line: tokens (an end token per line included) over
            # this session's training time so far, periodic evaluations and checkpoint saves included.
            "train_tokens_per_s": round(steps[-1]["tokens_per_s"], 1) if steps else None,
            # ... and at the end of the session, the final evaluation and save included.
            "tokens_per_s_with_final_eval": round(end["tokens_per_s"], 1) if end else None,
            "last_loss": round(steps[-1]["loss"], 4) if steps else None,
            "evals": [{k: r[k] for k in ("step", "nll", "ppl_fwd") if k in r} for r in log if r.get("event") == "eval"],
        }
    whole_log = session_log(run, 0)
    session["trained_s_total"] = round(max((r.get("elapsed_s", 0.0) for r in whole_log), default=0.0), 1)
    session["step_total"] = max((r.get("step", 0) for r in whole_log), default=0)
    peak = max(peak_before, matmul_gflops())
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    mean_line = manifest["train"]["chars"] / manifest["train"]["lines"]
    import nlpcli

    pipe = nlpcli.load(str(run), task="lm").pipeline  # best/ (last/ before the first evaluation), as `--model RUN`
    flops = model_flops(pipe, context=mean_line + 1)
    heldout = {}
    spell = SpellingModel(train_file, pipe.config.model.unit)
    for name, rel in HELD_OUT.items():
        path = corpus / rel
        figs = per_char(nlpcli.evaluate(pipe, path), scored_chars(path))
        heldout[name] = figs | open_vocab(figs, unk_charge(pipe, path, spell)) | {"file": str(path)}
    if session.get("train_tokens_per_s"):
        achieved = session["train_tokens_per_s"] * flops["train_flops_per_token"] / 1e9
        session["train_gflops"] = round(achieved, 2)
        session["share_of_matmul_peak"] = round(achieved / peak, 4)
    session["matmul_gflops_1thread"] = round(peak, 1)
    session["heldout"] = heldout
    sessions.append(session)
    sessions_file.write_text(json.dumps(sessions, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    best = run / "best" if (run / "best").is_dir() else run / "last"  # what `--model RUN` loads
    checkpoint = json.loads((best / "config.json").read_text(encoding="utf-8"))
    metrics_file = best / "metrics.json"  # last/ of a run stopped before its first evaluation has none
    best_metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    figures = {
        "preset": config,
        "extra_options": extra,
        "run": str(run),
        "corpus": {
            "dir": str(corpus),
            "train_sha256": corpus_sha,
            "train_lines": manifest["train"]["lines"],
            "train_chars": manifest["train"]["chars"],
        },
        "config": checkpoint.get("config", checkpoint),
        "evaluated_checkpoint": {"dir": str(best), "metrics": best_metrics},
        "model": flops,
        "matmul_fp32_1thread_gflops": {"before": round(peak_before, 1), "best": round(peak, 1), "size": 1024},
        "this_session": {k: v for k, v in session.items() if k != "heldout"},
        # Speed as the latest session that trained measured it (this one, unless it only measured).
        "training_speed": next(
            (
                {k: x.get(k) for k in SPEED_KEYS}
                for x in reversed(sessions)
                if x.get("train_tokens_per_s") and x.get("share_of_matmul_peak")
            ),
            None,
        ),
        "sessions": [
            {
                k: x.get(k)
                for k in ("command", "stopped_by", "step", "wall_s", "train_tokens_per_s", "load_average_before")
            }
            for x in sessions
        ],
        "trained_minutes_total": round(session.get("trained_s_total", 0.0) / 60, 2),
        "heldout_per_char": heldout,
    }
    if args.no_results:
        print(json.dumps(figures, ensure_ascii=False, indent=2))
    else:
        bench.finish(args.result, figures)


if __name__ == "__main__":
    main()
