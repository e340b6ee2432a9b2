"""Shared data layer: file readers, vocabularies, batching, windows."""
