"""An interactive chat (`nlpcli chat`): the history and streamed replies over a chat pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from ....errors import ConfigError, DataError
from .decode import Decoding


class Replier(Protocol):
    """What a session needs of a chat pipeline (a protocol, so that the pipeline can make sessions without
    the two modules importing each other)."""

    config: Any

    def seeded_generator(self, seed: int | None = None) -> torch.Generator: ...

    def stream_reply(
        self, history: list[str], dec: Decoding | None = None, generator: torch.Generator | None = None
    ) -> Iterator[str]: ...


class ChatSession:
    """An interactive conversation: the history (at most `max_turns` turns) and streamed replies."""

    def __init__(self, pipe: Replier, max_turns: int = 10, dec: Decoding | None = None, seed: int | None = None):
        if max_turns < 1:
            raise ConfigError("the history limit must be at least 1 turn")
        self.pipe = pipe
        self.max_turns = max_turns
        self.dec = dec or pipe.config.inference.decoding()
        self.generator = pipe.seeded_generator(seed)
        self.history: list[str] = []

    def reset(self) -> None:
        self.history = []

    def say(self, text: str) -> str:
        """Add the user's turn and return the whole reply (which joins the history)."""
        return "".join(self.send(text))

    def send(self, text: str) -> Iterator[str]:
        """Add the user's turn, stream the reply; the reply joins the history when it is done."""
        turn = "".join(text.split())
        if not turn:
            raise DataError("input", "empty message")
        self.history = ([*self.history, turn])[-self.max_turns :]
        pieces = []
        for piece in self.pipe.stream_reply(self.history, self.dec, self.generator):
            pieces.append(piece)
            yield piece
        reply = "".join(pieces)
        if reply:
            self.history = ([*self.history, reply])[-self.max_turns :]
