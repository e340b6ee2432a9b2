"""Gated dilated residual convolutions (DGCNN) and char+word embeddings."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..data.lexicon import PER_ROLE, ROLES


class GatedDilatedBlock(nn.Module):
    """[h, g] = Conv1D(2d, k, dilation r)(x*mask); g = sigmoid(dropout(g)); y = (x(1-g) + h g) * mask."""

    def __init__(
        self, dim: int, dilation: int = 1, kernel_size: int = 3, dropout: float = 0.1, in_dim: int | None = None
    ):
        super().__init__()
        in_dim = in_dim or dim
        self.conv = nn.Conv1d(
            in_dim, 2 * dim, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.residual = nn.Conv1d(in_dim, dim, 1, bias=False) if in_dim != dim else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], mask [B, L] (1 = real)."""
        m = mask.unsqueeze(1).to(x.dtype)
        return self.channels_first(x.transpose(1, 2) * m, m).transpose(1, 2)

    def channels_first(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x [B, D, L] already masked, m [B, 1, L]: the block in the layout its convolution reads, so a stack
        of blocks transposes once, not twice a block (such copies are a good part of a small DGCNN's time)."""
        h, g = self.conv(x).chunk(2, dim=1)
        g = torch.sigmoid(self.dropout(g))
        if self.residual is not None:
            x = self.residual(x)
        # x(1-g) + h g in one op; the residual stream keeps its dtype under autocast (bf16 convolutions).
        return torch.lerp(x, h.to(x.dtype), g.to(x.dtype)) * m


class DGCNN(nn.Module):
    """A stack of gated dilated blocks with the given dilation rates."""

    def __init__(self, dim: int, dilations: list[int], kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(GatedDilatedBlock(dim, r, kernel_size, dropout) for r in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], mask [B, L] (1 = real) -> [B, L, D]; each block's output is masked, so its input is."""
        m = mask.unsqueeze(1).to(x.dtype)
        h = x.transpose(1, 2) * m
        for block in self.blocks:
            h = cast(GatedDilatedBlock, block).channels_first(h, m)
        return h.transpose(1, 2)


class CharWordEmbedding(nn.Module):
    """Char embedding plus the (projected, bias-free) embedding of the jieba word each char belongs to, and of
    the two char bigrams it is in (the one it ends and the one it starts), and of the lexicon words it begins, is
    inside, ends and is (`data.lexicon`).

    A char width other than `dim` (pretrained char vectors are narrower) is projected to `dim` too."""

    def __init__(
        self,
        num_chars: int,
        dim: int,
        num_words: int = 0,
        word_dim: int = 0,
        dropout: float = 0.1,
        char_dim: int = 0,
        num_bigrams: int = 0,
        bigram_dim: int = 0,
        num_lexicon: int = 0,
        lexicon_dim: int = 0,
    ):
        super().__init__()
        char_dim = char_dim or dim
        self.chars = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.char_proj = nn.Linear(char_dim, dim, bias=False) if char_dim != dim else None
        self.words = nn.Embedding(num_words, word_dim, padding_idx=0) if num_words and word_dim else None
        self.word_proj = nn.Linear(word_dim, dim, bias=False) if self.words is not None else None
        self.bigrams = nn.Embedding(num_bigrams, bigram_dim, padding_idx=0) if num_bigrams and bigram_dim else None
        self.bigram_proj = nn.Linear(2 * bigram_dim, dim, bias=False) if self.bigrams is not None else None
        # Pretrained word vectors, kept fixed: a word the training text never holds keeps its place among the
        # words it was trained beside (data/lexicon.py).
        self.lexicon = nn.Embedding(num_lexicon, lexicon_dim, padding_idx=0) if num_lexicon and lexicon_dim else None
        if self.lexicon is not None:
            self.lexicon.weight.requires_grad_(False)
        self.lexicon_proj = nn.Linear(ROLES * lexicon_dim, dim, bias=False) if self.lexicon is not None else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        char_ids: torch.Tensor,
        word_ids: torch.Tensor | None = None,
        bigram_ids: torch.Tensor | None = None,
        lexicon_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.chars(char_ids)
        if self.char_proj is not None:
            x = self.char_proj(x)
        if self.words is not None and self.word_proj is not None and word_ids is not None:
            x = x + self.word_proj(self.words(word_ids))
        if self.bigrams is not None and self.bigram_proj is not None and bigram_ids is not None:
            # The input holds the pair each char starts; the pair it ends is its left neighbour's (none for the
            # first char: zeros). The slice's end comes from the shape: a negative end was fixed at the traced
            # length in the ONNX graph.
            starts = self.bigrams(bigram_ids)
            ends = torch.cat([torch.zeros_like(starts[:, :1]), starts[:, : starts.shape[1] - 1]], 1)
            x = x + self.bigram_proj(torch.cat([ends, starts], -1))
        if self.lexicon is not None and self.lexicon_proj is not None and lexicon_ids is not None:
            # [batch, chars * SLOTS] -> per char and role, the mean vector of the words matched (zeros: none).
            # A bag per char and role (row 0 is zeros: empty slots add nothing), faster in torch than gathering
            # the vectors and summing them. ONNX has no bag: the exporter writes embedding_bag as a loop over the
            # bags, which left the exported model at half torch's speed, so an export gathers and sums (two plain
            # operators; the same numbers).
            bags = lexicon_ids.reshape(-1, PER_ROLE)
            found = (bags > 0).to(x.dtype).sum(-1, keepdim=True).clamp(min=1.0)
            if torch.onnx.is_in_onnx_export():
                roles = self.lexicon(bags).sum(1) / found
            else:
                roles = nn.functional.embedding_bag(bags, self.lexicon.weight, mode="sum") / found
            x = x + self.lexicon_proj(roles.reshape(char_ids.shape[0], char_ids.shape[1], ROLES * roles.shape[-1]))
        return self.dropout(x)
