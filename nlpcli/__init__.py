"""nlpcli: Chinese NLP pipelines from the command line and from Python.

import nlpcli
ner = nlpcli.load("runs/ner")               # the task is read from the checkpoint
ner("张伟在北京的华为公司工作。")              # -> [{"type", "start", "end", "text", "score"}, ...]
nlpcli.train("ner", train="train.jsonl", output="runs/ner", epochs=3)
nlpcli.evaluate("runs/ner", "dev.jsonl")     # -> {"precision", "recall", "f1", ...}
"""

from __future__ import annotations

from typing import Any

from .version import __version__

__all__ = ["__version__", "evaluate", "load", "train"]


def __getattr__(name: str) -> Any:
    # torch and the tasks are imported on first use, so `import nlpcli` (and the CLI) start fast.
    if name in ("load", "train", "evaluate"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'nlpcli' has no attribute {name!r}")
