"""The relation model: the shared encoder, subject pointers, and subject-conditioned object pointers per predicate.

Over the from-scratch DGCNN it adds a position embedding and one self-attention layer (docs/tasks/ie.md); a pretrained
(Hugging Face) encoder has its own positions and attention, so the heads read its output directly."""

from __future__ import annotations

import torch
from torch import nn

from ....nn.dgcnn import GatedDilatedBlock
from ....nn.encoder import Encoder, ScratchEncoder


class IeModel(nn.Module):
    """Encoder (DGCNN: + positions and self-attention), subject heads, subject-conditioned object heads."""

    def __init__(
        self,
        encoder: Encoder,
        num_predicates: int,
        max_positions: int = 512,
        attention_heads: int = 4,
        max_relative: int = 64,
        kernel_size: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__()
        d = encoder.out_dim
        scratch = isinstance(encoder, ScratchEncoder)
        self.encoder = encoder
        self.position = nn.Embedding(max_positions, d) if scratch else None
        self.attention = (
            nn.MultiheadAttention(d, attention_heads, dropout, batch_first=True)
            if scratch and attention_heads
            else None
        )
        self.attention_norm = nn.LayerNorm(d) if scratch else None
        self.subject_head = nn.Linear(d, 2)
        self.subject_proj = nn.Linear(2 * d, d)
        self.relative = nn.Embedding(max_relative + 1, d)
        self.max_relative = max_relative
        self.object_block = GatedDilatedBlock(d, 1, kernel_size, dropout)
        self.object_head = nn.Linear(d, 2 * num_predicates)
        self.num_predicates = num_predicates
        # Pointers are rare positives: start their biases at a small prior so early steps are not spent
        # pushing 2 x P x L sigmoid outputs down from 0.5 (a large, noisy initial loss).
        nn.init.constant_(self.subject_head.bias, -3.0)
        nn.init.constant_(self.object_head.bias, -5.0)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Shared features [B, L, d], zero at padding."""
        mask = batch["attention_mask"]
        keep = mask.unsqueeze(-1)
        if not isinstance(self.encoder, ScratchEncoder):  # a pretrained encoder: its own positions and attention
            h = self.encoder(batch)
            return h * keep.to(h.dtype)
        assert self.position is not None and self.attention_norm is not None
        char_ids = batch["char_ids"]
        pos = torch.arange(char_ids.shape[1], device=char_ids.device)
        x = self.encoder.embed(char_ids, batch.get("word_ids")) + self.position(pos)
        h = self.encoder.encode(x, mask)
        if self.attention is not None:
            a, _ = self.attention(h, h, h, key_padding_mask=~mask, need_weights=False)
            h = self.attention_norm(h + a) * keep.to(h.dtype)
        return h

    def subject_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, L, 2]: start and end logits."""
        return self.subject_head(h)

    def object_logits(
        self, h: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor
    ) -> torch.Tensor:
        """Object start/end logits [N, L, P, 2] for N (features, subject) pairs: h [N, L, d], start/end [N]."""
        rows = torch.arange(h.shape[0], device=h.device)
        subject = self.subject_proj(torch.cat([h[rows, start], h[rows, end]], -1))
        pos = torch.arange(h.shape[1], device=h.device)
        rel_start = (pos[None] - start[:, None]).abs().clamp(max=self.max_relative)
        rel_end = (pos[None] - end[:, None]).abs().clamp(max=self.max_relative)
        x = h + subject.unsqueeze(1) + self.relative(rel_start) + self.relative(rel_end)
        x = self.object_block(x, mask)
        return self.object_head(x).view(h.shape[0], h.shape[1], self.num_predicates, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: subject logits [B, L, 2] and object logits [B, L, P, 2] for the sampled subjects."""
        h = self.encode(batch)
        subject = batch["subject"]
        return self.subject_logits(h), self.object_logits(h, batch["attention_mask"], subject[:, 0], subject[:, 1])
