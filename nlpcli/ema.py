"""Exponential moving average of model weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copy of floating-point parameters, updated after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up form (1+n)/(10+n) keeps early averages from clinging to the random init.
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with averaged weights in place of the raw ones."""
        return {k: self.shadow.get(k, v) for k, v in model.state_dict().items()}

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into the model."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(raw, strict=False)
