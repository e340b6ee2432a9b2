"""Checkpoints of format 2 (before `max_len` was split by meaning) and presets with the old names still load,
with each old `max_len` in its new field, and predict what the same model predicts under the new names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from util import ROOT, SAMPLES

from nlpcli import api
from nlpcli.config import read_config_file
from nlpcli.registry import get_task

# Per task: settings in the new names (none of them a default), and where format 2 kept each of them.
NEW = {
    "ner": {"windows.window": 40, "windows.window_overlap": 10},
    "ie": {"windows.window": 48, "model.max_positions": 48, "windows.window_overlap": 8},
    "qa": {"windows.window": 48, "windows.window_overlap": 16},
    "lm": {"model.train_window": 24, "inference.max_sentence_len": 30},
    "chat": {"model.context_len": 48},
}
FORMAT_2 = {
    "ner": {"windows.window": "inference.max_len", "windows.window_overlap": "inference.window_overlap"},
    "ie": {"model.max_positions": "model.max_len", "windows.window_overlap": "model.window_overlap"},
    "qa": {"windows.window": "inference.max_len", "windows.window_overlap": "inference.window_overlap"},
    "lm": {"model.train_window": "model.max_len", "inference.max_sentence_len": "inference.max_len"},
    "chat": {"model.context_len": "model.max_len"},
}


def _as_format_2(config: dict[str, dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    """A format-3 config written the way format 2 wrote it: old names, no windows section."""
    old = {section: dict(fields) for section, fields in config.items() if section != "windows"}
    for new, was in FORMAT_2[task].items():
        section, name = new.split(".")
        old_section, old_name = was.split(".")
        old.get(section, {}).pop(name, None)
        old[old_section][old_name] = config[section][name]
    return old


def _value(config: Any, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


@pytest.mark.parametrize("task", list(NEW))
def test_format_2_checkpoint_max_len_lands_in_the_new_field(task: str, tmp_path: Path) -> None:
    cls = get_task(task)
    folder = SAMPLES / task
    config = cls.Config().updated(read_config_file(ROOT / "configs" / "tiny" / f"{task}.toml")).updated(NEW[task])
    torch.manual_seed(0)
    examples, _ = cls.read(sorted(folder.glob("train.*"))[0])
    pipe = cls.create(config, cls.check_examples(config, examples, None))
    saved = pipe.save(tmp_path / "v3", metrics={cls.main_metric: 0.0})

    meta = json.loads((saved / "config.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == 3
    old = tmp_path / "v2"
    old.mkdir()
    for f in saved.iterdir():
        if f.is_file():
            (old / f.name).write_bytes(f.read_bytes())
    meta_old = {**meta, "format_version": 2, "config": _as_format_2(meta["config"], task)}
    assert "windows" not in meta_old["config"]
    assert any("max_len" in fields for fields in meta_old["config"].values())  # really the old names
    (old / "config.json").write_text(json.dumps(meta_old), encoding="utf-8")

    loaded = api.load(old, device="cpu").pipeline
    for dotted, value in NEW[task].items():
        assert _value(loaded.config, dotted) == value, dotted
    fresh = api.load(saved, device="cpu").pipeline
    assert loaded.config == fresh.config
    records = [json.loads(x) for x in (folder / "input.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    assert list(loaded.predict_records(records)) == list(fresh.predict_records(records))


def test_old_names_in_presets_and_options_land_where_they_landed(tmp_path: Path) -> None:
    """`max_len` in a preset or on the command line reaches the field it always reached, per task and per verb."""
    preset = tmp_path / "old.toml"
    preset.write_text("[inference]\nmax_len = 100\nwindow_overlap = 20\n", encoding="utf-8")
    ner = get_task("ner").Config().updated(read_config_file(preset))
    assert (ner.windows.window, ner.windows.window_overlap, ner.windows.training) == (100, 20, 100)
    ie = get_task("ie").Config().updated({"max_len": 96})  # `--max-len` when training ie: positions and windows
    assert (ie.model.max_positions, ie.windows.window) == (96, 96)  # (above the overlap of 64, as windows must be)
    qa = get_task("qa").Config().updated({"max-len": 96})
    assert qa.windows.window == 96
    lm_cls = get_task("lm")
    lm = lm_cls.Config().updated({"max_len": 24, "gen_max_len": 20})  # training: the window; gen_: the sampler
    assert (lm.model.train_window, lm.inference.max_sentence_len) == (24, 20)
    # At generate/predict time a bare --max-len is the sampler's longest sentence, as it was.
    runtime = lm_cls.with_runtime_overrides(lm_cls.Config(), {"max_len": 30})
    assert runtime.inference.max_sentence_len == 30 and runtime.model.train_window == 64
    chat = get_task("chat").Config().updated(read_config_file(ROOT / "configs" / "tiny" / "chat.toml"))
    assert chat.updated({"model.max_len": 32}).model.context_len == 32
