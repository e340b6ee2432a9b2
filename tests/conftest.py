"""Test session set-up (helpers for the tests live in util.py)."""

from __future__ import annotations

import os
import tempfile

import torch

torch.set_num_threads(1)  # in-process models are tiny; one thread avoids oversubscribing the cores
# An empty model cache for the whole session (the CLI subprocesses inherit it): `--encoder auto` then
# trains the from-scratch DGCNN on every machine, whatever the developer has pulled.
os.environ["NLPCLI_HOME"] = tempfile.mkdtemp(prefix="nlpcli-test-home-")
