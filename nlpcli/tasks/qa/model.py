"""The readers: DGCNN (question attention-pooled into the passage) or a pretrained encoder over the question /
passage pair; both give start/end pointer logits gated by a 'has answer' logit, trained and decoded alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.dgcnn import DGCNN
from ...nn.encoder import HFEncoder, ScratchEncoder


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


def match_ids(p_ids: torch.Tensor, q_ids: torch.Tensor, p_question: torch.Tensor) -> torch.Tensor:
    """[N, Lp] bool: the passage token (char or word id) also occurs in its question; pad/unk never match."""
    q = q_ids[p_question]  # [N, Lq]
    hit = (p_ids.unsqueeze(-1) == q.unsqueeze(1)).any(-1)
    return hit & (p_ids > 1)


class QaModel(nn.Module):
    """Questions [Q, Lq] and passages [N, Lp] in one pass; passage n belongs to question `p_question[n]`.

    The shared encoder's embedding reads both; its DGCNN reads the passage (with the pooled question
    vector joined to every position); the question has a DGCNN of its own.

    Beyond the original DGCNN reader (on by default, see QaModelConfig): an exact-match embedding, whether each passage
    char / its jieba word occurs in the question. With a few thousand training questions the pooled
    question vector alone cannot tell the model *where* the question's words are; this tells it directly.
    """

    def __init__(
        self,
        encoder: ScratchEncoder,
        question_dilations: list[int],
        kernel_size: int = 3,
        dropout: float = 0.1,
        match_features: bool = False,
    ):
        super().__init__()
        dim = encoder.out_dim
        self.encoder = encoder
        self.match = nn.Embedding(4, dim) if match_features else None  # index: char hit + 2 * word hit
        self.q_encoder = DGCNN(dim, list(question_dilations), kernel_size, dropout)
        self.q_pool = AttentionPool(dim)
        self.p_input = nn.Linear(2 * dim, dim)
        self.p_pool = AttentionPool(2 * dim)
        self.has_answer = nn.Linear(2 * dim, 1)
        self.pointers = nn.Linear(2 * dim, 2)  # start and end logits

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits: start/end [N, Lp] and gate [N]; `pointer_probs` turns them into probabilities."""
        q_mask, p_mask = batch["q_mask"], batch["p_mask"]
        owner = batch["p_question"]
        embed = self.encoder.embed
        q = self.q_encoder(embed(batch["q_chars"], batch.get("q_words")), q_mask)
        qv = self.q_pool(q, q_mask)[owner]  # [N, d]
        p = embed(batch["p_chars"], batch.get("p_words"))
        if self.match is not None:
            hit = match_ids(batch["p_chars"], batch["q_chars"], owner).long()
            if "p_words" in batch:
                hit = hit + 2 * match_ids(batch["p_words"], batch["q_words"], owner).long()
            p = p + self.match(hit)
        qv_seq = qv.unsqueeze(1).expand(-1, p.shape[1], -1)
        p = self.encoder.encode(self.p_input(torch.cat([p, qv_seq], -1)), p_mask)
        h = torch.cat([p, qv_seq], -1)
        gate = self.has_answer(self.p_pool(h, p_mask)).squeeze(-1)
        start, end = self.pointers(h).unbind(-1)
        return {"start": start, "end": end, "gate": gate}


class EncoderReader(nn.Module):
    """A pretrained encoder reading a question and a passage window as one pair (`[CLS] q [SEP] window [SEP]`):
    start/end logits at every position (the pipeline masks all but the window's tokens) and the has-answer
    gate from the first token ([CLS])."""

    def __init__(self, encoder: HFEncoder):
        super().__init__()
        self.encoder = encoder
        self.pointers = nn.Linear(encoder.out_dim, 2)
        self.has_answer = nn.Linear(encoder.out_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encoder(batch)
        start, end = self.pointers(h).unbind(-1)
        return {"start": start, "end": end, "gate": self.has_answer(h[:, 0]).squeeze(-1)}


def pointer_probs(
    out: dict[str, torch.Tensor], mask: torch.Tensor, loss: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end probabilities, gated by the passage's 'has answer' score; 0 on padding.

    "softmax": a distribution over the passage's positions (as trained by `span_loss`);
    "focal": an independent sigmoid per position (as trained by `focal_loss`).
    """
    gate = torch.sigmoid(out["gate"].float()).unsqueeze(-1)
    if loss == "softmax":
        real = mask.bool()
        start, end = (torch.softmax(out[k].float().masked_fill(~real, -1e30), -1) for k in ("start", "end"))
    else:
        start, end = torch.sigmoid(out["start"].float()), torch.sigmoid(out["end"].float())
    return start * gate * mask, end * gate * mask


def span_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the gold positions (any of them) under a softmax over each passage that holds one.

    Passages without an answer are left to the gate's loss. Positions compete, so one peak is learnt
    from far fewer examples than with independent per-position sigmoids.
    """
    real = mask.bool()
    logits = logits.float().masked_fill(~real, -1e30)
    has = (target & real).any(1)
    gold = torch.logsumexp(logits.masked_fill(~(target & real), -1e30), 1)
    nll = torch.where(has, torch.logsumexp(logits, 1) - gold, torch.zeros_like(gold))
    return nll.sum() / has.sum().clamp(min=1)


def gate_loss(gate: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of 'this passage holds an answer'."""
    has = (target & mask.bool()).any(1)
    return F.binary_cross_entropy_with_logits(gate.float(), has.float())


def focal_loss(
    logits: torch.Tensor,
    gate: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Binary focal loss on p = sigmoid(logit) * sigmoid(gate), masked mean over positions."""
    log_p = F.logsigmoid(logits.float()) + F.logsigmoid(gate.float()).unsqueeze(-1)  # stable log of the product
    p = log_p.exp()
    log_not_p = torch.log1p(-p.clamp(max=1 - 1e-6))
    pos = -alpha * (1 - p).pow(gamma) * log_p
    neg = -(1 - alpha) * p.pow(gamma) * log_not_p
    loss = torch.where(target, pos, neg) * mask
    return loss.sum() / mask.sum().clamp(min=1)
