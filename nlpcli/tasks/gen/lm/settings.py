"""The CGMH sampler's settings: the `inference` section of an lm checkpoint (any may change per call)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ....config import PROBABILITY, Section, opt
from ....errors import ConfigError

PROPOSALS = ("full", "fast")


@dataclass
class SamplerSettings(Section):
    """The sampler's settings (the `inference` section of an lm checkpoint; any may change per call)."""

    top_k: int = opt(50, "Proposals per edit: the K words most likely under both directions' LMs.")
    p_replace: float = opt(0.3, "Probability of a replace move.", **PROBABILITY)
    p_insert: float = opt(0.3, "Probability of an insert move.", **PROBABILITY)
    p_delete: float = opt(0.3, "Probability of a delete move (skip takes the rest).", **PROBABILITY)
    min_len: int = opt(
        5,
        "Shortest sentence in tokens: deletes never go below it (with hard_min_len); shorter sentences are "
        "returned only when nothing longer was visited.",
    )
    # A floor, not only a ranking: a char sampler's chains otherwise stay near their keywords' length, where even
    # real sentences read worst per char (docs/results.md: lm + CGMH, the judge).
    hard_min_len: bool = opt(
        True,
        "Deletes never take a sentence below min_len: the target is the LM's distribution over sentences of at "
        "least min_len tokens (chains start from the keywords and grow). false: min_len only ranks the results.",
    )
    max_sentence_len: int = opt(40, "Longest sentence in tokens (keywords included).")
    chains: int = opt(2, "Chains per keyword set (at least num).")
    # 128: more sentences/s than 64 for both LMs (docs/results.md: lm + CGMH); 256 gained nothing more.
    batch_chains: int = opt(128, "Chains run side by side in one batch.")
    num: int = opt(3, "Sentences returned per keyword set, best first.")
    steps: int = opt(200, "Metropolis-Hastings steps per chain.")
    seed: int = opt(42, "Seed of the sampler (the same seed, keywords and batching give the same sentences).", low=None)
    keep_order: bool = opt(False, "Keywords appear in the given order.")
    batched: bool = opt(True, "Score candidate sentences in batches; false: one at a time (the speed baseline).")
    # fast: several times the sentences/s of full, full keyword coverage, and a judge NLL close to full's
    # (docs/results.md: lm + CGMH).
    proposal: str = opt(
        "fast",
        "full: score all top-K candidate sentences with the forward LM and draw by those scores; "
        "fast: draw by the two LMs' word probabilities alone and score only the drawn sentence (the acceptance "
        "ratio corrects for the difference: the same target, many times fewer sentences scored per step).",
    )

    def check(self) -> None:
        if self.steps < 1:
            raise ConfigError("--steps must be at least 1")
        if self.num < 1:
            raise ConfigError("--num must be at least 1")
        self.action_probs()
        if self.proposal not in PROPOSALS:
            raise ConfigError(f"unknown proposal {self.proposal!r}; use {' or '.join(PROPOSALS)}")
        if self.min_len > self.max_sentence_len:
            raise ConfigError(
                f"min_len {self.min_len} is above max_sentence_len {self.max_sentence_len}: no sentence fits both"
            )

    def action_probs(self) -> torch.Tensor:
        skip = 1.0 - self.p_replace - self.p_insert - self.p_delete
        if min(self.p_replace, self.p_insert, self.p_delete, skip) < 0 or self.p_insert <= 0 or self.p_delete <= 0:
            raise ConfigError("action probabilities must be >= 0, insert and delete > 0, and sum to at most 1")
        return torch.tensor([self.p_replace, self.p_insert, self.p_delete, skip])
