"""Checkpoints of format 1 (one flat config, older weight names) still load and predict as they did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from util import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "v1"


def _without_scores(record: dict) -> dict:
    """The record without the per-entity / per-triple `score` that format 1 did not write (added since)."""
    return {
        k: [{f: v for f, v in item.items() if f != "score"} for item in value]
        if k in ("entities", "spo_list")
        else value
        for k, value in record.items()
    }


def _exclusive_ends(record: dict) -> dict:
    """The expected record with exclusive ends: format 1 wrote inclusive ones (`text[start:end + 1]`), and offsets
    are an output format, not a fact of the model, so the old checkpoint now gives `text[start:end]`."""
    out = dict(record)
    if "entities" in out:
        out["entities"] = [e | {"end": e["end"] + 1} for e in out["entities"]]
    if "spo_list" in out:
        out["spo_list"] = [
            t | {"subject_end": t["subject_end"] + 1, "object_end": t["object_end"] + 1} for t in out["spo_list"]
        ]
    if out.get("end") is not None:
        out["end"] += 1
    return out


@pytest.mark.parametrize("task", ["ner", "ie", "qa", "lm", "chat"])
def test_v1_checkpoint_predicts_what_it_predicted(task, tmp_path):
    ckpt = FIXTURES / task
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["format_version"] == 1 and "trainer" not in meta["config"]  # really the old flat layout
    out = tmp_path / "pred.jsonl"
    # fp32, as the expected answers were made: on a CPU with native bf16, auto would predict in bf16
    run_cli(
        "predict", task, "--model", ckpt, "--input", ckpt / "input.jsonl", "--output", out, "--precision", "fp32",
        check=True,
    )  # fmt: skip
    expected = (ckpt / "expected.jsonl").read_text(encoding="utf-8")
    got = [_without_scores(json.loads(line)) for line in out.read_text(encoding="utf-8").splitlines()]
    assert got == [_exclusive_ends(json.loads(line)) for line in expected.splitlines()]
    assert any(
        v
        for line in expected.splitlines()
        for k, v in json.loads(line).items()
        if k in ("entities", "spo_list", "answer", "sentences", "reply")
    )  # the outputs are not all empty
