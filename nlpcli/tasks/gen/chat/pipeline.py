"""DialoGPT-style multi-turn chat: one causal LM over `[CLS] u1 [SEP] u2 [SEP] ...` with speaker ids.

From scratch (a small char-level GPT) by default, or fine-tuned from any Hugging Face causal LM
(`--init NAME_OR_PATH`) or from the forward LM of an nlpcli char transformer lm checkpoint (`--init DIR`:
the same GPT, its char vocabulary, speaker embeddings added at zero). Loss on responses only (CDial-GPT)
or on every token after [CLS].

Above the usual size because the three starting points (from scratch, a Hugging Face LM, an nlpcli lm) differ
only in how `create` and `build` make the model and tokenizer; config, tokenizers, inputs and the session are
modules of their own.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .... import safefiles
from ....checkpoint import JSON_LIMIT, resolve_checkpoint_dir
from ....config import TaskConfig
from ....data import vocab as V
from ....data.batching import bucket_batches, pad_ids
from ....data.io import ReadStats
from ....errors import CheckpointError, ConfigError, DataError
from ....nn import hf
from ....nn.gpt import GPT, GPTConfig
from ....registry import register_task
from ...base import InputField, Pipeline
from .config import ChatConfig, ChatModelConfig
from .data import FORMATS, Dialogue, clean_turns, read_dialogues
from .decode import Decoding, Prompt, generate, generate_steps
from .inputs import ChatExample, Encoded, build_input, fit_latest_turns
from .metrics import distinct_n
from .model import HFCausalLM
from .tokenizers import CHAR_SPECIALS, CLS, SEP, CharTokenizer, HFTokenizer, add_chat_tokens

# The fine-tuning rate when --init-lr is 0 (the default), by what the model starts from. A small char GPT of our
# own (gpt-zh: an hour of a 2-core CPU) is young, and fine-tunes best near its own pretraining rate
# (docs/results.md, "Models built by name": 1e-3 beat 3e-4); a large Hugging Face model wants the usual small one.
LM_INIT_LR = 1e-3
HF_INIT_LR = 5e-5


def _init_lr(config: ChatConfig, default: float) -> ChatConfig:
    """The config with its init_lr set to `default` when the user left it at 0 (so the card records the rate)."""
    return config if config.model.init_lr else config.updated({"model.init_lr": default})


def _nlpcli_checkpoint(init: str) -> Path | None:
    """The nlpcli checkpoint directory `init` names (a checkpoint, or a training output's best/), or None for
    anything else (a Hugging Face model name or directory)."""
    try:
        directory = resolve_checkpoint_dir(init)
        meta = json.loads(safefiles.read_text(directory / "config.json", JSON_LIMIT, within=directory))
    except (CheckpointError, OSError, ValueError):
        return None
    return directory if isinstance(meta, dict) and "task" in meta and "format_version" in meta else None


def _context_limit(model: nn.Module, cfg: ChatModelConfig) -> int:
    conf = getattr(model, "config", None)
    limit = getattr(conf, "n_positions", None) or getattr(conf, "max_position_embeddings", None)
    return min(cfg.context_len, limit) if limit else cfg.context_len


if TYPE_CHECKING:
    from .session import ChatSession


@register_task
class ChatPipeline(Pipeline):
    name = "chat"
    summary = "DialoGPT-style multi-turn chat (causal LM over the dialogue, speaker ids)"
    input_fields = (
        InputField("history", "list", repeats=True, help="the dialogue so far, one turn each", aliases=("--turn",)),
    )
    example: ClassVar[dict[str, Any]] = {"history": ["你好"]}
    output_help = "reply and turns_used."
    Config = ChatConfig
    main_metric = "ppl"
    higher_is_better = False
    formats = FORMATS
    predictions_are_gold = True
    sampled = True

    config: ChatConfig
    model: GPT | HFCausalLM

    def __init__(self, config: ChatConfig, assets: dict[str, Any], model: GPT | HFCausalLM, tokenizer: Any = None):
        super().__init__(config, assets, model)
        self.hf_tokenizer = tokenizer
        self.tokenizer = (
            HFTokenizer(tokenizer, assets["special"])
            if tokenizer is not None
            else CharTokenizer(
                assets["chars"], assets.get("cls", CLS), assets.get("sep", SEP), assets.get("normalize", False)
            )
        )
        self.context: int = model.context_len
        if self.context - config.inference.max_new_tokens < 8:
            raise ConfigError(
                f"a context of {self.context} tokens leaves no room for the history after "
                f"--max-new-tokens {config.inference.max_new_tokens}"
            )

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[Dialogue], ReadStats]:
        return read_dialogues(path, fmt, skip_bad)

    @classmethod
    def check_config(cls, cfg: ChatConfig) -> None:
        if cfg.model.loss not in ("responses", "all"):
            raise ConfigError(f"--loss must be 'responses' or 'all', not {cfg.model.loss!r}")
        if not 0 < cfg.inference.max_new_tokens <= cfg.model.context_len - 8:
            raise ConfigError(f"--max-new-tokens must be between 1 and context_len - 8 ({cfg.model.context_len - 8})")

    @classmethod
    def create(cls, config: ChatConfig, train_examples: list[Dialogue]) -> ChatPipeline:
        cls.check_config(config)
        m = config.model
        if not m.init:
            counts = Counter(c for d in train_examples for t in d.turns for c in t)
            chars = V.Vocab.build(counts, m.char_min_count, m.vocab_size, specials=CHAR_SPECIALS)
            return cls.build(config, {"chars": chars.to_list()})
        lm_dir = _nlpcli_checkpoint(m.init)
        if lm_dir is not None:
            return cls.from_lm(_init_lr(config, LM_INIT_LR), lm_dir)
        model, tokenizer = hf.load_pretrained(m.init, "causal")
        special = add_chat_tokens(tokenizer, model)
        speakers = [tokenizer.convert_tokens_to_ids(s) for s in special["speakers"]]
        wrapped = HFCausalLM(model, speakers, _context_limit(model, m))
        return cls(_init_lr(config, HF_INIT_LR), {"special": special}, wrapped, tokenizer)

    @classmethod
    def from_lm(cls, config: ChatConfig, directory: Path) -> ChatPipeline:
        """A chat model that computes exactly the lm's forward distribution at step 0: the lm's GPT (its width,
        layers, heads and position table become this model's), its char vocabulary with its boundary token as
        [CLS] and [SEP] (so a dialogue reads `<s> u1 <s> u2 <s>`, as the lm's packed windows do), and speaker
        embeddings added at zero."""
        from ..lm.model import BOS
        from ..lm.pipeline import LmPipeline

        lm = LmPipeline.load(directory)
        assert isinstance(lm, LmPipeline)
        m = lm.config.model
        if m.arch != "transformer" or m.unit != "char":
            raise ConfigError(
                f"--init {config.model.init}: an lm checkpoint of arch {m.arch}, unit {m.unit}; chat starts only "
                "from a char transformer lm (train it with --arch transformer --unit char)"
            )
        shape = {"hidden_size": m.hidden_size, "layers": m.num_layers, "heads": m.heads, "context_len": m.positions}
        config = config.updated({f"model.{k}": v for k, v in shape.items()})
        cls.check_config(config)
        boundary = lm.vocab.itos[BOS]
        pipe = cls.build(config, {"chars": lm.vocab.to_list(), "cls": boundary, "sep": boundary, "normalize": True})
        assert isinstance(pipe.model, GPT) and pipe.model.speaker is not None
        state = {k.removeprefix("fwd."): v for k, v in lm.model.state_dict().items() if k.startswith("fwd.")}
        state["speaker.weight"] = torch.zeros_like(pipe.model.speaker.weight)
        pipe.model.load_state_dict(state)
        return pipe

    @classmethod
    def saved_config(cls, ckpt: Any) -> TaskConfig:
        config = super().saved_config(ckpt)
        if ckpt.format_version == 1 and "seed" in ckpt.config:  # format 1 sampled with the training seed
            config = config.updated({"inference.seed": ckpt.config["seed"]})
        return config

    @classmethod
    def build(cls, config: ChatConfig, assets: dict[str, Any], checkpoint_dir: Path | None = None) -> ChatPipeline:
        cls.check_config(config)
        m = config.model
        if "chars" in assets:  # from scratch, or started from an lm checkpoint
            model = GPT(GPTConfig(len(assets["chars"]), m.hidden_size, m.layers, m.heads, m.context_len, m.dropout, 2))
            return cls(config, assets, model)
        if checkpoint_dir is None:
            raise ConfigError("a Hugging Face model is rebuilt from a checkpoint directory")
        model, tokenizer = hf.rebuild(checkpoint_dir, "causal")
        speakers = [tokenizer.convert_tokens_to_ids(s) for s in assets["special"]["speakers"]]
        return cls(config, assets, HFCausalLM(model, speakers, _context_limit(model, m)), tokenizer)

    def write_extra(self, directory: Path) -> None:
        if self.hf_tokenizer is not None:
            hf.save(self.model.model, self.hf_tokenizer, directory)

    def param_groups(self) -> list[dict[str, Any]] | None:
        """An --init model trains at init_lr (the trainer's default groups otherwise)."""
        if not self.config.model.init:
            return None
        scale = self.config.model.init_lr / self.config.trainer.lr
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.hf_tokenizer is not None:
            return [{"params": params, "lr_scale": scale}]
        decay = self.config.trainer.weight_decay  # from an lm: no decay on 1-d parameters, as the trainer does
        return [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": decay, "lr_scale": scale},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale},
        ]

    # --- encoding ---------------------------------------------------------------------------
    def encode_turns(self, turns: list[str]) -> list[list[int]]:
        return [self.tokenizer.encode(t) for t in turns]

    def training_examples(self, dialogues: list[Dialogue]) -> list[ChatExample]:
        """Windows of whole turns that fit the context; each scored turn is scored in exactly one window."""
        return self.windows(dialogues, self.config.model.loss)

    def windows(self, dialogues: list[Dialogue], loss: str) -> list[ChatExample]:
        # Capping turns in training guarantees any two turns fit, so every window has a response.
        cap = min(self.config.model.max_turn_len, (self.context - 3) // 2)
        min_turns = 2 if loss == "responses" else 1
        out = []
        for d in dialogues:
            turns = [t[:cap] for t in self.encode_turns(d.turns)]
            end = len(turns)
            while end >= min_turns:
                kept, n = fit_latest_turns(turns[:end], self.context)
                out.append(ChatExample(kept, self._scored_chars(kept, loss), loss, d.line))
                start = end - n
                if start == 0 or n < min_turns:
                    break
                # With responses-only loss the next window ends at this one's first turn (context here,
                # a response there); with loss on all tokens windows do not overlap.
                end = start + 1 if loss == "responses" else start
        return out

    def _scored_chars(self, turns: list[list[int]], loss: str) -> int:
        scored = turns if loss == "all" else turns[1:]
        return sum(self.tokenizer.char_count(t) + 1 for t in scored)

    def example_length(self, example: ChatExample) -> int:
        return sum(len(t) + 1 for t in example.turns) + 1

    def encode_example(self, example: ChatExample) -> Encoded:
        return build_input(example.turns, self.tokenizer.cls_id, self.tokenizer.sep_id, example.loss)

    def collate(self, examples: list[ChatExample]) -> dict[str, Any]:
        enc = [self.encode_example(e) for e in examples]
        pad = self.tokenizer.pad_id
        ids = pad_ids([e.ids[:-1] for e in enc], pad)
        mask = pad_ids([[1] * (len(e.ids) - 1) for e in enc]).bool()
        return {
            "ids": ids,
            "speakers": pad_ids([e.speakers[:-1] for e in enc]),
            "attention_mask": mask,
            "labels": pad_ids([e.ids[1:] for e in enc], pad),
            "scored": pad_ids([e.scored for e in enc]).bool(),
            "_tokens": int(mask.sum()),
        }

    def token_nll(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Next-token NLL [N] of the scored positions, in row-major order."""
        ids, scored = batch["ids"], batch["scored"]
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        logits, _ = model(ids, batch["speakers"], batch["attention_mask"], positions, select=scored)
        return F.cross_entropy(logits.float(), batch["labels"][scored], reduction="none")

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self.token_nll(model, batch).mean()

    # --- prediction -------------------------------------------------------------------------
    def prompt(self, history: list[str]) -> tuple[Prompt, int]:
        """The model input for the next reply, keeping the latest turns that fit; and turns kept."""
        budget = self.context - self.config.inference.max_new_tokens
        kept, n = fit_latest_turns(self.encode_turns(history), budget)
        enc = build_input(kept, self.tokenizer.cls_id, self.tokenizer.sep_id)
        return Prompt(enc.ids, enc.speakers, len(kept) % 2), n

    def _gen_args(self) -> dict[str, Any]:
        t = self.tokenizer
        model = self.model
        width = model.model.get_output_embeddings().weight.shape[0] if isinstance(model, HFCausalLM) else t.size
        return {"sep_id": t.sep_id, "pad_id": t.pad_id, "banned_ids": t.banned_ids, "vocab_size": width}

    def reply_ids(
        self,
        histories: list[list[str]],
        dec: Decoding | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        batch_size: int | None = None,
    ) -> list[list[int]]:
        """Reply token ids for each history (turns as text), generated in length-sorted batches."""
        pieces = [self.prompt(h) for h in histories]
        return self.run_pieces(
            pieces,
            batch_size or self.config.inference.batch_size,
            dec=dec or self.config.inference.decoding(),
            generator=generator,
            use_cache=use_cache,
        )

    def replies(self, histories: list[list[str]], **kwargs: Any) -> list[str]:
        return [self.tokenizer.decode(r) for r in self.reply_ids(histories, **kwargs)]

    @torch.no_grad()
    def stream_reply(
        self, history: list[str], dec: Decoding | None = None, generator: torch.Generator | None = None
    ) -> Iterator[str]:
        """The reply to one history, piece by piece as tokens are generated."""
        self.model.eval()
        prompt, _ = self.prompt(history)
        args = self._gen_args()
        ids: list[int] = []
        shown = ""
        for tokens, active in generate_steps(
            self.model, [prompt], dec=dec or self.config.inference.decoding(), generator=generator, **args
        ):
            tok = int(tokens[0])
            if not bool(active[0]) or tok == self.tokenizer.sep_id:
                break
            ids.append(tok)
            text = self.tokenizer.decode(ids)
            if text.startswith(shown) and not text.endswith("\ufffd"):  # wait for whole multi-byte chars
                yield text[len(shown) :]
                shown = text

    def seeded_generator(self, seed: int | None = None) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.config.inference.seed if seed is None else seed)
        return g

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self, examples: list[Dialogue], batch_size: int | None = None) -> dict[str, Any]:
        """Response perplexity per character, distinct-1/2 of sampled replies, generation tokens/s."""
        windows = self.windows(examples, "responses")  # whatever the training loss, score responses
        if not windows:
            files = ", ".join(sorted({d.path for d in examples if d.path})) or "evaluation data"
            raise DataError(files, "no dialogue with a response (2+ turns) to score")
        bs = batch_size or self.config.inference.batch_size
        nll, chars, tokens = 0.0, 0, 0
        self.model.eval()
        with torch.no_grad():
            for idx in bucket_batches([self.example_length(w) for w in windows], bs, shuffle=False):
                batch = self.to_device(self.collate([windows[i] for i in idx]))
                nll += float(self.token_nll(self.model, batch).sum())
                tokens += int(batch["scored"].sum())
                chars += sum(windows[i].chars for i in idx)
        metrics: dict[str, Any] = {
            "ppl": math.exp(nll / chars),
            "ppl_token": math.exp(nll / tokens),
            "nll_per_char": nll / chars,
            "scored_chars": chars,
            "dialogues": len(examples),
        }
        return metrics | self.sample_metrics(examples, bs)

    def sample_metrics(self, dialogues: list[Dialogue], batch_size: int, use_cache: bool = True) -> dict[str, Any]:
        """distinct-1/2 and tokens/s of replies sampled for the first `eval_samples` histories."""
        histories = [d.turns[:-1] for d in dialogues if len(d.turns) >= 2][: self.config.inference.eval_samples]
        if not histories:
            return {}
        self.reply_ids(histories[:1], dec=Decoding(max_new_tokens=2))  # warm-up: first calls are slow
        t0 = time.perf_counter()
        ids = self.reply_ids(histories, generator=self.seeded_generator(), use_cache=use_cache, batch_size=batch_size)
        seconds = time.perf_counter() - t0
        texts = [self.tokenizer.decode(r) for r in ids]
        n_tokens = sum(len(r) + 1 for r in ids)  # + the closing [SEP] each reply also cost
        return {
            "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2),
            "gen_tokens_per_s": n_tokens / max(seconds, 1e-9),
            "replies_sampled": len(texts),
            "mean_reply_chars": sum(map(len, texts)) / len(texts),
        }

    # --- records -------------------------------------------------------------------------------
    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        if "history" not in record:
            raise DataError(path, "missing field 'history' (a list of turns)", line)
        clean_turns(record["history"], path, line, "history")

    methods: ClassVar[tuple[str, ...]] = ("reply", "session")

    def reply(self, history: Sequence[str] | Sequence[Sequence[str]]) -> Any:
        """The reply to one history (a list of turns), or a list of replies to a list of histories."""
        single = bool(history) and all(isinstance(t, str) for t in history)
        histories = [list(history)] if single else [list(h) for h in history]
        out = [r["reply"] for r in self.predict_checked([{"history": h} for h in histories])]
        return out[0] if single else out

    def session(self, max_turns: int = 10, seed: int | None = None) -> ChatSession:
        """A multi-turn conversation: `s.say("你好")` -> reply; `s.send(text)` streams it."""
        from .session import ChatSession  # the session drives a pipeline: it imports this module

        return ChatSession(self, max_turns=max_turns, seed=seed)

    def forward_params(self) -> dict[str, Any]:
        # One seeded sampler per predict call: a file gets the same replies wherever it is predicted.
        return {"dec": self.config.inference.decoding(), "generator": self.seeded_generator(), "use_cache": True}

    def preprocess(self, record: dict[str, Any]) -> list[tuple[Prompt, int]]:
        return [self.prompt(clean_turns(record["history"], "input", None, "history"))]

    def piece_length(self, piece: tuple[Prompt, int]) -> int:
        return len(piece[0].ids)

    def forward(
        self,
        pieces: list[tuple[Prompt, int]],
        dec: Decoding | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        **params: Any,
    ) -> list[list[int]]:
        """Reply token ids of a batch of prompts."""
        return generate(
            self.model,
            [p[0] for p in pieces],
            dec=dec or self.config.inference.decoding(),
            generator=generator,
            use_cache=use_cache,
            **self._gen_args(),
        )

    def postprocess(self, record: dict[str, Any], parts: list[tuple[tuple[Prompt, int], list[int]]]) -> dict[str, Any]:
        """Adds `reply` (and `turns_used`: the latest turns that fit the context)."""
        (_, used), ids = parts[0]
        return {**record, "reply": self.tokenizer.decode(ids), "turns_used": used}
