"""A task defined outside `nlpcli/` plugs in by registering itself: `predict`, `serve` and `info` take every
fact about it (input fields and their options, example record, output) from the task, with no edit in
`commands/`, `serve/` or the registry.

The toy task finds the digits of a text. It is registered for each test only (the registry is restored
afterwards), so the other test modules see the built-in tasks alone.
"""

from __future__ import annotations

import csv
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from torch import nn
from typer.testing import CliRunner

import nlpcli
from nlpcli import registry
from nlpcli.cli import app
from nlpcli.config import Section, TaskConfig, opt
from nlpcli.errors import ConfigError
from nlpcli.registry import get_task, register_task, task_names
from nlpcli.tasks.base import InputField, Pipeline


@dataclass
class DigitsInference(Section):
    batch_size: int = opt(16, "Records per batch.")


@dataclass
class DigitsConfig(TaskConfig):
    inference: DigitsInference = field(default_factory=DigitsInference)


class DigitsPipeline(Pipeline):
    name = "digits"
    summary = "a toy task: the digits of a text"
    Config = DigitsConfig
    formats = ("jsonl",)
    input_fields = (InputField("text", help="the text to find digits in"),)
    example: ClassVar[dict[str, Any]] = {"text": "第3号楼12层"}
    output_help = '"digits": [{start, text}].'

    @classmethod
    def build(cls, config: Any, assets: dict[str, Any], directory: Path | None = None) -> DigitsPipeline:
        return cls(config, assets, nn.Linear(1, 1))  # a model with weights, so a checkpoint has some to save

    def preprocess(self, record: dict[str, Any]) -> list[Any]:
        return [record["text"]]

    def forward(self, pieces: list[Any], **params: Any) -> list[Any]:
        return [[(i, c) for i, c in enumerate(text) if c.isdigit()] for text in pieces]

    def postprocess(self, record: dict[str, Any], parts: list[tuple[Any, Any]]) -> dict[str, Any]:
        [(_, found)] = parts
        return record | {"digits": [{"start": i, "text": c} for i, c in found]}


EXPECTED = {
    "text": "第3号楼12层",
    "digits": [{"start": 1, "text": "3"}, {"start": 4, "text": "1"}, {"start": 5, "text": "2"}],
}


@pytest.fixture(autouse=True)
def digits_task(monkeypatch: pytest.MonkeyPatch) -> type[DigitsPipeline]:
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))  # undone after each test
    return register_task(DigitsPipeline)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    pipe = DigitsPipeline.build(DigitsConfig(), {})
    return pipe.save(tmp_path / "digits")


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def test_the_registry_finds_the_task_by_name() -> None:
    assert get_task("digits") is DigitsPipeline and "digits" in task_names()
    assert DigitsPipeline.record_options == {"text": ("text", False)} and DigitsPipeline.table_fields == {
        "text": "text"
    }
    with pytest.raises(ConfigError, match="two tasks are named 'digits'"):
        register_task(type("DigitsPipeline", (DigitsPipeline,), {"__module__": "elsewhere"}))


def test_library_loads_and_predicts(checkpoint: Path) -> None:
    toy = nlpcli.load(checkpoint, device="cpu")  # the task is read from the checkpoint
    assert type(toy.pipeline) is DigitsPipeline and toy.task == "digits"
    assert toy(DigitsPipeline.example) == EXPECTED


def test_predict_takes_a_record_as_options_and_a_table(checkpoint: Path, tmp_path: Path) -> None:
    out = invoke("predict", "digits", "--model", checkpoint, "--text", DigitsPipeline.example["text"])
    assert json.loads(out.stdout) == EXPECTED
    table = tmp_path / "in.csv"
    table.write_text("id,body\n7,第3号楼12层\n", encoding="utf-8")
    written = tmp_path / "out.csv"
    invoke("predict", "digits", "--model", checkpoint, "--input", table, "--text-column", "body", "-o", written)
    with written.open(encoding="utf-8", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert list(row) == ["id", "body", "digits"] and json.loads(row["digits"]) == EXPECTED["digits"]
    shown = invoke("predict", "--help").stdout
    assert "digits:" in shown and "{start, text}" in shown  # the task's own output description


def test_info_shows_the_task_its_records_and_its_model_card(checkpoint: Path) -> None:
    shown = invoke("info", "digits").stdout
    assert "--batch-size" in shown and "Records per batch." in shown  # its config fields
    assert "the text to find digits in" in shown and "--text-column" in shown and "{start, text}" in shown
    assert "第3号楼12层" in shown  # its example record
    card = invoke("info", "--model", checkpoint).stdout
    assert card.startswith("---\nlibrary_name: nlpcli\n") and "# nlpcli digits model" in card


@contextmanager
def serving(models: dict[str, Any], **settings: Any) -> Iterator[str]:
    """The app of `nlpcli serve` under uvicorn in a thread, on a free port (requests made before it starts
    wait in the listening socket's queue)."""
    import uvicorn

    from nlpcli.serve import ServeSettings, create_app
    from nlpcli.serve.runner import bind

    sock = bind("127.0.0.1", 0)
    asgi = create_app(models, ServeSettings(**settings))
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def test_serve_answers_and_shows_the_tasks_example(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    from nlpcli.serve import load_models

    caplog.set_level("WARNING", logger="nlpcli.serve")
    # asked to run the model in a process of its own, which cannot know a task registered here alone
    with serving(load_models([f"toy={checkpoint}"], device="cpu"), model_process=True) as url:
        body = json.dumps(DigitsPipeline.example, ensure_ascii=False).encode()
        request = urllib.request.Request(f"{url}/predict/toy", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert json.loads(answer.read()) == EXPECTED
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=60) as answer:
            docs = json.loads(answer.read())
        with urllib.request.urlopen(f"{url}/info/toy", timeout=60) as answer:
            info = json.loads(answer.read())
    body_doc = docs["paths"]["/predict/toy"]["post"]["requestBody"]["content"]["application/json"]
    assert body_doc["example"] == DigitsPipeline.example  # the task's own example, and its declared field:
    schema = docs["components"]["schemas"]["ToyRecord"]
    assert schema["properties"]["text"]["description"] == "the text to find digits in"
    assert info["task"] == "digits" and "# nlpcli digits model" in info["model_card"]
    assert info["runs_in"] == "server process"
    # a task registered by this process alone is unknown to a new one: the model ran in the server, and it says so
    assert "toy runs in the server's process: its own process did not load it (unknown task 'digits'" in caplog.text


def test_an_installed_package_plugs_in_through_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task of another package is found by its entry point (group `nlpcli.tasks`), imported when asked for."""
    monkeypatch.setattr(registry, "_registered", {})  # not imported yet
    monkeypatch.setattr(registry, "_plugins", lambda: {"digits": f"{__name__}:DigitsPipeline"})
    assert "digits" in task_names() and "digits" not in task_names(plugins=False)
    assert get_task("digits") is DigitsPipeline
    monkeypatch.setattr(registry, "_plugins", lambda: {"digits": f"{__name__}:DigitsConfig"})
    monkeypatch.setattr(registry, "_registered", {})
    with pytest.raises(ConfigError, match="not 'digits'"):
        get_task("digits")
