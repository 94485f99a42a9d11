"""Peak memory of a piece of CPU (or CUDA) work, from the torch profiler's allocation events.

:func:`peak_allocated` runs a function under :mod:`torch.profiler` with ``profile_memory=True``
and replays the allocator's ``[memory]`` events (every allocation and free made by torch on the
given device, with its size and time) in time order: the running sum's maximum is the peak of
the bytes torch allocated *during* the call on top of what was allocated before it. Memory that
is not torch's (Python objects, the interpreter) is not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile


def peak_allocated(fn: Callable[[], Any], device: str = "cpu") -> tuple[int, Any]:
    """``(peak bytes allocated by torch during fn() above the start, fn's result)``."""
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, profile_memory=True) as prof:
        result = fn()
    kind = "CUDA" if device == "cuda" else "CPU"
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type().name == kind
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak, result
