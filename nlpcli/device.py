"""Device choice, precision, seeding, threads, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank() if is_distributed() else 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps asked for, but MPS is not available")
    return dev


def _asked_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision named explicitly (None: fp32)."""
    if precision in ("fp32", "32", "no", "none"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    raise ConfigError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")


# CPU features that multiply bf16 in hardware, as /proc/cpuinfo names them (read where torch cannot say).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def native_bf16_feature() -> str | None:
    """The feature by which this CPU multiplies bf16 natively (amx_bf16 or avx512_bf16), or None where bf16 is
    emulated (AVX2-only CPUs, where bf16 matmuls run slower than fp32). torch's own probe when it has one."""
    probes = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    checks = [(flag, check) for flag, name in probes if (check := getattr(torch.cpu, name, None)) is not None]
    if checks:
        return next((flag for flag, check in checks if check()), None)
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


@dataclass(frozen=True)
class Precision:
    """What a command computes in: an autocast dtype (None: fp32) and, when `auto` chose it, why."""

    dtype: torch.dtype | None
    reason: str = ""  # empty when the precision was asked for by name

    @property
    def name(self) -> str:
        return precision_name(self.dtype)

    @property
    def note(self) -> str:
        """The line a command prints once: `precision auto: bf16 (why)`; empty when it was asked for."""
        return f"precision auto: {self.name} ({self.reason})" if self.reason else ""


def choose_precision(
    device: torch.device,
    precision: str = "auto",
    *,
    training: bool = False,
    pretrained: bool = False,
    quantized: bool = False,
) -> Precision:
    """The precision of a command: as asked, or for `auto` what pays on this device.

    `auto` on a GPU: bf16 autocast (fp16 where the GPU lacks bf16). On a CPU: bf16 only where the CPU
    multiplies it natively (`native_bf16_feature`), and there for prediction and generation (a DGCNN, a
    pretrained encoder and the CGMH sampler all ran faster at the same quality) and for training a
    pretrained (Hugging Face) network (faster at the same or better dev score); a model trained from scratch
    trained no faster in bf16, so it trains in fp32. Emulated bf16 is slower than fp32: fp32 elsewhere.
    A `quantized` model (int8 dynamic Linear layers, which take fp32 inputs only: autocast around them fails
    at the first call) computes in fp32: auto says so, and a half precision asked by name is refused."""
    chosen = _chosen_precision(device, precision, training, pretrained)
    if quantized and chosen.dtype is not None:
        if not chosen.reason:
            raise ConfigError(f"--quantize computes in fp32: drop --precision {chosen.name}, or --quantize")
        chosen = Precision(None, "int8 quantised Linear layers compute in fp32")
    return chosen


def _chosen_precision(device: torch.device, precision: str, training: bool, pretrained: bool) -> Precision:
    precision = (precision or "auto").lower()
    if precision != "auto":
        return Precision(_asked_dtype(precision))
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "CUDA autocast; this GPU supports bf16")
        return Precision(torch.float16, "CUDA autocast; this GPU has no bf16")
    if device.type != "cpu":
        return Precision(None, f"autocast on {device.type} is partial")
    feature = native_bf16_feature()
    if feature is None:
        return Precision(None, "no native bf16 on this CPU")
    if training and not pretrained:
        return Precision(None, f"a model trained from scratch trains no faster in bf16, even with {feature}")
    return Precision(torch.bfloat16, f"this CPU multiplies bf16 natively: {feature}")


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """An autocast context, or a no-op when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(num_threads: int | None) -> None:
    """Use the given number of intra-op threads (0/None: torch's default)."""
    if num_threads:
        torch.set_num_threads(num_threads)


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class DistContext:
    """Rank and world size; rank 0 alone writes files."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_min(self, value: float) -> float:
        """The minimum of a number over ranks (so all ranks agree to stop together)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return float(t.item())

    def all_max(self, value: float) -> float:
        return -self.all_min(-value)


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if not is_distributed():
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32, bf16 or fp16: the name of an autocast dtype (None: no autocast, fp32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32") if dtype is not None else "fp32"
