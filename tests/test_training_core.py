"""The shared trainer and checkpoint, through the CLI: resume, Ctrl-C, torchrun, bad input, safety."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from util import ROOT, SAMPLES, as_from_a_terminal, cli_env, run_cli

NER = SAMPLES / "ner"
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


def _cli_cmd(*args):
    return [sys.executable, "-m", "nlpcli.cli", *map(str, args)]


def _log(run):
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _wait_for(path, proc, timeout=900):
    """Wait for a file to appear while the process lives; the timeout only stops a hung test."""
    start = time.monotonic()
    while not path.exists():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            raise AssertionError(f"{path} never appeared (rc {proc.poll()}): {proc.stderr.read()}")
        time.sleep(0.05)


def test_resume_after_kill_reaches_the_same_step_and_weights(tmp_path):
    args = [
        "train",
        "ner",
        "--train",
        NER / "train.jsonl",
        "--dev",
        NER / "dev.jsonl",
        "--max-steps",
        "200",
        "--save-every",
        "10",
        "--eval-every",
        "100",
        *TINY,
    ]
    straight = tmp_path / "straight"
    run_cli(*args, "--output", straight, check=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli_cmd(*args, "--output", killed),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(killed / "last" / "train_state.pt", proc)
    proc.kill()  # SIGKILL: no chance to save anything more
    proc.wait()
    saved_step = torch.load(killed / "last" / "train_state.pt", weights_only=True)["step"]
    assert 0 < saved_step < 200
    run_cli(*args, "--output", killed, "--resume", check=True)
    steps = [r["step"] for r in _log(killed) if r["event"] == "end"]
    assert steps == [200]
    a = load_file(straight / "last" / "model.safetensors")
    b = load_file(killed / "last" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_ctrl_c_saves_state_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cli_cmd(
            "train",
            "ner",
            "--train",
            NER / "train.jsonl",
            "--output",
            run,
            "--epochs",
            "1000",
            "--save-every",
            "5",
            *TINY,
        ),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    _wait_for(run / "last" / "train_state.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    state = torch.load(run / "last" / "train_state.pt", weights_only=True)
    assert state["step"] >= 5
    assert not list(run.glob(".last.*")), "a temporary checkpoint was left behind"


def test_torchrun_two_processes_write_one_checkpoint(tmp_path):
    run = tmp_path / "ddp"
    env = cli_env()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "nlpcli.cli",
            "train",
            "ner",
            "--train",
            NER / "train.jsonl",
            "--dev",
            NER / "dev.jsonl",
            "--output",
            run,
            "--max-steps",
            "6",
            *TINY,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ends = [r for r in _log(run) if r["event"] == "end"]
    assert len(ends) == 1 and ends[0]["step"] == 6  # rank 0 alone writes
    assert (run / "best" / "model.safetensors").exists()
    assert sorted(p.name for p in run.iterdir()) == ["best", "last", "train_log.jsonl"]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("core") / "run"
    run_cli(
        "train",
        "ner",
        "--train",
        NER / "train.jsonl",
        "--dev",
        NER / "dev.jsonl",
        "--output",
        run,
        "--max-steps",
        "4",
        *TINY,
        check=True,
    )
    return run


def _one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    # the line saying what precision auto chose (test_precision.py) is not an error
    lines = [
        line for line in proc.stderr.strip().splitlines() if line.strip() and not line.startswith("precision auto")
    ]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_bad_training_inputs_fail_with_one_line(tmp_path, small_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "张三"}\n{"text": "李四", "label": {"name": {"李四": [[0, 9]]}}}\n', encoding="utf-8")
    _one_line_error(run_cli("train", "ner", "--train", bad, "--output", tmp_path / "o"), f"{bad}:2", "outside")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    _one_line_error(run_cli("train", "ner", "--train", empty, "--output", tmp_path / "o"), "empty")
    _one_line_error(
        run_cli("train", "ner", "--train", tmp_path / "missing.json", "--output", tmp_path / "o"), "no such file"
    )
    # An option the task does not have is a usage error (exit code 2), as in test_cli_everyday.py.
    proc = run_cli("train", "ner", "--train", NER / "train.jsonl", "--output", tmp_path / "o", "--no-such-option", "3")
    assert proc.returncode == 2 and "--no-such-option" in proc.stderr
    # An existing model is never overwritten by accident.
    _one_line_error(run_cli("train", "ner", "--train", NER / "train.jsonl", "--output", small_model), "--overwrite")


def test_skip_bad_trains_and_counts(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    good = (NER / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    mixed.write_text("\n".join([*good[:20], "{broken", '{"no_text": 1}', *good[20:]]) + "\n", encoding="utf-8")
    proc = run_cli(
        "train",
        "ner",
        "--train",
        mixed,
        "--output",
        tmp_path / "o",
        "--max-steps",
        "2",
        "--skip-bad",
        "--json",
        *TINY,
        check=True,
    )
    summary = json.loads(proc.stdout)
    assert summary["skipped_bad_records"] == 2 and summary["train_examples"] + summary["dev_examples"] == 40


def test_checkpoint_of_another_task_or_newer_format_is_refused(tmp_path, small_model):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(small_model / "best", other)
    meta = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(meta | {"task": "ie"}))
    _one_line_error(run_cli("evaluate", "ner", "--model", other, "--data", NER / "dev.jsonl"), "'ie' checkpoint")
    (other / "config.json").write_text(json.dumps(meta | {"format_version": 99}))
    _one_line_error(run_cli("evaluate", "ner", "--model", other, "--data", NER / "dev.jsonl"), "newer")
    _one_line_error(run_cli("predict", "ner", "--model", tmp_path / "nothing"), "no such checkpoint")


def test_predict_bad_line_keeps_existing_output(tmp_path, small_model):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"text": "张三在北京"}\n{"text": 5}\n', encoding="utf-8")
    _one_line_error(run_cli("predict", "ner", "--model", small_model, "--input", bad, "--output", out), f"{bad}:2")
    assert out.read_text(encoding="utf-8") == "precious\n"
    assert not list(tmp_path.glob(".out.jsonl.*"))
    proc = run_cli("predict", "ner", "--model", small_model, "--input", bad, "--output", out, "--skip-bad")
    assert proc.returncode == 0 and "skipped 1" in proc.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


def test_info_and_unbuilt_verbs(tmp_path):
    proc = run_cli("info", check=True)
    assert "torch" in proc.stdout and "ner" in proc.stdout
    proc = run_cli("info", "ner", check=True)
    assert "--head" in proc.stdout and "--encoder" in proc.stdout
    proc = run_cli("train", "nope", "--train", "x", "--output", "y")  # a usage error, exit code 2
    assert proc.returncode == 2 and "unknown task 'nope'" in proc.stderr
