"""The task contract, checked for every task in the registry (like flair's BaseModelTest).

A task is held to it by existing: it needs `samples/TASK/train.*` and `samples/TASK/input.jsonl`, and a
`configs/tiny/TASK.toml`; then build -> one batch -> finite loss that reaches every trained parameter ->
save -> load -> identical predictions -> every input field kept -> (where the task promises it) the
prediction file reads back as gold, and scores perfectly against itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from util import ROOT, SAMPLES

from nlpcli.api import load
from nlpcli.config import read_config_file
from nlpcli.registry import get_task, task_names


def _inputs(task: str) -> tuple[Path, list[dict], Path]:
    folder = SAMPLES / task
    train = sorted(folder.glob("train.*"))
    preset = ROOT / "configs" / "tiny" / f"{task}.toml"
    assert train and (folder / "input.jsonl").is_file() and preset.is_file(), (
        f"task {task!r} needs samples/{task}/train.*, samples/{task}/input.jsonl and configs/tiny/{task}.toml"
    )
    lines = (folder / "input.jsonl").read_text(encoding="utf-8").splitlines()
    return train[0], [json.loads(line) for line in lines if line.strip()], preset


@pytest.mark.parametrize("task", task_names())
def test_task_meets_the_contract(task: str, tmp_path: Path) -> None:
    cls = get_task(task)
    assert cls.name == task and cls.summary and cls.formats
    train_file, records, preset = _inputs(task)
    config = cls.Config().updated(read_config_file(preset))
    torch.manual_seed(0)
    examples, _ = cls.read(train_file)
    examples = cls.check_examples(config, examples, None)
    pipe = cls.create(config, examples)

    # One batch: a finite loss whose gradient reaches the model.
    batch = pipe.collate(pipe.training_examples(examples)[:4])
    pipe.model.train()
    loss = pipe.loss(pipe.model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in pipe.model.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) >= len(grads) // 2
    pipe.model.zero_grad()

    # The facts the verbs show: input fields (their options and columns), an example record, the output.
    assert [f.name for f in cls.input_fields] == list(cls.example) == list(cls.table_fields) and cls.output_help
    assert {name for name, _ in cls.record_options.values()} == set(cls.example)
    pipe.validate_record(cls.example, "example", 1)

    # Save and load as a pair: same config, same predictions.
    for record in records:
        pipe.validate_record(record, "input.jsonl", 1)
    before = list(pipe.predict_records(records))
    saved = pipe.save(tmp_path / "ckpt", metrics={cls.main_metric: 0.0})
    # the task is read from the checkpoint; fp32 as `pipe` computes (auto is bf16 on a CPU with native bf16,
    # whose rounding moves with the batch's padding)
    loaded = load(saved, device="cpu", precision="fp32").pipeline
    assert type(loaded) is cls and loaded.config == pipe.config
    after = list(loaded.predict_records(records))
    assert after == before
    if not cls.sampled:  # batching does not change results
        assert list(loaded.predict_records(records, batch_size=1)) == before

    # Every input field is kept, and predictions are added.
    for record, out in zip(records, after, strict=True):
        assert {k: out[k] for k in record} == record and len(out) > len(record)

    if cls.predictions_are_gold:
        pred = tmp_path / "pred.jsonl"
        pred.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in after), encoding="utf-8")
        gold, _ = cls.read(pred)
        assert len(gold) == len(records)
        if cls.main_metric in ("f1", "score"):  # the model agrees with its own predictions
            assert loaded.evaluate(gold)[cls.main_metric] == pytest.approx(1.0)
