"""The DGCNN reader: question attention-pooled into the passage, start/end pointers gated by 'has answer'."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.dgcnn import DGCNN, CharWordEmbedding


def _rates(spec: str) -> list[int]:
    return [int(r) for r in str(spec).split(",") if r.strip()]


class AttentionPool(nn.Module):
    """softmax(w . tanh(W x)) over real positions, then the weighted sum of x."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.score(torch.tanh(self.proj(x))).squeeze(-1)
        # The dtype's minimum rather than -1e12, which overflows in half precision.
        a = a.masked_fill(~mask, torch.finfo(a.dtype).min)
        return (torch.softmax(a, dim=-1).unsqueeze(-1) * x).sum(1)


class QaModel(nn.Module):
    """Questions [Q, Lq] and passages [N, Lp] in one pass; passage n belongs to question `p_question[n]`."""

    def __init__(self, num_chars: int, num_words: int, dim: int, word_dim: int, question_dilations: str,
                 passage_dilations: str, kernel_size: int = 3, dropout: float = 0.1, embed_dropout: float = 0.1):
        super().__init__()
        self.embed = CharWordEmbedding(num_chars, dim, num_words, word_dim, embed_dropout)
        self.q_encoder = DGCNN(dim, _rates(question_dilations), kernel_size, dropout)
        self.q_pool = AttentionPool(dim)
        self.p_input = nn.Linear(2 * dim, dim)
        self.p_encoder = DGCNN(dim, _rates(passage_dilations), kernel_size, dropout)
        self.p_pool = AttentionPool(2 * dim)
        self.has_answer = nn.Linear(2 * dim, 1)
        self.pointers = nn.Linear(2 * dim, 2)  # start and end logits

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits: start/end [N, Lp] and gate [N] (probability = sigmoid(pointer) * sigmoid(gate))."""
        q_mask, p_mask = batch["q_mask"], batch["p_mask"]
        q = self.q_encoder(self.embed(batch["q_chars"], batch.get("q_words")), q_mask)
        qv = self.q_pool(q, q_mask)[batch["p_question"]]  # [N, d]
        p = self.embed(batch["p_chars"], batch.get("p_words"))
        qv_seq = qv.unsqueeze(1).expand(-1, p.shape[1], -1)
        p = self.p_encoder(self.p_input(torch.cat([p, qv_seq], -1)), p_mask)
        h = torch.cat([p, qv_seq], -1)
        gate = self.has_answer(self.p_pool(h, p_mask)).squeeze(-1)
        start, end = self.pointers(h).unbind(-1)
        return {"start": start, "end": end, "gate": gate}


def pointer_probs(out: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end probabilities, gated by the passage's 'has answer' score; 0 on padding."""
    gate = torch.sigmoid(out["gate"].float()).unsqueeze(-1)
    start = torch.sigmoid(out["start"].float()) * gate
    end = torch.sigmoid(out["end"].float()) * gate
    return start * mask, end * mask


def focal_loss(logits: torch.Tensor, gate: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss on p = sigmoid(logit) * sigmoid(gate), masked mean over positions."""
    log_p = F.logsigmoid(logits.float()) + F.logsigmoid(gate.float()).unsqueeze(-1)  # stable log of the product
    p = log_p.exp()
    log_not_p = torch.log1p(-p.clamp(max=1 - 1e-6))
    pos = -alpha * (1 - p).pow(gamma) * log_p
    neg = -(1 - alpha) * p.pow(gamma) * log_not_p
    loss = torch.where(target, pos, neg) * mask
    return loss.sum() / mask.sum().clamp(min=1)
