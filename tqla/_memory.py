"""Memory ceilings: validation of ``max_bytes=`` arguments and of the machine's memory."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["available_memory", "fmt_bytes", "physical_memory", "positive_bytes"]


def physical_memory() -> int | None:
    """Physical memory of the machine in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def available_memory() -> int | None:
    """Memory available to new allocations now: Linux's MemAvailable, else half of the
    physical memory (None where neither is known)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    phys = physical_memory()
    return phys // 2 if phys else None


def positive_bytes(value: Any, name: str) -> int:
    """Validate a number of bytes: a positive integer (or an integral float such as 4e9)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer, float, np.floating)
    ):
        raise TypeError(
            f"{name} must be None or a positive number of bytes, got "
            f"{type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or value < 1 or int(value) != value:
        raise ValueError(f"{name} must be None or a positive whole number of bytes, got {value!r}")
    return int(value)


def fmt_bytes(n: float) -> str:
    """A byte count for messages: '512 B', '1.5 MiB', ..."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
