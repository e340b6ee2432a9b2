"""`precision = "auto"`: bf16 where the CPU multiplies it natively (for prediction, and for training a pretrained
network), fp32 elsewhere; the choice and its reason are printed by the CLI and written into the model card."""

from __future__ import annotations

import pytest
import torch
from util import ROOT, SAMPLES, run_cli

from nlpcli import api, device
from nlpcli.device import Precision, choose_precision
from nlpcli.errors import ConfigError

CPU = torch.device("cpu")
TINY = ROOT / "configs" / "tiny" / "ner.toml"


@pytest.fixture
def cpu_feature(monkeypatch):
    """Set what the capability probe reports: a native bf16 feature name, or None (emulated bf16)."""

    def fake(feature: str | None) -> None:
        monkeypatch.setattr(device, "native_bf16_feature", lambda: feature)

    return fake


@pytest.mark.parametrize(
    ("feature", "training", "pretrained", "expected"),
    [
        ("amx_bf16", False, False, "bf16"),  # prediction and generation, any model
        ("avx512_bf16", False, True, "bf16"),
        ("amx_bf16", True, True, "bf16"),  # training a pretrained encoder
        ("amx_bf16", True, False, "fp32"),  # training the from-scratch DGCNN / LSTM: no faster in bf16
        (None, False, False, "fp32"),  # emulated bf16 is slower than fp32
        (None, True, True, "fp32"),
    ],
)
def test_auto_follows_the_cpu_and_the_work(cpu_feature, feature, training, pretrained, expected):
    cpu_feature(feature)
    chosen = choose_precision(CPU, "auto", training=training, pretrained=pretrained)
    assert chosen.name == expected
    assert chosen.dtype == (torch.bfloat16 if expected == "bf16" else None)
    assert chosen.note.startswith(f"precision auto: {expected} (")
    if feature is None:
        assert chosen.note == "precision auto: fp32 (no native bf16 on this CPU)"
    else:
        assert feature in chosen.note


def test_a_named_precision_is_taken_as_asked_and_not_announced(cpu_feature):
    cpu_feature(None)
    assert choose_precision(CPU, "bf16") == Precision(torch.bfloat16)
    assert choose_precision(CPU, "bf16").note == ""
    cpu_feature("amx_bf16")
    assert choose_precision(CPU, "fp32").dtype is None
    with pytest.raises(ConfigError, match="unknown precision"):
        choose_precision(CPU, "fp8")


def test_auto_on_a_gpu_is_bf16_or_fp16(monkeypatch):
    for supported, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert choose_precision(torch.device("cuda"), "auto", training=True).dtype == dtype


def test_the_probe_reads_cpuinfo_flags_without_torchs_check(monkeypatch, tmp_path):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(device, "CPUINFO", cpuinfo)
    device.native_bf16_feature.cache_clear()
    try:
        cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
        assert device.native_bf16_feature() == "avx512_bf16"
        device.native_bf16_feature.cache_clear()
        cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
        assert device.native_bf16_feature() is None
    finally:
        device.native_bf16_feature.cache_clear()


def test_load_returns_the_choice_and_its_reason(cpu_feature, tmp_path):
    out = tmp_path / "run"
    api.train("ner", SAMPLES / "ner" / "train.jsonl", out, config=TINY, encoder="dgcnn", max_steps=1)
    cpu_feature("amx_bf16")
    pipe = api.load(out, device="cpu").pipeline
    assert pipe.precision == torch.bfloat16 and pipe.precision_note.endswith("natively: amx_bf16)")
    cpu_feature(None)
    pipe = api.load(out, device="cpu").pipeline
    assert pipe.precision is None and pipe.precision_note == "precision auto: fp32 (no native bf16 on this CPU)"
    assert api.load(out, device="cpu", precision="fp32").pipeline.precision_note == ""


def test_quantized_models_compute_in_fp32_on_a_bf16_cpu(cpu_feature, tmp_path):
    # int8 dynamic Linear layers take fp32 inputs: under bf16 autocast the first call failed
    out = tmp_path / "run"
    api.train("ner", SAMPLES / "ner" / "train.jsonl", out, config=TINY, encoder="dgcnn", max_steps=1)
    cpu_feature("avx512_bf16")
    pipe = api.load(out, device="cpu", quantize=True).pipeline
    assert pipe.precision is None
    assert pipe.precision_note == "precision auto: fp32 (int8 quantised Linear layers compute in fp32)"
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in pipe.model.modules())
    assert "entities" in pipe.predict_checked([{"text": "张伟在北京工作。"}])[0]
    with pytest.raises(ConfigError, match="--quantize computes in fp32"):
        api.load(out, device="cpu", quantize=True, precision="bf16")


def test_training_from_scratch_stays_fp32_and_the_card_says_why(cpu_feature, tmp_path):
    cpu_feature("amx_bf16")
    report = api.train("ner", SAMPLES / "ner" / "train.jsonl", tmp_path / "run", config=TINY, max_steps=1)
    assert report["precision"] == "fp32"
    assert report["precision_note"] == (
        "precision auto: fp32 (a model trained from scratch trains no faster in bf16, even with amx_bf16)"
    )
    card = (tmp_path / "run" / "best" / "README.md").read_text(encoding="utf-8")
    assert "- device: cpu, precision fp32 (auto: a model trained from scratch" in card


def test_a_pretrained_network_is_recognised(tmp_path):
    from transformers import BertConfig, BertModel

    from nlpcli.nn.hf import holds_pretrained

    bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    assert holds_pretrained(torch.nn.Sequential(bert)) and not holds_pretrained(torch.nn.Linear(2, 2))


def test_predict_prints_the_choice_once(tmp_path):
    out = tmp_path / "run"
    api.train("ner", SAMPLES / "ner" / "train.jsonl", out, config=TINY, encoder="dgcnn", max_steps=1)
    proc = run_cli("predict", "ner", "--model", out, "--text", "张三在北京", check=True)
    expected = choose_precision(CPU, "auto").note  # this machine's: fp32 on a CPU without native bf16
    assert expected.startswith("precision auto: ")
    assert proc.stderr.splitlines().count(expected) == 1 and "entities" in proc.stdout
    if device.native_bf16_feature() is None:
        assert expected == "precision auto: fp32 (no native bf16 on this CPU)"
    proc = run_cli("predict", "ner", "--model", out, "--text", "张三", "--precision", "fp32", check=True)
    assert "precision auto" not in proc.stderr


def test_info_says_whether_this_cpu_has_native_bf16():
    out = run_cli("info", check=True).stdout
    feature = device.native_bf16_feature()
    assert (f"native ({feature})" if feature else "emulated: precision auto stays fp32") in out
