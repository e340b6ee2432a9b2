"""GlobalPointer over the shared encoder: span scores per entity type."""

from __future__ import annotations

import torch
from torch import nn

from ....nn.encoder import Encoder
from ....nn.globalpointer import EfficientGlobalPointer, GlobalPointer


class NerModel(nn.Module):
    def __init__(
        self, encoder: Encoder, num_types: int, head: str = "efficient", head_size: int = 64, rope: bool = True
    ):
        super().__init__()
        self.encoder = encoder
        head_cls = EfficientGlobalPointer if head == "efficient" else GlobalPointer
        self.head: EfficientGlobalPointer | GlobalPointer = head_cls(encoder.out_dim, num_types, head_size, rope=rope)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Span scores [B, types, L, L]; spans touching padding or special tokens are masked."""
        return self.head(self.encoder(batch), batch["span_mask"])
