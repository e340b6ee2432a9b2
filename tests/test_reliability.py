"""Reliability (issue 14): no lost checkpoint at any kill point, one-line errors, no hub contact on load,
one writer per run, permissions, empty input, finished resume, SIGTERM, unwrapped messages, streaming stdin.

Each test here failed on the code before the fix (see the issue for the probe that found each case).
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from util import ROOT, SAMPLES, cli_env

from nlpcli import checkpoint
from nlpcli.checkpoint import load_checkpoint, save_checkpoint

NER = SAMPLES / "ner"
FIXTURES = Path(__file__).parent / "fixtures" / "v1"
TINY = [
    "--hidden-size",
    "32",
    "--dilations",
    "1,2",
    "--head-size",
    "8",
    "--word-dim",
    "16",
    "--batch-size",
    "8",
    "--warmup-steps",
    "5",
    "--seed",
    "3",
    "--threads",
    "1",
]
TRAIN_NER = ["train", "ner", "--train", NER / "train.jsonl", "--dev", NER / "dev.jsonl", *TINY]


# --- helpers --------------------------------------------------------------------------------------------
def _cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "nlpcli.cli", *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    env = cli_env()
    env.update(extra)
    return env


def _run(
    *args: Any,
    input: str | None = None,
    env: dict[str, str] | None = None,
    umask: int | None = None,
    fsize: int | None = None,
    prefix: list[str] | None = None,
    cwd: Path = ROOT,
    stdout: Any = subprocess.PIPE,
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    """`nlpcli ARGS` in a subprocess, optionally under a umask, a file-size limit or a command prefix."""

    def limits() -> None:
        if umask is not None:
            os.umask(umask)
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [*(prefix or []), *_cmd(*args)],
        input=input,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
        cwd=cwd,
        timeout=timeout,
        preexec_fn=limits,
    )


# The plain progress lines a training prints when stderr is no terminal (test_cli_everyday.py), and the line
# saying what precision auto chose (test_precision.py): log, not error.
PROGRESS = re.compile(r"^(train: \d+ steps planned|step \d+[/:] |precision auto: |encoder auto: )")


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _popen(*args: Any, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(_cmd(*args), env=env or cli_env(), cwd=ROOT, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(predicate: Any, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Wait for an event (a file appearing) while the process lives; the timeout only stops a hung test."""
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            proc.kill()
            raise AssertionError(f"timed out (rc {proc.poll()}): {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _step(ckpt_dir: Path) -> int:
    state = load_checkpoint(ckpt_dir).train_state()
    assert state is not None
    return int(state["step"])


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished NER run (6 steps), trained under umask 027."""
    run = tmp_path_factory.mktemp("rel") / "run"
    proc = _run(*TRAIN_NER, "--output", run, "--max-steps", "6", "--eval-every", "3", umask=0o027)
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NER run on a random local BERT (saved in best/encoder)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    base = tmp_path_factory.mktemp("rel-hf")
    bert = base / "bert"
    bert.mkdir()
    chars = sorted({c for c in (NER / "train.jsonl").read_text(encoding="utf-8") if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(bert)
    BertTokenizerFast(vocab=str(bert / "vocab.txt")).save_pretrained(bert)
    run = base / "run"
    proc = _run(
        "train", "ner", "--train", NER / "train.jsonl", "--output", run, "--encoder", bert, "--max-steps", "2",
        "--batch-size", "8", "--threads", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return run


# --- 1. a kill at any point of a checkpoint swap ------------------------------------------------------------
def _save_version(dest: Path, step: int) -> None:
    save_checkpoint(
        dest,
        "ner",
        {"trainer": {}},
        {"w": torch.full((64,), float(step))},
        {"chars": ["a"]},
        metrics={"step": step},
        train_state={"step": step},
    )


def _save_killed_at(dest: Path, point: int) -> bool:
    """Save version 2 over version 1 in a forked child that SIGKILLs itself just before its `point`-th
    file-system change (rename, unlink, rmdir, fsync); True when it was killed, False when it finished."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = [0]

            def hook(fn: Any) -> Any:
                def wrapped(*a: Any, **kw: Any) -> Any:
                    count[0] += 1
                    if count[0] == point:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return fn(*a, **kw)

                return wrapped

            for name in ("replace", "rename", "unlink", "rmdir", "fsync"):
                setattr(os, name, hook(getattr(os, name)))
            _save_version(dest, 2)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0
    return False


@pytest.mark.parametrize("name", ["last", "best"])
def test_a_kill_at_any_point_of_a_checkpoint_swap_loses_nothing(tmp_path: Path, name: str) -> None:
    steps = []
    point = 1
    while True:
        run = tmp_path / f"p{point}"
        _save_version(run / name, 1)
        killed = _save_killed_at(run / name, point)
        # Readers (--model, --resume) find a complete checkpoint at once, before any repair.
        found = load_checkpoint(run / name)
        assert _step(found.path) in (1, 2)
        if name == "best":
            assert load_checkpoint(run).path == found.path
        # A run starts by finishing or rolling back the swap: NAME/ is complete and nothing else is left.
        checkpoint.recover_run(run)
        assert sorted(p.name for p in run.iterdir()) == [name]
        steps.append(_step(run / name))
        assert load_file(run / name / "model.safetensors")["w"][0] == steps[-1]
        if not killed:
            break
        point += 1
    assert point >= 8, "the swap should be cut at many points"
    assert steps[0] == 1 and steps[-1] == 2
    assert steps == sorted(steps), "once the new version is complete it is never rolled back"


def test_resume_after_a_kill_between_the_renames_of_a_swap(ner_run: Path, tmp_path: Path) -> None:
    """The probe's case: killed while `last/` had been moved aside and the new one was not in place yet."""
    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    ckpt = load_checkpoint(run / "last")
    pid = os.fork()
    if pid == 0:
        try:

            def hook(fn: Any) -> Any:
                def wrapped(*a: Any, **kw: Any) -> Any:
                    out = fn(*a, **kw)
                    if not (run / "last").exists():
                        os.kill(os.getpid(), signal.SIGKILL)
                    return out

                return wrapped

            os.rename, os.replace = hook(os.rename), hook(os.replace)
            checkpoint.save_checkpoint(
                run / "last",
                "ner",
                ckpt.config,
                ckpt.state_dict(),
                ckpt.assets,
                ckpt.metrics,
                ckpt.train_state(),
                write_extra=None,
            )
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and not (run / "last").exists()
    proc = _run(*TRAIN_NER, "--output", run, "--resume", "--max-steps", "8")
    assert proc.returncode == 0, proc.stderr
    assert [r["step"] for r in _log(run) if r["event"] == "end"] == [6, 8]
    assert sorted(p.name for p in run.iterdir()) == ["best", "last", "train_log.jsonl"]


# --- 2. loading never contacts the hub ------------------------------------------------------------------
NETBLOCK = """
import os, socket
_LOG = os.environ["NETBLOCK_LOG"]
open(_LOG + ".loaded", "w").close()

def _refuse(*args, **kwargs):
    with open(_LOG, "a") as f:
        f.write(repr(args[:2]) + "\\n")
    raise OSError(101, "network blocked by the test")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def test_loading_never_contacts_the_hub(hf_run: Path, tmp_path: Path) -> None:
    block = tmp_path / "netblock"
    block.mkdir()
    (block / "sitecustomize.py").write_text(NETBLOCK)
    log = tmp_path / "connections.log"
    env = _env(NETBLOCK_LOG=str(log), PYTHONPATH=f"{block}{os.pathsep}{ROOT}")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(var, None)
    run = tmp_path / "run"
    shutil.copytree(hf_run, run)
    # Intact, it loads and predicts with the network blocked.
    proc = _run("predict", "ner", "--model", run, "--text", "张三在北京", env=env)
    assert proc.returncode == 0, proc.stderr
    assert Path(str(log) + ".loaded").exists()  # the block was in place
    # Without encoder/, `--model best` (relative: it reads like a hub repo id) fails at once, offline.
    shutil.rmtree(run / "best" / "encoder")
    proc = _run("predict", "ner", "--model", "best", "--text", "张三", env=env, cwd=run)
    _one_line_error(proc, "encoder")
    assert not log.exists(), f"connections attempted: {log.read_text()}"


def test_custom_code_in_a_checkpoint_is_never_run(hf_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(hf_run, run)
    marker = tmp_path / "pwned"
    enc = run / "best" / "encoder"
    (enc / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((enc / "config.json").read_text())
    config["model_type"] = "evil-bert"  # a type transformers does not know: only the checkpoint's code has it
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (enc / "config.json").write_text(json.dumps(config))
    proc = _run("predict", "ner", "--model", run, "--text", "张三", input="n\n")
    _one_line_error(proc, "custom code")
    assert not marker.exists()


# --- 3. one writer per run ----------------------------------------------------------------------------------
def test_a_second_training_into_the_same_output_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _popen(*TRAIN_NER, "--output", run, "--epochs", "1000", "--save-every", "5", stdout=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (run / "last" / "train_state.pt").exists(), first)
        second = _run(*TRAIN_NER, "--output", run, "--overwrite", "--max-steps", "2")
        _one_line_error(second, f"pid {first.pid}")
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()  # SIGKILL: its lock file stays behind, stale
        first.wait()
    # The kill may land inside a swap of last/: last.new then holds the newest state, which --resume takes (and
    # last/ an older one). Reading last/ directly once gave an older step, and the resumed run, already at
    # step + 2, trained nothing and logged no `end` line: read what --resume reads.
    step = _step(run / "last")
    third = _run(*TRAIN_NER, "--output", run, "--resume", "--max-steps", str(step + 2))
    assert third.returncode == 0, third.stderr
    ends = [r["step"] for r in _log(run) if r["event"] == "end"]
    tail = (run / "train_log.jsonl").read_text()[-1500:]
    assert ends == [step + 2], f"resumed at {step}; stderr: {third.stderr[-1500:]}\nlog tail: {tail}"
    assert not (run / ".lock").exists()


# --- 4. one `error:` line instead of a traceback ------------------------------------------------------------
def _damage(ckpt: Path, how: str) -> None:
    if how == "empty weights":
        (ckpt / "model.safetensors").write_bytes(b"")
    elif how == "truncated weights":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "empty vocab":
        (ckpt / "vocab.json").write_text("{}")
    elif how == "another task's weights":
        shutil.copy(FIXTURES / "ie" / "model.safetensors", ckpt / "model.safetensors")
    elif how == "changed hidden size":
        meta = json.loads((ckpt / "config.json").read_text())
        meta["config"]["encoder"]["hidden_size"] = 48
        (ckpt / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "how", ["empty weights", "truncated weights", "empty vocab", "another task's weights", "changed hidden size"]
)
def test_a_damaged_checkpoint_is_one_error_line(ner_run: Path, tmp_path: Path, how: str) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ner_run / "best", ckpt)
    _damage(ckpt, how)
    _one_line_error(_run("predict", "ner", "--model", ckpt, "--text", "张三在北京"), str(ckpt))


class _Hostile:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["truncated", "hostile"])
def test_a_damaged_or_hostile_train_state_is_one_error_line(ner_run: Path, tmp_path: Path, how: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    state = run / "last" / "train_state.pt"
    marker = tmp_path / "pwned"
    if how == "truncated":
        state.write_bytes(state.read_bytes()[:300])
    else:
        torch.save({"step": 1, "payload": _Hostile(str(marker))}, state)
    proc = _run(*TRAIN_NER, "--output", run, "--resume", "--max-steps", "8")
    _one_line_error(proc, "train_state.pt")
    assert "weights_only" not in proc.stderr  # torch's advice would run the attacker's code
    assert not marker.exists()


def _unreadable(path: Path) -> list[str]:
    """Make `path` unreadable; the command prefix that makes it so for root too (no DAC override)."""
    path.chmod(0)
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot make a file unreadable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_an_unreadable_input_file_is_one_error_line(ner_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "张三在北京"}\n', encoding="utf-8")
    prefix = _unreadable(data)
    _one_line_error(_run("predict", "ner", "--model", ner_run, "--input", data, prefix=prefix), str(data))
    proc = _run("train", "ner", "--train", data, "--output", tmp_path / "o", *TINY, prefix=prefix)
    _one_line_error(proc, str(data))


def test_a_file_size_limit_while_saving_a_checkpoint_is_one_error_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Weights are ~80 kB: the first checkpoint cannot be written, the small log can.
    proc = _run(*TRAIN_NER, "--output", run, "--max-steps", "4", "--eval-every", "2", fsize=40_000)
    _one_line_error(proc, "cannot save the checkpoint")
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")] if run.exists() else []
    assert leftovers == []


def test_a_full_disk_or_size_limit_while_writing_predictions_is_one_error_line(ner_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "张三在北京的华为公司工作。"}\n' * 40, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    proc = _run("predict", "ner", "--model", ner_run, "--input", data, "--output", out, fsize=500)
    _one_line_error(proc, str(out))
    assert out.read_text() == "precious\n" and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
    with open("/dev/full", "w") as full:
        proc = _run("predict", "ner", "--model", ner_run, "--input", data, stdout=full)
    _one_line_error(proc, "No space left")


def test_bad_output_paths_are_one_error_line(ner_run: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(_run(*TRAIN_NER, "--output", afile, "--max-steps", "2"), str(afile))
    # A directory as --output is refused before any input is read: stdin stays open and unread here.
    proc = _popen("predict", "ner", "--model", ner_run, "--output", tmp_path, stdin=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    _one_line_error(subprocess.CompletedProcess([], proc.returncode, "", err), "directory")


def test_an_unexpected_error_is_one_line_with_a_debug_hint(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from nlpcli.commands.common import cli_errors

    @cli_errors
    def broken() -> None:
        raise ValueError("something nobody expected")

    with pytest.raises(typer.Exit) as exit_info:
        broken()
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: internal error: ValueError") and "--debug" in err
    with pytest.raises(typer.Exit):
        broken(debug=True)
    assert "Traceback" in capsys.readouterr().err
    # Usage errors raised inside a command stay usage errors (exit code 2), not internal errors.
    proc = _run("predict", "ner", "--model", "nowhere", "--input", "in.jsonl", "--text", "x")
    assert proc.returncode == 2 and "internal error" not in proc.stderr, proc.stderr


# --- 5. permissions follow the umask ------------------------------------------------------------------------
def test_outputs_honour_the_umask(ner_run: Path, tmp_path: Path) -> None:
    for path in [ner_run / "best", ner_run / "last"]:  # trained under umask 027
        assert path.stat().st_mode & 0o777 == 0o750, path
        for f in path.iterdir():
            assert f.stat().st_mode & 0o777 == 0o640, f
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "张三在北京"}\n', encoding="utf-8")
    new = tmp_path / "new.jsonl"
    assert _run("predict", "ner", "--model", ner_run, "--input", data, "--output", new, umask=0o022).returncode == 0
    assert new.stat().st_mode & 0o777 == 0o644
    old = tmp_path / "old.jsonl"
    old.write_text("x")
    old.chmod(0o664)
    assert _run("predict", "ner", "--model", ner_run, "--input", data, "--output", old, umask=0o077).returncode == 0
    assert old.stat().st_mode & 0o777 == 0o664 and old.read_text() != "x"  # a replaced file keeps its mode


# --- 6. empty input ------------------------------------------------------------------------------------------
def test_empty_predict_input_is_an_error(ner_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    for name, text in [("empty.jsonl", ""), ("blank.jsonl", " \n\n\t\n")]:
        data = tmp_path / name
        data.write_text(text)
        proc = _run("predict", "ner", "--model", ner_run, "--input", data, "--output", out)
        _one_line_error(proc, str(data), "empty")
    assert out.read_text() == "precious\n"
    _one_line_error(_run("predict", "ner", "--model", ner_run, input="\n  \n"), "empty")


# --- 7. resuming a finished run ---------------------------------------------------------------------------
def test_resuming_a_finished_run_does_nothing_and_says_so(ner_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ner_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = _run(*TRAIN_NER, "--output", run, "--resume", "--max-steps", "6")
    assert proc.returncode == 0, proc.stderr
    assert "already finished" in proc.stdout
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # no step, no checkpoint, no log line


# --- 8. SIGTERM is handled like Ctrl-C ---------------------------------------------------------------------
def test_sigterm_saves_training_state_and_exits_143(tmp_path: Path) -> None:
    run = tmp_path / ("a-long-directory-name-so-that-the-message-is-wider-than-eighty-columns" * 2) / "run"
    proc = _popen(
        *TRAIN_NER,
        "--output",
        run,
        "--epochs",
        "1000",
        "--save-every",
        "5",
        env=_env(COLUMNS="80"),
        stdout=subprocess.PIPE,
    )
    _wait_for(lambda: (run / "last" / "train_state.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    stopped = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "--resume" in stopped[0] and "Traceback" not in err  # one line at 80 columns
    assert torch.load(run / "last" / "train_state.pt", weights_only=True)["step"] >= 5


def test_sigterm_during_predict_leaves_no_temp_file(ner_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    proc = _popen("predict", "ner", "--model", ner_run, "--output", out, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write('{"text": "张三在北京"}\n')
    proc.stdin.flush()
    _wait_for(lambda: any(tmp_path.glob(".out.jsonl.*")), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert out.read_text() == "precious\n" and not list(tmp_path.glob(".out.jsonl.*"))


def test_sigterm_during_generate_keeps_the_lines_done_and_exits_143(tmp_path: Path) -> None:
    from nlpcli import api

    run = tmp_path / "lm"
    api.train("lm", ROOT / "samples" / "lm" / "train.txt", run, max_steps=5, embed_dim=16, hidden_size=16, threads=1)
    words = (ROOT / "samples" / "lm" / "keywords.txt").read_text(encoding="utf-8").split("\n")[0]
    keywords = tmp_path / "keywords.txt"
    keywords.write_text((words + "\n") * 400, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = _popen(
        "generate", "--model", run, "--input", keywords, "--output", out, "--steps", "400", "--batch-chains", "2"
    )
    _wait_for(lambda: any(p.stat().st_size for p in tmp_path.glob(".out.jsonl.*")), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err  # SIGTERM, not Ctrl-C's 130
    assert "interrupted: kept" in err and "Traceback" not in err
    kept = out.read_text(encoding="utf-8").splitlines()
    assert 0 < len(kept) < 400 and all(words.split()[0] in line for line in kept)


# --- 9. messages name their file and stay on one line ----------------------------------------------------
def test_skip_summary_stays_on_one_line_and_dev_errors_name_the_file(ner_run: Path, tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-directory-name-so-that-the-message-is-wider-than-eighty-columns" * 2)
    deep.mkdir()
    data = deep / "in.jsonl"
    data.write_text('{"text": "张三在北京"}\n{"no_text": 1}\n', encoding="utf-8")
    proc = _run("predict", "ner", "--model", ner_run, "--input", data, "--skip-bad", env=_env(COLUMNS="80"))
    assert proc.returncode == 0, proc.stderr
    assert len([x for x in proc.stderr.strip().splitlines() if not PROGRESS.match(x)]) == 1 and str(data) in proc.stderr
    # A dev file's problems name the dev file.
    chat_dev = tmp_path / "chat_dev.json"
    chat_dev.write_text('[\n["你 好"],\n["下 雨 了"]\n]\n', encoding="utf-8")
    chat = [
        "train",
        "chat",
        "--config",
        ROOT / "configs" / "tiny" / "chat.toml",
        "--train",
        SAMPLES / "chat" / "train.json",
    ]
    proc = _run(*chat, "--dev", chat_dev, "--output", tmp_path / "chat", "--max-steps", "1")
    _one_line_error(proc, str(chat_dev))
    ner_dev = tmp_path / "ner_dev.jsonl"
    ner_dev.write_text('{"text": "张三坐飞船", "label": {"ship": {"飞船": [[3, 4]]}}}\n', encoding="utf-8")
    proc = _run(*TRAIN_NER, "--output", tmp_path / "ner", "--dev", ner_dev, "--max-steps", "1")
    _one_line_error(proc, f"{ner_dev}:1", "ship")


# --- 10. an output path with a trailing slash ------------------------------------------------------------
def test_output_with_a_trailing_slash_is_a_directory_not_a_file(ner_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "newdir"
    proc = _run("predict", "ner", "--model", ner_run, "--text", "张三", "--output", f"{target}/")
    _one_line_error(proc, "directory")
    assert not target.exists()


# --- 11. stdin is answered as it arrives -------------------------------------------------------------------
def _read_line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no answer within {timeout} s"
    return stream.readline()


def test_predict_answers_a_slow_producer_line_by_line(ner_run: Path) -> None:
    proc = _popen("predict", "ner", "--model", ner_run, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for text in ["张三在北京", "李四去上海"]:
            proc.stdin.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            proc.stdin.flush()
            answer = json.loads(_read_line(proc.stdout, 300))  # the input stays open
            assert answer["text"] == text and "entities" in answer
        proc.stdin.close()
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
