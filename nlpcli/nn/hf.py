"""Hugging Face encoders: loaded by name/path for training, rebuilt from a checkpoint offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .. import safefiles
from ..errors import CheckpointError, ConfigError, NlpcliError

HF_DIR = "encoder"  # checkpoint subdirectory holding the HF config and tokenizer
CONFIG_LIMIT = 16 * safefiles.MiB


def holds_pretrained(model: Any) -> bool:
    """Whether a torch module contains a Hugging Face network (none can before transformers is imported)."""
    tf = sys.modules.get("transformers")
    base = getattr(tf, "PreTrainedModel", None) if tf is not None else None
    return base is not None and any(isinstance(m, base) for m in model.modules())


def _quiet_transformers() -> Any:
    from ..extras import require

    transformers = require("transformers", "hf", "a Hugging Face model (--encoder, --init)")

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars would fill logs and stderr
    return transformers


def load_pretrained(name_or_path: str, kind: str = "encoder") -> tuple[Any, Any]:
    """(model, tokenizer) from a hub name or a local directory (hub names need internet)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():  # a pulled entry (even one pulled with --no-verify) or the user's own directory
        _refuse_code(local, ConfigError)
    tf = _quiet_transformers()
    auto = tf.AutoModel if kind == "encoder" else tf.AutoModelForCausalLM
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(name_or_path)
        model = auto.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load Hugging Face model {name_or_path!r}: {str(e).splitlines()[0]}") from None
    if getattr(model.config, "auto_map", None) or (getattr(tokenizer, "init_kwargs", None) or {}).get("auto_map"):
        # The checkpoint would keep the request, and loading it refuses custom code: refuse before training.
        raise ConfigError(
            f"{name_or_path!r} asks to run custom code (auto_map); nlpcli never runs model code, and a "
            "checkpoint trained on it could not be loaded"
        )
    if kind == "encoder" and not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{name_or_path!r}: a fast tokenizer is needed (character offsets)")
    return model, tokenizer


def rebuild(checkpoint_dir: Path, kind: str = "encoder") -> tuple[Any, Any]:
    """(model with untrained weights, tokenizer) from files saved in a checkpoint.

    Never downloads and never runs code: the folder must be there (a missing one would read as a hub name),
    transformers gets local_files_only, and a config or tokenizer that asks for custom code is refused.
    """
    d = Path(checkpoint_dir) / HF_DIR
    if not (d / "config.json").is_file():
        raise CheckpointError(
            f"{d}: missing (a checkpoint of a Hugging Face model keeps its config and tokenizer here)"
        )
    _refuse_code(d, CheckpointError)
    tf = _quiet_transformers()
    auto = tf.AutoModel if kind == "encoder" else tf.AutoModelForCausalLM
    offline = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = tf.AutoConfig.from_pretrained(d, **offline)
        return auto.from_config(config, trust_remote_code=False), tf.AutoTokenizer.from_pretrained(d, **offline)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        text = str(e).strip()
        reason = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(f"{d}: cannot rebuild the Hugging Face model ({reason})") from None


def _refuse_code(d: Path, error: type[NlpcliError]) -> None:
    """An `error` when the directory's config or tokenizer config asks to run custom code (auto_map)."""
    for name in ("config.json", "tokenizer_config.json"):
        if _asks_for_code(d / name, d):
            raise error(f"{d / name}: asks to run custom code (auto_map); nlpcli never runs model code")


def _asks_for_code(path: Path, within: Path) -> bool:
    try:
        obj = json.loads(safefiles.read_text(path, CONFIG_LIMIT, within=within))
    except (OSError, ValueError, RecursionError):
        return False  # a missing or broken file is transformers' to report (a link or a huge one: refused above)
    return isinstance(obj, dict) and bool(obj.get("auto_map"))


def save(model: Any, tokenizer: Any, checkpoint_dir: Path) -> None:
    d = Path(checkpoint_dir) / HF_DIR
    d.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(d)
    tokenizer.save_pretrained(d)
