"""`nlpcli export`: a trained model as ONNX graphs run by onnxruntime.

The exported directory predicts what the torch checkpoint predicts (same entities, triples and answers, scores
within 1e-4) through `nlpcli.load`, `nlpcli predict` and `serve`, at other batch sizes and lengths than the
export traced; int8 export loads and predicts; lm refuses export; an exported model cannot be trained; without
onnxruntime the error is one line naming the extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from util import ROOT, SAMPLES, run_cli

import nlpcli
from nlpcli.errors import CheckpointError, ConfigError, NlpcliError

LONG_TEXT = "记者从西安获悉，徐明将加盟百度公司。" * 20  # longer than a window: several windows per record
# What each task's answer is made of (compared exactly) and where its scores are.
TRAINED = {
    "ner": ("ner", {}),
    "ner-chars": ("ner", {"use_words": False}),  # the DGCNN without jieba word features
    # The other from-scratch encoder, with char bigrams: ner-msra's model.
    "ner-bilstm": ("ner", {"encoder.name": "bilstm", "use_words": False, "use_bigrams": True}),
    # and with a lexicon (the fixture writes its word vectors): what ner-msra trains now.
    "ner-lexicon": ("ner", {"encoder.name": "bilstm", "use_words": False, "use_bigrams": True, "lexicon": ""}),
    "ie": ("ie", {}),
    "qa": ("qa", {}),
}


@pytest.fixture(scope="module")
def ort() -> Any:
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, ort: Any) -> dict[str, tuple[Path, Path]]:
    """name -> (torch checkpoint run, its export)."""
    from nlpcli.export import export

    root = tmp_path_factory.mktemp("onnx")
    words = ["西安", "徐明", "百度公司", "百度", "公司", "北京", "华为", "记者", "西", "安"]
    vectors = np.random.default_rng(0).normal(size=(len(words), 8))
    lexicon = root / "lexicon.txt"
    lexicon.write_text(
        f"{len(words)} 8\n" + "".join(w + " " + " ".join(map(str, v)) + "\n" for w, v in zip(words, vectors))
    )
    out = {}
    for name, (task, overrides) in TRAINED.items():
        if "lexicon" in overrides:
            overrides = overrides | {"lexicon": str(lexicon)}
        nlpcli.train(
            task,
            train=SAMPLES / task / "train.jsonl",
            output=root / name,
            config=ROOT / "configs" / "tiny" / f"{task}.toml",
            max_steps=40,
            epochs=100,
            **overrides,
        )
        out[name] = (root / name, export(root / name, root / f"{name}-onnx"))
    return out


def _records(task: str) -> list[dict[str, Any]]:
    if task == "qa":
        lines = (SAMPLES / "qa" / "train.jsonl").read_text(encoding="utf-8").splitlines()
        return [{k: r[k] for k in ("question", "passages")} for r in map(json.loads, lines[:12])]
    lines = (
        (SAMPLES / task / ("dev.jsonl" if task == "ner" else "train.jsonl")).read_text(encoding="utf-8").splitlines()
    )
    return [{"text": json.loads(line)["text"]} for line in lines[:20]] + [{"text": LONG_TEXT}, {"text": ""}]


def _answers(task: str, record: dict[str, Any]) -> tuple[Any, list[float]]:
    """What a prediction says (compared exactly) and its scores (compared within 1e-4)."""
    if task == "qa":
        return (record["answer"], record["passage_index"], record["start"], record["end"]), [record["score"]]
    items = record["entities"] if task == "ner" else record["spo_list"]
    return [{k: v for k, v in x.items() if k != "score"} for x in items], [x["score"] for x in items]


def assert_same(task: str, torch_out: list[dict[str, Any]], onnx_out: list[dict[str, Any]]) -> int:
    """The predictions agree; returns how many items (entities, triples, answers) were compared."""
    assert len(torch_out) == len(onnx_out)
    n = 0
    for a, b in zip(torch_out, onnx_out):
        (ka, sa), (kb, sb) = _answers(task, a), _answers(task, b)
        assert ka == kb
        # Scores are written rounded to 4 places: two values 1e-7 apart may round 1e-4 apart.
        assert all(abs(x - y) <= 1e-4 + 1e-9 for x, y in zip(sa, sb))
        n += len(sa)
    return n


@pytest.mark.parametrize("name", list(TRAINED))
def test_exported_model_predicts_as_torch(models: dict[str, tuple[Path, Path]], name: str) -> None:
    from nlpcli.onnx_runtime import OnnxModel

    task = TRAINED[name][0]
    run, exported = models[name]
    assert (exported / "model.onnx").is_file() or task == "ie"
    assert not (exported / "model.safetensors").exists() and not (exported / "train_state.pt").exists()
    # onnxruntime computes in fp32: torch is compared in fp32 too (auto is bf16 on a CPU with native bf16)
    torch_pipe = nlpcli.load(run, device="cpu", precision="fp32").pipeline
    onnx_pipe = nlpcli.load(exported, device="cpu").pipeline
    assert isinstance(onnx_pipe.model, OnnxModel) and onnx_pipe.name == task
    records = _records(task)
    # Other batch sizes than torch's, and than the export's example batch: the graphs take any batch and length.
    compared = assert_same(
        task, torch_pipe.predict_checked(records, batch_size=8), onnx_pipe.predict_checked(records, batch_size=3)
    )
    assert compared > 0


def test_exported_graphs_hold_no_loop(models: dict[str, tuple[Path, Path]]) -> None:
    # A loop runs its body once per item in onnxruntime: the lexicon's pooling exported as embedding_bag became
    # one over every char and role, and halved the exported model's speed. Every graph must be plain operators.
    import onnx

    for name, (_, exported) in models.items():
        for graph in exported.glob("*.onnx"):
            ops = {node.op_type for node in onnx.load(str(graph)).graph.node}
            assert not ops & {"Loop", "Scan", "If"}, (name, graph.name, sorted(ops & {"Loop", "Scan", "If"}))


def test_predict_and_serve_run_the_exported_directory(models: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from nlpcli.serve.app import create_app
    from nlpcli.serve.models import load_models

    run, exported = models["ner"]
    records = _records("ner")
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    outs = []
    for model in (run, exported):
        # fp32 for torch, as onnxruntime computes (an exported directory runs in fp32 whatever it is asked)
        proc = run_cli("predict", "ner", "--model", model, "--input", data, "--precision", "fp32", check=True)
        outs.append([json.loads(line) for line in proc.stdout.splitlines()])
    assert assert_same("ner", *outs) > 0
    with TestClient(create_app(load_models([str(exported)], device="cpu"))) as client:
        response = client.post("/predict", json=records)
        assert response.status_code == 200
        assert_same("ner", outs[0], response.json())
        info = client.get("/info/ner").json()
        assert info["task"] == "ner" and "Exported" in info["model_card"]


def test_cli_export_writes_the_directory(models: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    run, _ = models["ner"]
    out = tmp_path / "cli"
    proc = run_cli("export", run, "--output", out, check=True)
    assert str(out) in proc.stdout
    meta = json.loads((out / "onnx.json").read_text(encoding="utf-8"))
    assert meta["opset"] >= 17 and meta["methods"]["forward"]["inputs"][0] == "char_ids"
    assert {p.name for p in out.iterdir()} >= {"config.json", "vocab.json", "model.onnx", "onnx.json", "README.md"}


def test_export_replaces_an_export_but_not_other_directories(
    models: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    from nlpcli.export import export

    run, exported = models["ner"]
    assert export(run, exported) == exported  # again over a previous export
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not an exported model"):
        export(run, other)
    assert (other / "notes.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(ConfigError, match="already an exported model"):
        export(exported, tmp_path / "again")


def test_a_graph_that_differs_from_torch_is_not_written(
    models: dict[str, tuple[Path, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlpcli import onnx_runtime
    from nlpcli.export import export

    run, _ = models["ner"]
    real_run = onnx_runtime.OnnxModel.run
    monkeypatch.setattr(onnx_runtime.OnnxModel, "run", lambda self, *a: real_run(self, *a) + 0.01)
    with pytest.raises(NlpcliError, match="differs from torch on other sizes"):
        export(run, tmp_path / "off")
    assert not (tmp_path / "off").exists() and list(tmp_path.iterdir()) == []


def test_exported_model_cannot_be_trained_or_moved_off_the_cpu(models: dict[str, tuple[Path, Path]]) -> None:
    from nlpcli.tasks.ie.ner.pipeline import NerPipeline

    _, exported = models["ner"]
    with pytest.raises(CheckpointError, match="cannot be trained"):
        NerPipeline.load(exported, resume=True)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        nlpcli.load(exported, device="cuda")
    with pytest.raises(ConfigError, match="--quantize"):
        nlpcli.load(exported, device="cpu", quantize=True)


def test_lm_refuses_export(tmp_path: Path, ort: Any) -> None:
    nlpcli.train(
        "lm",
        train=SAMPLES / "lm" / "train.txt",
        output=tmp_path / "lm",
        config=ROOT / "configs/tiny/lm.toml",
        max_steps=2,
    )
    proc = run_cli("export", tmp_path / "lm", "--output", tmp_path / "lm-onnx")
    assert proc.returncode == 1
    assert "lm models cannot be exported" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lm-onnx").exists()


def test_missing_onnxruntime_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from nlpcli.export import export

    exported = None
    if "onnxruntime" in sys.modules or _importable("onnxruntime"):
        exported = request.getfixturevalue("models")["ner"][1]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(NlpcliError) as e:
        export(tmp_path / "anything", tmp_path / "out")
    assert str(e.value) == (
        "an exported (ONNX) model needs the 'onnx' extra: pip install 'nlpcli[onnx]' (no module 'onnxruntime')"
    )
    if exported is not None:
        with pytest.raises(NlpcliError, match=r"pip install 'nlpcli\[onnx\]'"):
            nlpcli.load(exported, device="cpu")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
