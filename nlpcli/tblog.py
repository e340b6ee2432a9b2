"""Optional TensorBoard logging (`--tensorboard DIR`) through torch's own SummaryWriter.

The writer needs the `tensorboard` package (`pip install tensorboard`, or nlpcli's `[tensorboard]` extra);
without it `--tensorboard` stops before training with one line saying so.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

SKIP = {"event", "step", "epoch", "is_best", "progress", "elapsed_s", "main_metric"}


def require() -> None:
    """Raise a ConfigError when TensorBoard logging cannot work here."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or nlpcli[tensorboard])"
        ) from None


def open_writer(directory: str) -> Any:
    require()
    from torch.utils.tensorboard import SummaryWriter

    try:
        return SummaryWriter(log_dir=directory)
    except OSError as e:
        raise ConfigError(f"{directory}: cannot write TensorBoard logs ({e.strerror or e})") from None


def write_scalars(writer: Any, record: dict[str, Any]) -> None:
    """One train_log.jsonl record as scalars: `train/loss`, `train/lr`, `train/tokens_per_s`, ... for a step,
    `dev/<metric>` for each number of an evaluation (nested per-type tables left out)."""
    prefix = "train" if record["event"] == "step" else "dev"
    for key, value in record.items():
        if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        writer.add_scalar(f"{prefix}/{key}", value, record["step"])
    writer.flush()
