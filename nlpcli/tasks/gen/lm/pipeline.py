"""Forward and backward language models in one checkpoint (the proposal and target models of CGMH)."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ....config import TaskConfig, TrainerConfig, opt
from ....data import vocab as V
from ....data.batching import bucket_batches, pad_ids, windows
from ....data.io import ReadStats
from ....errors import CheckpointError, ConfigError, DataError, NlpcliError
from ....registry import register_task
from ...base import InputField, Pipeline
from .cgmh import StepStats
from .data import FORMATS, KeywordLine, Sentence, read_keyword_file, read_sentences
from .generation import Generation, check_keywords, iter_generate
from .model import (
    BOS,
    SPECIALS,
    BiLM,
    CausalLM,
    LmModelConfig,
    nll_sum,
    reverse_rows,
    sentence_logprob,
    window_nll_sum,
)
from .settings import SamplerSettings


@dataclass
class LmInference(SamplerSettings):
    batch_size: int = opt(128, "Sentences per forward pass when scoring; keyword sets per sampler call.")


@dataclass
class LmConfig(TaskConfig):
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=10, batch_size=64, lr=2e-3, warmup_steps=200)
    )
    model: LmModelConfig = field(default_factory=LmModelConfig)
    inference: LmInference = field(default_factory=LmInference)
    RENAMES = (
        TaskConfig.RENAMES
        | {
            f"gen_{k}": f"inference.{k}"
            for k in ("top_k", "p_replace", "p_insert", "p_delete", "min_len", "chains", "batch_chains")
        }
        | {"gen_max_len": "inference.max_sentence_len"}
    )
    # `max_len` meant the training window in `model` and the longest sentence in `inference` (format 2).
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {
        "model.max_len": ("model.train_window",),
        "inference.max_len": ("inference.max_sentence_len",),
    }


@register_task
class LmPipeline(Pipeline):
    name = "lm"
    summary = "forward + backward language models for CGMH sentence generation from keywords"
    input_fields = (
        InputField("words", "words", repeats=True, help="the keywords every sentence holds", aliases=("--word",)),
    )
    example: ClassVar[dict[str, Any]] = {"words": ["北京", "游客"]}
    output_help = '"sentences": [{text, score}] (CGMH; see also `nlpcli generate`).'
    Config = LmConfig
    main_metric = "nll"
    higher_is_better = False
    formats = FORMATS
    sampled = True
    config: LmConfig
    model: BiLM

    def __init__(self, config: LmConfig, assets: dict[str, Any], model: BiLM):
        super().__init__(config, assets, model)
        self.vocab = V.Vocab(assets["tokens"])

    # What the CGMH sampler reads (cgmh.KeywordLM).
    @property
    def fwd(self) -> CausalLM:
        return self.model.fwd

    @property
    def bwd(self) -> CausalLM:
        return self.model.bwd

    @property
    def itos(self) -> list[str]:
        return self.vocab.itos

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[Sentence], ReadStats]:
        return read_sentences(path, fmt, skip_bad)

    @classmethod
    def create(cls, config: LmConfig, train_examples: list[Sentence]) -> LmPipeline:
        m = config.model
        if m.init:
            return cls.continued(config)
        if m.unit not in ("word", "char"):
            raise ConfigError(f"unknown unit {m.unit!r}; use word or char")
        counts: Counter = Counter()
        for ex in train_examples:
            counts.update(tokenize(ex, m.unit))
        vocab = V.Vocab.build(counts, m.min_count, m.vocab_size, specials=SPECIALS)
        return cls.build(config, {"tokens": vocab.to_list()})

    @classmethod
    def continued(cls, config: LmConfig) -> LmPipeline:
        """A pipeline holding the weights and vocabulary of the lm checkpoint `model.init` (its shape fields
        replace this run's), to train on."""
        base = LmPipeline.load(config.model.init)
        shape = {f"model.{k}": getattr(base.config.model, k) for k in LmModelConfig.SHAPE}
        pipe = cls.build(config.updated(shape), base.assets)
        pipe.model.load_state_dict(base.model.state_dict())
        return pipe

    @classmethod
    def build(cls, config: LmConfig, assets: dict[str, Any], directory: Path | None = None) -> LmPipeline:
        m, inf = config.model, config.inference
        if m.arch == "transformer" and inf.max_sentence_len + 2 > m.positions:
            raise ConfigError(
                f"inference.max_sentence_len {inf.max_sentence_len} does not fit the model's {m.positions} "
                f"positions (at most {m.positions - 2})"
            )
        if m.arch == "transformer" and m.train_window + 1 > m.positions:
            raise ConfigError(
                f"model.train_window {m.train_window} (+1 for the start token) does not fit the model's "
                f"{m.positions} positions (raise --positions)"
            )
        return cls(config, assets, BiLM(m, len(assets["tokens"])))

    @classmethod
    def adapt_state(cls, config: TaskConfig, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
        if any(".blocks.layers." in k for k in state):
            raise CheckpointError(
                f"{path}: an lm transformer of an older nlpcli (nn.TransformerEncoder weights), which this "
                "version no longer builds (its transformer is the GPT of nlpcli/nn/gpt.py); retrain it"
            )
        return state

    @classmethod
    def saved_config(cls, ckpt: Any) -> TaskConfig:
        config = super().saved_config(ckpt)
        if ckpt.format_version == 1:  # format 1 sized the position table from both lengths
            positions = max(ckpt.config.get("max_len", 64), ckpt.config.get("gen_max_len", 40)) + 2
            # ... and kept no sampler seed: it sampled with 0, the default then (42 now, like every seed)
            config = config.updated({"model.positions": positions, "inference.seed": 0})
        inference = ckpt.config if ckpt.format_version == 1 else ckpt.config.get("inference", {})
        if "proposal" not in inference:  # saved before the fast proposal (the default now): keep its sampler
            config = config.updated({"inference.proposal": "full"})
        if "hard_min_len" not in inference:  # saved when min_len only ranked the results: likewise
            config = config.updated({"inference.hard_min_len": False})
        return config

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, ex: Sentence) -> list[int]:
        return self.vocab.ids(tokenize(ex, self.config.model.unit))

    def training_examples(self, examples: list[Sentence]) -> list[list[int]] | list[torch.Tensor]:
        """Per sentence token ids (windowed), or packed windows with `model.pack`."""
        return self.packed_windows(examples) if self.config.model.pack else self.sentence_windows(examples)

    def packed_windows(self, examples: list[Sentence]) -> list[torch.Tensor]:
        """The sentences as one stream `<s> s1 <s> s2 ... <s>`, cut into windows of train_window + 1 tokens that
        overlap by one (inputs w[:-1], targets w[1:]: every token a target exactly once); only the last window
        is padded. The backward LM reads each window reversed: a window of the reversed stream."""
        size = self.config.model.train_window
        stream = array("i")
        for ex in examples:
            stream.append(BOS)
            stream.extend(self.encode(ex))
        stream.append(BOS)
        n = max(1, math.ceil((len(stream) - 1) / size))
        flat = torch.zeros(n * size + 1, dtype=torch.int32)
        flat[: len(stream)] = torch.frombuffer(stream, dtype=torch.int32)
        return list(flat.unfold(0, size + 1, size))

    def sentence_windows(self, examples: list[Sentence]) -> list[list[int]]:
        """Token ids per sentence; sentences longer than train_window become consecutive windows."""
        out: list[list[int]] = []
        for ex in examples:
            ids = self.encode(ex)
            out.extend(
                ids[w.start : w.end] for w in windows(len(ids), self.config.model.train_window, 0) if w.end > w.start
            )
        return out

    def example_length(self, example: list[int] | torch.Tensor) -> int:
        return len(example)

    def collate(self, examples: list[list[int]] | list[torch.Tensor]) -> dict[str, Any]:
        """Sentences: right-padded token rows (the LMs add <s> and the end token); packed windows: as they are."""
        if examples and isinstance(examples[0], torch.Tensor):
            rows = torch.stack(examples).long()  # no PAD inside a window: padding is at the stream's end only
            return {"windows": rows, "lengths": (rows != 0).sum(1), "_tokens": int((rows[:, 1:] != 0).sum())}
        tokens = pad_ids(examples)
        lengths = torch.tensor([len(e) for e in examples])
        return {"tokens": tokens, "lengths": lengths, "_tokens": int(lengths.sum()) + len(examples)}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        model = getattr(model, "module", model)  # the BiLM inside a DDP wrapper
        assert isinstance(model, BiLM)
        if "windows" in batch:  # packed: only the last window of the stream has padding, at its right
            nll_f, n = window_nll_sum(model.fwd, batch["windows"])
            nll_b, _ = window_nll_sum(model.bwd, reverse_rows(batch["windows"], batch["lengths"]))
            return (nll_f + nll_b) / (2 * max(n, 1))
        nll_f, n = nll_sum(model.fwd, batch["tokens"], batch["lengths"])
        nll_b, _ = nll_sum(model.bwd, reverse_rows(batch["tokens"], batch["lengths"]), batch["lengths"])
        return (nll_f + nll_b) / (2 * n)

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, examples: list[Sentence] | list[list[int]], batch_size: int | None = None) -> dict[str, Any]:
        """Per-token NLL (nats, end token included) and perplexity of both directions."""
        data = self._token_ids(examples)
        if not data:
            files = sorted({ex.path for ex in examples if isinstance(ex, Sentence) and ex.path})
            raise DataError(", ".join(files) or "evaluation data", "no sentences to evaluate")
        self.model.eval()
        sums, n, unk = [0.0, 0.0], 0, 0
        for idx in bucket_batches(
            [len(e) for e in data], batch_size or self.config.inference.batch_size, shuffle=False
        ):
            batch = self.to_device(self.collate([data[i] for i in idx]))
            f, n_b = nll_sum(self.model.fwd, batch["tokens"], batch["lengths"])
            b, _ = nll_sum(self.model.bwd, reverse_rows(batch["tokens"], batch["lengths"]), batch["lengths"])
            sums[0] += float(f)
            sums[1] += float(b)
            n += n_b
            unk += int((batch["tokens"] == V.UNK).sum())
        nll_f, nll_b = sums[0] / n, sums[1] / n
        return {
            "nll": (nll_f + nll_b) / 2,
            "nll_fwd": nll_f,
            "nll_bwd": nll_b,
            "ppl_fwd": math.exp(nll_f),
            "ppl_bwd": math.exp(nll_b),
            "tokens": n,
            "sentences": len(data),
            "unk_rate": unk / max(n - len(data), 1),
        }

    def _token_ids(self, examples: list[Sentence] | list[list[int]]) -> list[list[int]]:
        """Sentences as the model's token windows; token ids as they are."""
        if examples and isinstance(examples[0], Sentence):
            return self.sentence_windows(examples)
        return examples  # type: ignore[return-value]

    @torch.no_grad()
    def token_nll(self, texts: list[str], batch_size: int | None = None, total: bool = False) -> list[float]:
        """Mean forward-LM NLL per token (end token included) of each text; `total`: the sum instead."""
        ids = [self.encode(Sentence(t)) for t in texts]
        out = [0.0] * len(ids)
        self.model.eval()
        for idx in bucket_batches([len(e) for e in ids], batch_size or self.config.inference.batch_size, shuffle=False):
            batch = self.to_device(self.collate([ids[i] for i in idx]))
            lp = sentence_logprob(self.model.fwd, batch["tokens"], batch["lengths"])
            for i, v, length in zip(idx, lp.tolist(), batch["lengths"].tolist()):
                out[i] = -v if total else -v / (length + 1)
        return out

    # --- prediction: `nlpcli predict lm` generates for {"words": [...]} records ----------------
    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        words = record.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(path, "expected a field 'words' holding a list of strings", line)
        try:
            self.check_keywords(words)
        except NlpcliError as e:
            raise DataError(path, str(e), line) from None

    def preprocess(self, record: dict[str, Any]) -> list[list[str]]:
        return [record["words"]]

    def forward(self, pieces: list[list[str]], **params: Any) -> list[Generation]:
        return list(self.iter_generate(pieces))

    def postprocess(self, record: dict[str, Any], parts: list[tuple[list[str], Generation]]) -> dict[str, Any]:
        """Adds `sentences`: [{text, score}] (best first) to a {"words": [...]} record."""
        return {**record, "sentences": parts[0][1].sentences}

    methods: ClassVar[tuple[str, ...]] = ("generate",)

    def generate(self, words: Sequence[str] | Sequence[Sequence[str]], **settings: Any) -> Any:
        """Sentences holding every keyword, best first ([{text, score}]) for one keyword list, or a list of
        those for a list of keyword lists; `settings` override the sampler's (`num=5`, `steps=400`, `seed=1`)."""
        single = bool(words) and all(isinstance(w, str) for w in words)
        sets = [list(words)] if single else [list(ws) for ws in words]
        out = [g.sentences for g in self.iter_generate(sets, **settings)]  # type: ignore[arg-type]
        return out[0] if single else out

    def iter_generate(
        self, keyword_sets: list[list[str]], stats: StepStats | None = None, **settings: Any
    ) -> Iterator[Generation]:
        """CGMH over keyword sets (the one way in: `generate`, `predict lm` and `nlpcli generate` come here): each
        set's result as soon as its batch of chains is done; `stats` counts the sampler's work."""
        return iter_generate(self, keyword_sets, self.sampler(**settings), stats)

    def sampler(self, **settings: Any) -> SamplerSettings:
        """The sampler's settings: the inference section, with `settings` over it."""
        return self.config.inference.updated(settings, "inference.") if settings else self.config.inference

    def check_keywords(self, words: list[str]) -> list[list[int]]:
        """Token ids of each keyword, or a ConfigError saying why the sampler cannot serve the set."""
        return check_keywords(self, words, self.sampler())

    def read_keyword_file(self, path: str, skip_bad: bool = False) -> list[KeywordLine]:
        """The keyword sets of a file (one a line), each checked against the model and sampler first: a set it
        cannot serve raises DataError naming its line, or with `skip_bad` is kept with its error."""
        return read_keyword_file(path, self.check_keywords, skip_bad)

    # --- keywords -------------------------------------------------------------------------------
    def encode_keywords(self, words: list[str]) -> list[list[int]]:
        """Token ids of each keyword; a keyword jieba splits is several tokens, kept together by the sampler.

        A keyword the model does not know at all is one unknown token: the sampler still places it (scored as
        the unknown token, never replaced or deleted) and the output shows the keyword as written."""
        if not words:
            raise ConfigError("no keywords given")
        out = []
        for w in words:
            if not w.strip():
                raise ConfigError("an empty keyword was given")
            ids = self.keyword_ids(w.strip())
            out.append(ids if any(i != V.UNK for i in ids) else [V.UNK])
        return out

    def keyword_ids(self, word: str) -> list[int]:
        """Known pieces as themselves; an unknown word piece falls back to its characters (unknown ones: UNK)."""
        ids = []
        for piece in tokenize(Sentence(word), self.config.model.unit):
            pid = self.vocab.id(piece)
            ids.extend([pid] if pid != V.UNK else self.vocab.ids(piece))
        return ids


def tokenize(ex: Sentence, unit: str) -> list[str]:
    """Words (jieba, whitespace dropped) or chars of a sentence, normalised; words are cached on the sentence
    (jieba is slow; chars are cheap to redo, and a big corpus's char lists would not fit in memory)."""
    if ex.tokens is not None:
        return ex.tokens
    text = "".join(V.char_tokens(ex.text))
    if unit != "word":
        return [c for c in text if c.strip()]
    ex.tokens = [p for p in V.words(text) if p.strip()]
    return ex.tokens
