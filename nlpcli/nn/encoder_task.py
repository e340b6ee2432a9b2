"""What the encoder tasks (ner, ie, qa) share about their encoder and their windows, in one place.

`EncoderTask` is a mixin of their pipelines: it makes or rebuilds the encoder (`nn.encoder`), says whether it is
a pretrained (Hugging Face) one, saves that encoder and its tokenizer into a checkpoint, trains it at its own
learning rate, and cuts long texts into windows that fit it. `WindowConfig` is the `[windows]` section of those
tasks: one name per meaning (`window` when predicting, `train_window` when training, `window_overlap`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..config import POSITIVE, Section, TaskConfig, opt, smaller
from ..data.batching import Window, windows
from ..errors import ConfigError
from . import hf
from .encoder import BILSTM, Encoder, EncoderConfig, HFEncoder, NewEncoder, create_encoder, rebuild_encoder


@dataclass
class WindowConfig(Section):
    """How a long text is read: overlapping windows, never a cut (every position belongs to one window)."""

    window: int = opt(
        256, "Window size in characters when predicting; longer texts are windowed, never cut.", **POSITIVE
    )
    window_overlap: int = opt(64, "Characters shared by neighbouring windows.")
    train_window: int = opt(0, "Window size in characters in training (qa: the crop of a long passage); 0: window.")

    RULES = (smaller("window_overlap", "window"),)

    @property
    def training(self) -> int:
        """The training window: train_window, or the prediction window when it is 0."""
        return self.train_window or self.window


class EncoderTask:
    """The shared encoder plumbing of a pipeline whose model holds the encoder as `model.encoder`."""

    config: Any  # the task's TaskConfig, with `encoder` and `windows` sections
    model: nn.Module
    tokenizer: Any  # a pretrained encoder's tokenizer; None for the from-scratch DGCNN
    # Windows are shrunk until their tokens fit a pretrained encoder (ie). False: windows of `window` characters,
    # which the task's own inputs fit to the encoder (qa cuts the question; ner's 256 characters fit the
    # encoders it takes, and its prediction speed is measured without a second tokenizer pass).
    FIT_WINDOWS_TO_TOKENS: ClassVar[bool] = True

    # --- making and rebuilding the encoder ------------------------------------------------------
    @staticmethod
    def new_encoder(config: TaskConfig, texts: list[str]) -> tuple[Any, NewEncoder]:
        """A new encoder for training (the task's `--encoder auto` choices apply) and the config it fixes."""
        assert isinstance(config.encoder, EncoderConfig)
        name = config.encoder.name
        if name == BILSTM and name not in config.SCRATCH_ENCODERS:
            # ie and qa feed their own inputs (positions, question features) in at the DGCNN's width.
            raise ConfigError(
                f"encoder {name} is for ner only; this task takes {', '.join(config.SCRATCH_ENCODERS)}, auto, "
                "or a pretrained encoder"
            )
        if config.encoder.use_bigrams and not config.BIGRAMS:
            raise ConfigError("use_bigrams is for ner only: this task's model embeds its characters itself")
        if config.encoder.lexicon and not config.BIGRAMS:
            raise ConfigError("lexicon is for ner only: this task's model embeds its characters itself")
        new = create_encoder(config.encoder, texts, config.AUTO_ENCODER)
        return dataclasses.replace(config, encoder=new.config), new

    @staticmethod
    def saved_encoder(config: TaskConfig, assets: dict[str, Any], directory: Path | None) -> tuple[Encoder, Any]:
        """The encoder of a saved pipeline (weights loaded after) and its tokenizer."""
        assert isinstance(config.encoder, EncoderConfig)
        return rebuild_encoder(config.encoder, assets, directory)

    # --- what kind it is ------------------------------------------------------------------------
    @property
    def pretrained_encoder(self) -> HFEncoder | None:
        """The Hugging Face encoder, or None for the from-scratch DGCNN."""
        encoder = getattr(self.model, "encoder", None)
        return encoder if isinstance(encoder, HFEncoder) else None

    @property
    def max_tokens(self) -> int:
        """Tokens (special ones included) one input of a pretrained encoder may hold; 0: no such limit."""
        encoder = self.pretrained_encoder
        return encoder.max_tokens(self.tokenizer) if encoder is not None else 0

    # --- saving and training --------------------------------------------------------------------
    def write_extra(self, directory: Path) -> None:
        """A pretrained encoder and its tokenizer go into the checkpoint (the weights file holds them too)."""
        encoder = self.pretrained_encoder
        if encoder is not None:
            hf.save(encoder.model, self.tokenizer, directory)

    def param_groups(self) -> list[dict[str, Any]] | None:
        """A pretrained encoder trains at `encoder.lr`, the task's heads at `trainer.lr`; None: one group."""
        if self.pretrained_encoder is None:
            return None
        named = list(self.model.named_parameters())
        encoder = [p for name, p in named if name.startswith("encoder.")]
        heads = [p for name, p in named if not name.startswith("encoder.")]
        scale = self.config.encoder.lr / self.config.trainer.lr
        return [{"params": encoder, "lr_scale": scale}, {"params": heads}]

    # --- windows --------------------------------------------------------------------------------
    # The most characters a window may hold whatever the config says (ie: its position table); 0: no limit.
    def window_limit(self) -> int:
        return 0

    def text_windows(self, text: str, training: bool = False) -> list[Window]:
        """Overlapping windows over a text: `window` characters (`train_window` in training), at most
        `window_limit`; with a pretrained encoder, small enough that every window's tokens fit its positions."""
        w = self.config.windows
        size = w.training if training else w.window
        if self.window_limit():
            size = min(size, self.window_limit())
        limit = self.max_tokens if self.FIT_WINDOWS_TO_TOKENS else 0
        if not limit:
            return windows(len(text), size, w.window_overlap)
        size = min(size, limit - self.tokenizer.num_special_tokens_to_add())
        while True:  # a character is usually at most one token, but e.g. NFKC may expand one into several
            found = windows(len(text), size, min(w.window_overlap, size // 2))
            longest = max(len(self.tokenizer(text[x.start : x.end])["input_ids"]) for x in found)
            if longest <= limit or size <= 16:
                return found
            size = max(16, min(size - 1, size * limit // longest))
