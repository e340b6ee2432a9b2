"""Training progress hooks (no torch here: the CLI builds its progress display from this before torch loads)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import TrainResult


class TrainCallbacks:
    """Hooks for showing progress; the default does nothing."""

    def on_start(self, total_steps: int, start_step: int, info: dict[str, Any]) -> None: ...

    def on_step(self, step: int, stats: dict[str, float]) -> None: ...

    def on_eval(self, step: int, metrics: dict[str, Any], is_best: bool) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...
