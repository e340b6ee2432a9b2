"""What every benchmark shares: one way to run `nlpcli`, and one result envelope.

The envelope records what a reader needs to rerun and trust a figure: the exact command, the git commit,
torch/transformers versions, torch threads, the load average at start and end (the machine is shared,
and timings move with it), and when it ran.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; NLPCLI_SHARED_DATA points elsewhere (a copy on another machine).
DATA = Path(os.environ.get("NLPCLI_SHARED_DATA") or ROOT.parent / "shared" / "data")
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def nlpcli(*args: Any, capture: bool = True) -> str:
    """Run `nlpcli ARGS` from the repository root (printing the command); stop the benchmark if it fails."""
    cmd = [sys.executable, "-m", "nlpcli.cli", *map(str, args)]
    print("$ nlpcli " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode != 0:
        sys.exit(f"command failed with exit code {proc.returncode}")
    return proc.stdout or ""


def preset(name: str) -> str:
    """Path of a preset in configs/ (what the benchmark trains with; the README quotes the same file)."""
    path = CONFIGS / name
    if not path.is_file():
        sys.exit(f"no preset {path}")
    return str(path.relative_to(ROOT))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def cpu_model() -> str:
    """The CPU's model name and logical core count (figures move with both)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"unknown ({os.cpu_count()} logical cores)"


class Run:
    """One benchmark run: start it first (load average, clock), then `finish` with its figures."""

    def __init__(self) -> None:
        self.started = time.time()
        self.load_start = os.getloadavg()
        self.command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])

    def envelope(self) -> dict[str, Any]:
        import torch

        from nlpcli.device import native_bf16_feature

        try:
            import transformers

            tf_version = transformers.__version__
        except ImportError:
            tf_version = "not installed"
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        )
        return {
            "command": self.command,
            "git_commit": commit.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else ""),
            "date": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.time() - self.started, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "cpu": cpu_model(),
            # what `precision = "auto"` reads: bf16 autocast only where the CPU multiplies bf16 natively
            "cpu_native_bf16": native_bf16_feature(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "transformers": tf_version,
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": [round(x, 2) for x in self.load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        }

    def finish(self, name: str, figures: dict[str, Any]) -> Path:
        """Write benchmarks/results/NAME.json: the envelope, then the figures; print it."""
        out = RESULTS / f"{name}.json"
        result = self.envelope() | figures
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result, ensure_ascii=False, indent=2))
        print(f"wrote {out.relative_to(ROOT)}")
        return out
