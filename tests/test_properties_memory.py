"""tqla._memory against its documentation (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tqla._memory as mem


def test_physical_memory_is_pages_times_page_size():
    want = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert mem.physical_memory() == want > 0


def test_available_memory_is_memavailable_else_half_the_physical(monkeypatch):
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = next(int(ln.split()[1]) for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration):  # pragma: no cover - not Linux
        pytest.skip("no MemAvailable on this system")
    got = mem.available_memory()
    assert abs(got - kib * 1024) <= 256 * 2**20  # the value moves while tests run
    assert got % 1024 == 0
    real_open = builtins.open

    def no_meminfo(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise OSError("no such file")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_meminfo)
    assert mem.available_memory() == mem.physical_memory() // 2
    monkeypatch.setattr(mem, "physical_memory", lambda: None)
    assert mem.available_memory() is None


@given(st.one_of(st.integers(1, 2**62), st.integers(1, 2**40).map(float),
                 st.integers(1, 2**31).map(np.int64)))  # fmt: skip
@example(1)
@example(1.0)
@example(np.int64(1))
def test_positive_bytes_accepts_whole_positive_numbers(v):
    out = mem.positive_bytes(v, "max_bytes")
    assert type(out) is int and out == v


@pytest.mark.parametrize(
    "v, exc, match",
    [
        (True, TypeError, r"max_bytes must be None or a positive number of bytes, got bool True"),
        ("4e9", TypeError, r"max_bytes must be None or a positive number of bytes, got str"),
        (0, ValueError, r"max_bytes must be None or a positive whole number of bytes, got 0"),
        (-5, ValueError, r"positive whole number of bytes, got -5"),
        (0.5, ValueError, r"positive whole number of bytes, got 0.5"),
        (1.5, ValueError, r"positive whole number of bytes, got 1.5"),
        (float("inf"), ValueError, r"positive whole number of bytes, got inf"),
        (float("nan"), ValueError, r"positive whole number of bytes, got nan"),
    ],
)
def test_positive_bytes_refuses_with_the_rule(v, exc, match):
    with pytest.raises(exc, match=match):
        mem.positive_bytes(v, "max_bytes")


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1024.0 KiB"),
        (3 * 1024**2, "3.0 MiB"),
        (1.25 * 1024**3, "1.2 GiB"),
        (2 * 1024**4, "2.0 TiB"),
        (1024**5, "1024.0 TiB"),
    ],
)
def test_fmt_bytes(n, text):
    assert mem.fmt_bytes(n) == text
