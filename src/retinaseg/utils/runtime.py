"""Device, thread and seed selection shared by training, inference and benchmarks."""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import numpy as np
import torch

from retinaseg.errors import ConfigError


def default_threads() -> int:
    """CPU threads for torch: the physical cores we may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (``None`` = :func:`default_threads`) and return it."""
    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` are checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{spec}' was requested but CUDA is not available")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device '{spec}' is not a valid torch device") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same seed gives the same run on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``).

    Read from ``/proc/cpuinfo`` (Linux); False where that file is missing. Without these
    instructions bfloat16 is emulated and slower than float32.
    """
    try:
        text = Path(cpuinfo).read_text(errors="ignore")
    except OSError:
        return False
    flags = set(text.split())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on a CPU with native bfloat16, else ``fp32``; others are checked.

    ``bf16`` runs the network under ``torch.autocast(dtype=bfloat16)``; on CUDA it is also
    allowed. The probability map is always returned as float32.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
