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


# --------------------------------------------------------------------------------------
# Fifth mutation pass: every branch of available_memory on a fake /proc/meminfo, whole
# messages of positive_bytes, the units of fmt_bytes at each boundary
# --------------------------------------------------------------------------------------
def _fake_meminfo(monkeypatch, text):
    """/proc/meminfo reads as ``text`` (None: it cannot be opened); returns the open calls."""
    import io

    real_open = builtins.open
    calls = []

    def fake(path, *args, **kwargs):
        if str(path) != "/proc/meminfo":
            return real_open(path, *args, **kwargs)
        calls.append((args, kwargs))
        if text is None:
            raise FileNotFoundError(path)
        return io.StringIO(text)

    monkeypatch.setattr(builtins, "open", fake)
    return calls


MEMINFO = "MemTotal:       16000 kB\nMemFree:         3000 kB\nMemAvailable:    7777 kB\n"


def test_available_memory_reads_the_memavailable_line(monkeypatch):
    calls = _fake_meminfo(monkeypatch, MEMINFO + "Buffers: 5 kB\n")
    assert mem.available_memory() == 7777 * 1024
    assert calls == [((), {"encoding": "ascii"})]
    _fake_meminfo(monkeypatch, "XMemAvailable: 1 kB\nMemAvailable: 2 kB\n")
    assert mem.available_memory() == 2048


@pytest.mark.parametrize(
    "text",
    [
        None,  # no such file
        "MemTotal: 16000 kB\nMemFree: 3000 kB\n",  # an old kernel: no MemAvailable
        "MemAvailable:\n",  # IndexError
        "MemAvailable: lots kB\n",  # ValueError
    ],
)
def test_available_memory_falls_back_to_half_the_physical(monkeypatch, text):
    _fake_meminfo(monkeypatch, text)
    monkeypatch.setattr(mem, "physical_memory", lambda: 10_001)
    assert mem.available_memory() == 5000
    monkeypatch.setattr(mem, "physical_memory", lambda: None)
    assert mem.available_memory() is None
    monkeypatch.setattr(mem, "physical_memory", lambda: 0)
    assert mem.available_memory() is None


def test_physical_memory_is_none_where_the_os_does_not_say(monkeypatch):
    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert mem.physical_memory() is None
    monkeypatch.setattr(os, "sysconf", {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 3}.__getitem__)
    assert mem.physical_memory() == 12288


@pytest.mark.parametrize(
    "v, exc, text",
    [
        (True, TypeError, "got bool True"),
        (np.True_, TypeError, "got bool np.True_"),
        ("4e9", TypeError, "got str '4e9'"),
        (None, TypeError, "got NoneType None"),
        (1 + 0j, TypeError, "got complex (1+0j)"),
        (0, ValueError, "got 0"),
        (-5, ValueError, "got -5"),
        (0.5, ValueError, "got 0.5"),
        (1.5, ValueError, "got 1.5"),
        (np.float32(2.5), ValueError, "got np.float32(2.5)"),
        (float("inf"), ValueError, "got inf"),
        (float("-inf"), ValueError, "got -inf"),
        (float("nan"), ValueError, "got nan"),
    ],
)
def test_positive_bytes_messages_are_whole(v, exc, text):
    rule = {TypeError: "a positive number of bytes", ValueError: "a positive whole number of bytes"}
    with pytest.raises(exc) as info:
        mem.positive_bytes(v, "cap")
    assert str(info.value) == f"cap must be None or {rule[exc]}, {text}"


def test_positive_bytes_accepts_every_number_kind():
    for v in (1, 7, np.int64(7), np.uint8(7), 7.0, np.float64(7.0), np.float32(7.0), 4e9):
        out = mem.positive_bytes(v, "cap")
        assert type(out) is int and out == int(v)


@pytest.mark.parametrize(
    "n, text",
    [
        (1, "1 B"),
        (1023.9, "1023 B"),
        (1025, "1.0 KiB"),
        (1024**2, "1.0 MiB"),
        (1024**3 - 1, "1024.0 MiB"),
        (1024**3, "1.0 GiB"),
        (1024**4 - 1024**3, "1023.0 GiB"),
        (1024**4, "1.0 TiB"),
        (3.5 * 1024**5, "3584.0 TiB"),
    ],
)
def test_fmt_bytes_at_each_unit(n, text):
    assert mem.fmt_bytes(n) == text
