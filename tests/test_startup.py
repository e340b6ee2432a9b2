"""Start-up of a one-line `predict`: only what the model and the verb use is imported (no transformers for a
DGCNN, no jieba without word features, no other verb's module, no trainer), and jieba's dictionary is read a
first character at a time from $NLPCLI_HOME."""

from __future__ import annotations

import json
import marshal
import subprocess
import sys

import jieba
import pytest
from util import ROOT, SAMPLES, cli_env

from nlpcli import api
from nlpcli.data import jieba_dict, vocab
from nlpcli.models.cache import home

TINY = ROOT / "configs" / "tiny" / "ner.toml"
PROBE = """
import json, sys
from nlpcli.cli import main
sys.argv = ["nlpcli"] + json.loads(sys.argv[1])
try:
    main()
except SystemExit as e:
    code = e.code
watched = ("transformers", "jieba", "pandas", "nlpcli.trainer", "nlpcli.commands.train", "nlpcli.commands.serve")
print("IMPORTED", json.dumps(sorted(m for m in watched if m in sys.modules)), file=sys.stderr)
import gc
print("COLLECTOR", json.dumps([gc.isenabled(), gc.get_freeze_count()]), file=sys.stderr)
"""


def _probe(args: list[str], what: str) -> list:
    """Run `nlpcli ARGS` in a fresh interpreter; what it printed after `what` (IMPORTED or COLLECTOR)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, env=cli_env(), cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith(what + " "))
    return json.loads(line.removeprefix(what + " "))


def _imported_by_predict(model) -> list[str]:
    return _probe(["predict", "ner", "--model", str(model), "--text", "张三在北京"], "IMPORTED")


@pytest.mark.parametrize(("use_words", "expected"), [(False, []), (True, ["jieba"])])
def test_predict_imports_only_what_the_model_uses(tmp_path, use_words, expected):
    out = tmp_path / "run"
    api.train(
        "ner", SAMPLES / "ner" / "train.jsonl", out, config=TINY, encoder="dgcnn", use_words=use_words, max_steps=1
    )
    assert _imported_by_predict(out) == expected


def test_the_collector_is_paused_for_a_commands_start_up_only(tmp_path):
    """The CLI starts without the garbage collector (nlpcli/startup.py); loading a model or beginning a training
    turns it back on, with what start-up made frozen out of later collections. The Python API leaves it alone."""
    out = tmp_path / "run"
    train = ["train", "ner", "--train", str(SAMPLES / "ner" / "train.jsonl"), "--output", str(out)]
    enabled, frozen = _probe([*train, "--config", str(TINY), "--encoder", "dgcnn", "--max-steps", "1"], "COLLECTOR")
    assert enabled and frozen > 10_000  # torch alone makes far more objects than that
    enabled, frozen = _probe(["predict", "ner", "--model", str(out), "--text", "张三在北京"], "COLLECTOR")
    assert enabled and frozen > 10_000
    enabled, frozen = _probe(["models", "list"], "COLLECTOR")  # loads nothing: off until the process ends
    assert not enabled and frozen == 0

    import gc

    before = gc.get_freeze_count()
    api.load(out)("张三在北京")
    assert gc.isenabled() and gc.get_freeze_count() == before


def _full_dictionary() -> tuple[dict[str, int], float]:
    vocab.words("预热")  # the session's dictionary is in place (written the first time)
    return marshal.loads((home() / "jieba" / "jieba.cache").read_bytes())


def _tokenizer(freq: dict[str, int], total: float) -> jieba.Tokenizer:
    t = jieba.Tokenizer()
    t.FREQ, t.total, t.initialized = freq, total, True
    return t


@pytest.mark.parametrize("whole_after", [jieba_dict.WHOLE_AFTER, 5])
def test_the_lazy_dictionary_segments_as_the_whole_one(monkeypatch, whole_after):
    monkeypatch.setattr(jieba_dict, "WHOLE_AFTER", whole_after)
    full, total = _full_dictionary()
    reference = _tokenizer(full, total)
    lazy = jieba.Tokenizer()
    jieba_dict.install(lazy, home() / "jieba")
    assert isinstance(lazy.FREQ, jieba_dict.LazyFreq) and len(lazy.FREQ) == 0  # nothing read yet
    texts = [json.loads(line)["text"] for line in (SAMPLES / "ner" / "train.jsonl").open(encoding="utf-8")]
    for text in texts[:60]:
        assert lazy.lcut(text, HMM=False) == reference.lcut(text, HMM=False)
    if whole_after == 5:  # past the limit the whole dictionary is read and jieba gets a plain dict
        assert type(lazy.FREQ) is dict and len(lazy.FREQ) == len(full)
    else:
        assert 0 < len(lazy.FREQ) < len(full) / 2  # only the first characters of these texts


def test_a_broken_shard_file_is_rebuilt(tmp_path):
    _full_dictionary()
    where = tmp_path / "jieba"
    where.mkdir()
    (where / jieba_dict.SHARDS).write_bytes(b"\x05garbage")
    (where / "jieba.cache").write_bytes((home() / "jieba" / "jieba.cache").read_bytes())  # no slow rebuild
    t = jieba.Tokenizer()
    jieba_dict.install(t, where)
    assert t.lcut("南京市长江大桥", HMM=False) == ["南京市", "长江大桥"]
    fresh = jieba.Tokenizer()
    jieba_dict.install(fresh, where)
    assert isinstance(fresh.FREQ, jieba_dict.LazyFreq)
    assert fresh.lcut("南京市长江大桥", HMM=False) == ["南京市", "长江大桥"]


def test_a_server_turns_the_collector_back_on_though_it_loaded_no_model(monkeypatch):
    """`serve --model-process` loads its models in processes of their own: the server itself resumes."""
    import gc

    from fastapi import FastAPI

    from nlpcli import startup
    from nlpcli.serve import runner
    from nlpcli.serve.app import ServeSettings

    ran = []
    monkeypatch.setattr(runner._Server, "run", lambda self, sockets=None: ran.append(gc.isenabled()))
    sock = runner.bind("127.0.0.1", 0)
    startup.pause()
    try:
        assert not gc.isenabled()
        runner.run_server(FastAPI(), sock, ServeSettings(), log_level="error")
    finally:
        sock.close()
        gc.enable()
        gc.unfreeze()
    assert ran == [True]
