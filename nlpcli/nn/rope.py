"""Rotary position embedding, interleaved pairs (2t, 2t+1) with theta_t = 10000^(-2t/d)."""

from __future__ import annotations

import torch


def rope_tables(
    length: int, dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [length, dim], each frequency repeated for its pair."""
    if dim % 2:
        raise ValueError("RoPE needs an even head size")
    inv = 10000.0 ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., length, dim] by position: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    # A positive stacking axis and reshape, not dim=-1 and flatten(-2): the ONNX exporter (`nlpcli export`)
    # does not know the rank of the slices and stacks on the wrong axis.
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=x.dim()).reshape(x.shape)
    return x * cos + rotated * sin
