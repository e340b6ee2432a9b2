"""Causal language models (an LSTM or a GPT), one per direction, and their scoring and loss functions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ....config import DROPOUT, POSITIVE, Section, opt
from ....errors import ConfigError
from ....nn.gpt import GPT, GPTConfig

BOS = 2  # one boundary token serves as start (input) and end (target) of a sentence
SPECIALS = ["[PAD]", "[UNK]", "<s>"]


@dataclass
class LmModelConfig(Section):
    unit: str = opt("word", "Token unit: word (jieba words, capped vocabulary) | char.")
    # 10k words and 64-wide embeddings: what benchmarks/lm_cgmh.py measured best in its 15-minute budget.
    vocab_size: int = opt(10000, "Most frequent tokens kept in the vocabulary.")
    min_count: int = opt(2, "Training occurrences a token needs to enter the vocabulary.")
    arch: str = opt("lstm", "Language model per direction: lstm | transformer (a small GPT, nlpcli/nn/gpt.py).")
    embed_dim: int = opt(
        64, "Token embedding width of the LSTM (the output is tied to it; a GPT uses hidden_size).", **POSITIVE
    )
    hidden_size: int = opt(256, "LSTM / transformer width.", **POSITIVE)
    num_layers: int = opt(2, "LSTM / transformer layers per direction.", **POSITIVE)
    heads: int = opt(4, "Attention heads (transformer only).", **POSITIVE)
    dropout: float = opt(0.1, "Dropout on embeddings and between layers.", **DROPOUT)
    train_window: int = opt(64, "Tokens per training window; longer sentences are windowed, never cut.", **POSITIVE)
    positions: int = opt(66, "Position table size (transformer only; sentences the sampler grows must fit).")
    pack: bool = opt(
        False,
        "Train on packed windows: sentences joined by the boundary token into full train_window windows, no padding "
        "(each direction reads its own: the backward LM the window reversed). Evaluation stays per sentence.",
    )
    init: str = opt(
        "",
        "An lm checkpoint to continue training from (fine-tuning): its vocabulary and model fields are kept, "
        "but dropout and pack are this run's. Empty: new weights.",
    )

    # The fields that shape the weights (and the windows that fit them): an --init checkpoint's are kept.
    SHAPE: ClassVar[tuple[str, ...]] = (
        "unit",
        "vocab_size",
        "min_count",
        "arch",
        "embed_dim",
        "hidden_size",
        "num_layers",
        "heads",
        "train_window",
        "positions",
    )


class LstmLM(nn.Module):
    """One direction: embeddings -> LSTM -> output tied to the embeddings (plus a bias)."""

    def __init__(self, cfg: LmModelConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_size,
            cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.out = nn.Linear(cfg.hidden_size, cfg.embed_dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    @property
    def vocab_size(self) -> int:
        return self.bias.shape[0]

    def run_rnn(self, x: Any, state: Any = None) -> tuple[Any, Any]:
        """The LSTM over x (a tensor or a packed sequence), in fp32 even under bf16 autocast: oneDNN builds no
        bf16 LSTM on CPUs without native bf16 (an error, not a slow path), and the Linear layers around it are
        where bf16 pays."""
        with torch.autocast(self.bias.device.type, enabled=False):
            return self.rnn(x, state)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """States [B, L, E]; position t has read ids[:, :t+1] only (right padding never leaks left)."""
        h, _ = self.run_rnn(self.drop(self.embed(ids)))
        return self.drop(self.out(h))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.embed.weight.T + self.bias

    def read_prefix(
        self, inputs: torch.Tensor, lengths: torch.Tensor, scored: bool = False
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """log p(next token | the first `lengths` inputs of each row) [N, V], the LSTM state (h, c) after
        reading them, from which `continue_logprob` goes on, and (`scored`) the prefix's own log-probability
        [N]: log p(inputs[1:lengths] | inputs[0])."""
        inputs = inputs[:, : int(lengths.max())]
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.embed(inputs)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, state = self.run_rnn(packed)  # (h, c) at each row's own last input, in the original row order
        top = self.drop(self.out(state[0][-1]))
        own = None
        if scored:
            h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
            own = prefix_logprob(self, self.drop(self.out(h)), inputs, lengths)
        return torch.log_softmax(self.logits(top).float(), -1), state, own

    def continue_logprob(
        self,
        state: Any,
        group: int,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
        buckets: int = 8,
    ) -> torch.Tensor:
        """Per row of inputs [N * group, S]: sum over `mask` (a prefix of each row) of log p(target | prefix,
        inputs so far); rows n * group .. n * group + group - 1 continue prefix n of `state` (`read_prefix`).

        Suffix lengths vary widely, so rows are sorted by length and run in a few buckets, each padded only
        to its own longest row (measured: fewer wasted steps, and faster than packed sequences on CPU)."""
        chain = torch.arange(state[0].shape[1], device=inputs.device).repeat_interleave(group)
        state = tuple(t[:, chain] for t in state)
        n = mask.sum(1)
        out = torch.zeros(len(n), device=inputs.device)
        order = n.argsort(descending=True)
        order = order[n[order] > 0]
        for rows in order.chunk(buckets) if len(order) else ():
            width = int(n[rows[0]])
            x = self.drop(self.embed(inputs[rows, :width]))
            h, _ = self.run_rnn(x, tuple(t[:, rows] for t in state))
            out[rows] = target_logprob(self, self.drop(self.out(h)), targets[rows, :width], mask[rows, :width])
        return out


@dataclass
class PrefixCache:
    """What a GPT keeps of the prefixes it read: the KV cache and each row's prefix length; `rows`: the rows of
    `past` the prefixes are (a cache kept over whole sentences, read up to each prefix's length), None: all."""

    past: Any
    lengths: torch.Tensor
    rows: torch.Tensor | None = None


@dataclass
class RowCache:
    """A GPT's keys and values per layer [N, heads, W, d] and final states [N, W, D] over rows of inputs."""

    past: Any
    hidden: torch.Tensor


class GptLM(GPT):
    """One direction as a GPT without speakers (nlpcli/nn/gpt.py): the same GPT `chat --init` starts from."""

    def __init__(self, cfg: LmModelConfig, vocab_size: int):
        super().__init__(GPTConfig(vocab_size, cfg.hidden_size, cfg.num_layers, cfg.heads, cfg.positions, cfg.dropout))

    @property
    def vocab_size(self) -> int:
        return self.tok.num_embeddings

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Final states [B, L, D]; plain causal attention, so right padding never leaks left."""
        return self.ln_f(self.trunk(ids)[0])

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)

    def read_rows(self, inputs: torch.Tensor, used: int | None = None) -> RowCache:
        """Keys, values and final states of whole rows (right padding never leaks left); only the first `used`
        positions are read, the rest hold zeros (a kept cache fills them as its rows grow)."""
        used = inputs.shape[1] if used is None else used
        pad = inputs.shape[1] - used
        x, past = self.trunk(inputs[:, :used])
        past = tuple(tuple(F.pad(t, (0, 0, 0, pad)) for t in kv) for kv in past)
        return RowCache(past, F.pad(self.ln_f(x), (0, 0, 0, pad)))

    def read_prefix(
        self, inputs: torch.Tensor, lengths: torch.Tensor, scored: bool = False
    ) -> tuple[torch.Tensor, PrefixCache, torch.Tensor | None]:
        """log p(next token | the first `lengths` inputs of each row) [N, V], the KV cache of those inputs
        (keys past a row's length are masked when continuing), and (`scored`) the prefix's own log-probability."""
        inputs = inputs[:, : int(lengths.max())]
        x, past = self.trunk(inputs)
        h = self.ln_f(x[torch.arange(len(lengths), device=inputs.device), lengths - 1])
        own = prefix_logprob(self, self.ln_f(x), inputs, lengths) if scored else None
        return torch.log_softmax(self.logits(h).float(), -1), PrefixCache(past, lengths), own

    def continue_logprob(
        self,
        state: PrefixCache,
        group: int,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
        buckets: int = 4,
    ) -> torch.Tensor:
        """`LstmLM.continue_logprob` for a GPT: only the suffix positions run, each attending to its prefix's
        cached keys (read once per prefix, shared by its `group` rows) and to the suffix so far."""
        out = torch.zeros(mask.shape[0], device=inputs.device)
        for rows, w, h, _ in self._continue(state, group, inputs, mask, buckets):
            out[rows] = target_logprob(self, h, targets[rows, :w], mask[rows, :w])
        return out

    def read_on(self, state: PrefixCache, inputs: torch.Tensor, mask: torch.Tensor, buckets: int = 2) -> RowCache:
        """Keys, values and final states of inputs [N, S] read on from prefix n of `state` (one row each): what a
        kept cache takes on when a sentence changes from its prefix on. Positions outside `mask` hold zeros."""
        n, s = inputs.shape
        hidden = inputs.new_zeros(n, s, self.cfg.dim, dtype=torch.float)
        past: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
        for rows, w, h, new in self._continue(state, 1, inputs, mask, buckets):
            if not past:  # zeros of the dtype the model computes in (bf16 under autocast)
                hidden = hidden.to(h.dtype)
                past = tuple(
                    (k.new_zeros(n, k.shape[1], s, k.shape[3]), v.new_zeros(n, v.shape[1], s, v.shape[3]))
                    for k, v in new
                )
            hidden[rows, :w] = h
            for (k, v), (k_new, v_new) in zip(past, new):
                k[rows, :, :w], v[rows, :, :w] = k_new, v_new
        return RowCache(past, hidden)

    def _continue(
        self, state: PrefixCache, group: int, inputs: torch.Tensor, mask: torch.Tensor, buckets: int
    ) -> Iterator[tuple[torch.Tensor, int, torch.Tensor, Any]]:
        """(rows, width, final states, the new positions' cache) of the continuations, rows c * group ..
        c * group + group - 1 continuing prefix c. Prefixes are sorted by their rows' longest suffix and run in a
        few buckets, each cut to its own longest suffix and prefix (a loop over buckets, never over tokens)."""
        n_prefix = len(state.lengths)
        width = mask.reshape(n_prefix, group, -1).sum(2).amax(1)
        order = width.argsort(descending=True)
        order = order[width[order] > 0]
        steps = torch.arange(inputs.shape[1], device=inputs.device)
        for chains in order.chunk(buckets) if len(order) else ():
            w, p = int(width[chains[0]]), int(state.lengths[chains].max())
            rows = (chains[:, None] * group + torch.arange(group, device=inputs.device)).flatten()
            src = chains if state.rows is None else state.rows[chains]
            past = tuple((k[src, :, :p], v[src, :, :p]) for k, v in state.past)
            past_mask = torch.arange(p, device=inputs.device) < state.lengths[chains].unsqueeze(1)
            positions = state.lengths[chains].repeat_interleave(group).unsqueeze(1) + steps[:w]
            h, new = self.extend(inputs[rows, :w], positions, past, past_mask, group)
            yield rows, w, h, new


CausalLM = LstmLM | GptLM


class BiLM(nn.Module):
    """The forward LM and the backward LM (which reads sentences reversed)."""

    def __init__(self, cfg: LmModelConfig, vocab_size: int):
        super().__init__()
        if cfg.arch not in ("lstm", "transformer"):
            raise ConfigError(f"unknown arch {cfg.arch!r}; use lstm or transformer")
        kind = LstmLM if cfg.arch == "lstm" else GptLM
        self.fwd: CausalLM = kind(cfg, vocab_size)
        self.bwd: CausalLM = kind(cfg, vocab_size)


def lm_inputs(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS, x] inputs and [x, EOS] targets (PAD after the end) for right-padded token rows."""
    n = tokens.shape[0]
    bos = torch.full((n, 1), BOS, dtype=tokens.dtype, device=tokens.device)
    inputs = torch.cat([bos, tokens], 1)
    targets = torch.cat([tokens, torch.zeros_like(bos)], 1)
    targets.scatter_(1, lengths.unsqueeze(1), BOS)
    return inputs, targets


def reverse_rows(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first `length` tokens reversed, padding kept at the right."""
    pos = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    src = (lengths.unsqueeze(1) - 1 - pos).clamp(min=0)
    return torch.where(pos < lengths.unsqueeze(1), tokens.gather(1, src), torch.zeros_like(tokens))


def sentence_logprob(
    lm: CausalLM, tokens: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor | None = None
) -> torch.Tensor:
    """log p(x_start.., EOS | x_<start) per row: only the scored positions go through the softmax."""
    inputs, targets = lm_inputs(tokens, lengths)
    pos = torch.arange(inputs.shape[1], device=tokens.device).unsqueeze(0)
    keep = pos <= lengths.unsqueeze(1)
    if start is not None:
        keep &= pos >= start.unsqueeze(1)
    return target_logprob(lm, lm.hidden(inputs), targets, keep)


def target_logprob(
    lm: CausalLM, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, chunk: int = 128
) -> torch.Tensor:
    """Per row of h [N, L, E]: sum over `mask` of log p(target)."""
    return target_logprobs(lm, h, targets, mask, chunk).sum(1)


def target_logprobs(
    lm: CausalLM, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, chunk: int = 128
) -> torch.Tensor:
    """log p(target) at each position of h [N, L, E] in `mask`, 0 elsewhere; [N, L]. The softmax runs on masked
    positions only, a chunk at a time: a big batch of candidates never holds a [N, L, V] tensor, and a chunk's
    logits stay in cache (measured with a 10k vocabulary on one CPU thread: 128 positions at a time ran much
    faster than 2,048)."""
    h, targets = h[mask], targets[mask]
    out = torch.zeros(len(h), device=h.device)
    for i in range(0, len(h), chunk):
        logits = lm.logits(h[i : i + chunk]).float()
        out[i : i + chunk] = logits.gather(1, targets[i : i + chunk].unsqueeze(1)).squeeze(1) - torch.logsumexp(
            logits, -1
        )
    return torch.zeros(mask.shape, device=h.device).masked_scatter(mask, out)


def prefix_logprob(lm: CausalLM, h: torch.Tensor, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log p(inputs[1:length] | inputs[0]) per row, from the states h [N, L, E] over the inputs."""
    steps = torch.arange(inputs.shape[1] - 1, device=inputs.device)
    return target_logprob(lm, h[:, :-1], inputs[:, 1:], steps < (lengths - 1).unsqueeze(1))


def nll_sum(lm: CausalLM, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
    inputs, targets = lm_inputs(tokens, lengths)
    logits = lm.logits(lm.hidden(inputs))
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=0, reduction="sum")
    return nll, int(lengths.sum()) + len(lengths)


def window_nll_sum(lm: CausalLM, windows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """NLL summed over packed windows [B, L + 1] (inputs w[:-1], targets w[1:]; PAD targets skipped), and
    how many targets were scored."""
    targets = windows[:, 1:]
    logits = lm.logits(lm.hidden(windows[:, :-1]))
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=0, reduction="sum")
    return nll, int((targets != 0).sum())
