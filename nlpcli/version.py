"""The version of nlpcli, in the bottom layer: checkpoints, model cards and `--version` read it from here."""

__version__ = "0.1.0"
