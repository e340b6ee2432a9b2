"""benchmarks/lm_pretrain.py: per-character perplexity, model FLOPs, and a run that resumes across sessions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from util import ROOT, SAMPLES, cli_env

sys.path.insert(0, str(ROOT / "benchmarks"))

import lm_pretrain as P


def test_per_char_spreads_the_total_nll_over_the_characters() -> None:
    metrics = {"nll_fwd": 2.0, "ppl_fwd": math.exp(2.0), "tokens": 12, "sentences": 2, "unk_rate": 0.0}
    out = P.per_char(metrics, chars=10)  # 10 chars + 2 end tokens: 24 nats in all
    assert out["nll_per_char_fwd"] == 2.4
    assert out["ppl_per_char_fwd"] == round(math.exp(2.4), 2)
    assert out["windows"] == 2 and "nll_per_char_bwd" not in out


def test_scored_chars_drop_whitespace_and_char_spacing(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("北京 欢迎你\n生 完 小 孩 了\n\n", encoding="utf-8")
    assert P.scored_chars(path) == 5 + 5


def test_open_vocabulary_charge_spells_out_unknown_tokens(tmp_path: Path) -> None:
    """A word LM's UNK tokens are charged their characters under the unigram spelling model; known tokens cost
    nothing extra, and a rarer spelling costs more."""
    from nlpcli.data import vocab as V

    train = tmp_path / "train.txt"
    train.write_text("北京欢迎你\n北京很大\n你好\n", encoding="utf-8")
    spell = P.SpellingModel(train, "char")
    assert spell.nll("京") < spell.nll("猫")  # seen twice vs never
    assert spell.nll("北京") > spell.nll("北")  # longer strings cost more

    class Pipe:  # the two things unk_charge reads from an lm pipeline
        class config:
            class model:
                unit = "char"

        vocab = V.Vocab(["[PAD]", "[UNK]", "<s>", *"北京欢迎你"])

    held = tmp_path / "held.txt"
    held.write_text("北京欢迎你\n北京猫\n", encoding="utf-8")
    total, n = P.unk_charge(Pipe(), held, spell)
    assert n == 1 and math.isclose(total, spell.nll("猫"))
    figs = {"nll_per_char_fwd": 2.0, "chars": 8}
    out = P.open_vocab(figs, (total, n))
    assert out["unk_tokens"] == 1 and math.isclose(out["nll_per_char_fwd_open_vocab"], round(2.0 + total / 8, 4))


def test_matmul_speed_is_positive() -> None:
    assert P.matmul_gflops(n=64, repeats=1, calls=2) > 0


def _corpus(root: Path) -> Path:
    lines = [ln for ln in (SAMPLES / "lm" / "train.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    (root / "heldout").mkdir(parents=True)
    (root / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("dev.txt", "heldout/lm_cgmh.txt", "heldout/lccc_test_utterances.txt"):
        (root / name).write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    chars = sum(len(ln) for ln in lines)
    (root / "manifest.json").write_text(json.dumps({"train": {"lines": len(lines), "chars": chars}}))
    return root


def _bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "benchmarks/lm_pretrain.py", *args, "--no-results"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_a_session_stopped_by_its_time_resumes_in_the_next_and_reports(tmp_path: Path) -> None:
    corpus, run = _corpus(tmp_path / "corpus"), tmp_path / "run"
    tiny = ["--num-layers", "1", "--embed-dim", "16", "--hidden-size", "16", "--heads", "2", "--min-count", "1"]
    # A session of 0.01 minutes: SIGTERM once the first step is logged; the trainer saves last/ and exits 143.
    first = ["--minutes", "5", "--session-minutes", "0.01", "--eval-every", "2", "--log-every", "1"]
    _bench("--corpus", str(corpus), "--run", str(run), *first, *tiny)
    sessions = json.loads((run / P.SESSIONS).read_text(encoding="utf-8"))
    assert sessions[0]["exit_code"] == 143 and sessions[0]["stopped_by"] == "session time (SIGTERM)"
    reached = sessions[0]["step_total"]
    _bench("--corpus", str(corpus), "--run", str(run), "--resume", "--max-steps", str(reached + 4), "--log-every", "1")
    sessions = json.loads((run / P.SESSIONS).read_text(encoding="utf-8"))
    assert len(sessions) == 2
    last = sessions[1]
    assert last["stopped_by"] == "max_steps" and last["step"] == reached + 4
    # went on from where the first session stopped (its last/ may hold one step more than its last log line)
    assert reached < last["first_step"] <= reached + 2
    assert last["train_tokens_per_s"] > 0 and 0 < last["share_of_matmul_peak"] < 1
    for figures in last["heldout"].values():
        assert figures["chars"] > 0 and figures["nll_per_char_fwd"] > 0
    (corpus / "train.txt").write_text("另一个语料\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "benchmarks/lm_pretrain.py", "--corpus", str(corpus), "--run", str(run), "--resume"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "not the corpus this run started on" in proc.stderr


def test_model_flops_count_matrices_and_the_tied_output_once() -> None:
    from types import SimpleNamespace

    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 8)  # a lookup, but also the tied output layer: counted once
            self.pos = nn.Embedding(10, 8)  # a lookup only
            self.attn = nn.MultiheadAttention(8, 2)  # in_proj 24 x 8 + out_proj 8 x 8
            self.ff = nn.Linear(8, 16)

    pipe = SimpleNamespace(model=Tiny(), config=SimpleNamespace(model=SimpleNamespace(hidden_size=8)), itos=["x"] * 100)
    out = P.model_flops(pipe, context=5)
    assert out["matrix_parameters"] == 800 + 24 * 8 + 8 * 8 + 16 * 8
    assert out["attention_layers"] == 1
    assert out["train_flops_per_token"] == 6 * out["matrix_parameters"] + 6 * 1 * 5 * 8
