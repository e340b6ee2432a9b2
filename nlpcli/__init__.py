"""nlpcli: Chinese NLP pipelines from the command line and from Python.

import nlpcli
ner = nlpcli.load("runs/ner")               # a Predictor; the task is read from the checkpoint
ner("张伟在北京的华为公司工作。")              # -> [{"type", "start", "end", "text", "score"}, ...], end exclusive
nlpcli.train("ner", train="train.jsonl", output="runs/ner", epochs=3)   # -> a JSON-ready report (dict)
nlpcli.evaluate("runs/ner", "dev.jsonl")     # -> {"precision", "recall", "f1", ...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time these load on first use (below)
    from .api import evaluate, load, train
    from .predictor import Predictor

from .version import __version__

__all__ = ["Predictor", "__version__", "evaluate", "load", "train"]


def __getattr__(name: str) -> Any:
    # torch and the tasks are imported on first use, so `import nlpcli` (and the CLI) start fast.
    if name in ("load", "train", "evaluate"):
        from . import api

        return getattr(api, name)
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'nlpcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
