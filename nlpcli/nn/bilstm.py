"""A bidirectional LSTM over right-padded sequences, for the from-scratch char encoder (`encoder.name = "bilstm"`)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class BiLSTM(nn.Module):
    """A forward and a backward LSTM of `dim // 2` each, concatenated to `dim`.

    Each sequence is read backwards within its own length: its positions are reversed with a gather before the
    backward LSTM and put back after it, so padding never enters a real position's state. This does what
    `pack_padded_sequence` does, as ordinary tensor operations: the same graph exports to ONNX, and with
    batches of similar lengths (the pipelines bucket them) it is as fast."""

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.1):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"encoder bilstm needs an even hidden_size (two directions of half), got {dim}")
        self.forward_lstm = nn.LSTM(in_dim, dim // 2, batch_first=True)
        self.backward_lstm = nn.LSTM(in_dim, dim // 2, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], mask [B, L] (1 = real, real positions first) -> [B, L, dim], padding positions zero."""
        lengths = mask.sum(1, keepdim=True)
        steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        reverse = torch.where(steps < lengths, lengths - 1 - steps, steps)  # its own inverse
        ahead, _ = self.forward_lstm(x)
        back, _ = self.backward_lstm(x.gather(1, reverse.unsqueeze(-1).expand_as(x)))
        back = back.gather(1, reverse.unsqueeze(-1).expand_as(back))
        return self.dropout(torch.cat([ahead, back], -1)) * mask.unsqueeze(-1).to(x.dtype)
