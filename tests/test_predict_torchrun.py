"""`torchrun ... nlpcli predict`: the input shared over 2 gloo processes on CPU, one output file in input order,
byte for byte what a single process writes; a bad line stops every rank with the single process's message."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from util import ROOT, SAMPLES, cli_env, run_cli

import nlpcli


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torchrun") / "ner"
    nlpcli.train(
        "ner",
        train=SAMPLES / "ner" / "train.jsonl",
        output=out,
        config=ROOT / "configs" / "tiny" / "ner.toml",
        max_steps=30,
        epochs=100,
    )
    return out


def _torchrun(*args: object) -> subprocess.CompletedProcess:
    with socket.socket() as s:  # a free port for the rendezvous, so runs beside this one do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    return subprocess.run(
        [*cmd, "-m", "nlpcli.cli", *map(str, args)],
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _input(tmp_path: Path, bad: str | None = None) -> Path:
    """600 lines (more than one round of 256 records per rank), blank lines among them, texts of all lengths."""
    texts = [json.loads(x)["text"] for x in (SAMPLES / "ner" / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [json.dumps({"id": i, "text": texts[i % len(texts)] * (1 + i % 7)}, ensure_ascii=False) for i in range(600)]
    lines[10] = lines[11] = ""
    if bad is not None:
        lines[523] = bad
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_two_ranks_write_one_file_equal_to_a_single_process(model, tmp_path):
    inp = _input(tmp_path, bad='{"txt": "no text"}')
    single, sharded = tmp_path / "single.jsonl", tmp_path / "sharded.jsonl"
    run_cli("predict", "ner", "--model", model, "--input", inp, "--output", single, "--skip-bad", check=True)
    proc = _torchrun("predict", "ner", "--model", model, "--input", inp, "--output", sharded, "--skip-bad")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sharded.read_bytes() == single.read_bytes()
    assert [json.loads(x)["id"] for x in sharded.read_text(encoding="utf-8").splitlines()] == [
        i for i in range(600) if i not in (10, 11, 523)
    ]
    # rank 0 alone reports, with the totals of both ranks
    assert (
        proc.stderr.count("skipped 1 bad record(s); first: ") == 1 and f"{inp}:524: missing string field" in proc.stderr
    )
    assert proc.stderr.count(f"wrote 597 record(s) to {sharded}") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.jsonl", "sharded.jsonl", "single.jsonl"]


def test_a_bad_line_stops_every_rank_with_the_single_process_message(model, tmp_path):
    inp = _input(tmp_path, bad="{not json")
    single = run_cli("predict", "ner", "--model", model, "--input", inp, "--output", tmp_path / "a.jsonl")
    proc = _torchrun("predict", "ner", "--model", model, "--input", inp, "--output", tmp_path / "b.jsonl")
    assert single.returncode == 1 and proc.returncode != 0
    message = single.stderr.strip().splitlines()[-1]  # after the line saying what precision auto chose
    assert message.startswith(f"error: {inp}:524: malformed JSON")
    assert proc.stderr.count(message) == 1  # printed by rank 0 only
    assert not (tmp_path / "b.jsonl").exists()
    stdin = _torchrun("predict", "ner", "--model", model)
    assert stdin.returncode != 0 and "under torchrun, give --input FILE" in stdin.stderr
