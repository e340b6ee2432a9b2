"""Hugging Face encoders: loaded by name/path for training, rebuilt from a checkpoint offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

HF_DIR = "encoder"  # checkpoint subdirectory holding the HF config and tokenizer


def _quiet_transformers() -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars would fill logs and stderr
    return transformers


def load_pretrained(name_or_path: str, kind: str = "encoder") -> tuple[Any, Any]:
    """(model, tokenizer) from a hub name or a local directory (hub names need internet)."""
    tf = _quiet_transformers()
    auto = tf.AutoModel if kind == "encoder" else tf.AutoModelForCausalLM
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(name_or_path)
        model = auto.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load Hugging Face model {name_or_path!r}: {str(e).splitlines()[0]}") from None
    if kind == "encoder" and not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{name_or_path!r}: a fast tokenizer is needed (character offsets)")
    return model, tokenizer


def rebuild(checkpoint_dir: Path, kind: str = "encoder") -> tuple[Any, Any]:
    """(model with untrained weights, tokenizer) from files saved in a checkpoint: no download."""
    tf = _quiet_transformers()
    d = Path(checkpoint_dir) / HF_DIR
    config = tf.AutoConfig.from_pretrained(d)
    auto = tf.AutoModel if kind == "encoder" else tf.AutoModelForCausalLM
    return auto.from_config(config), tf.AutoTokenizer.from_pretrained(d)


def save(model: Any, tokenizer: Any, checkpoint_dir: Path) -> None:
    d = Path(checkpoint_dir) / HF_DIR
    d.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(d)
    tokenizer.save_pretrained(d)
