"""Helpers for the tests: run the CLI in a subprocess against this checkout; find ../shared/data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLES = ROOT / "samples"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # One thread per process: tests run several processes at once (torchrun, pytest itself), and
    # oversubscribed cores make torch many times slower than one thread each.
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "200"
    return env


def as_from_a_terminal() -> None:
    """`preexec_fn` of a child that a test stops with SIGINT or SIGHUP: a suite started in the background
    (`cmd &`, nohup, a CI runner) inherits them ignored, and Python then never raises KeyboardInterrupt (nor
    saves on a hang-up); a terminal's child has the default disposition of both."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def run_cli(
    *args: str, input: str | None = None, check: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """`nlpcli ARGS` as a user would run it; returns the completed process (text mode)."""
    proc = subprocess.run(
        [sys.executable, "-m", "nlpcli.cli", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"nlpcli {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def told(stderr: str) -> list[str]:
    """The non-blank lines of a command's stderr, less the one saying what `precision = "auto"` chose (an
    announcement every verb that loads a model makes once, not an error)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("precision auto: ")]
