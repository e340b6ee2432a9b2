"""Test session set-up (helpers for the tests live in util.py)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)  # in-process models are tiny; one thread avoids oversubscribing the cores
