"""tqla.batch against its documentation (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tqla.batch
from tqla import permuted_kron_many

SHAPE = ((4, 3), (2, 2))


def _mats(n: int):
    return [np.random.default_rng(i).standard_normal((8, 6)) for i in range(n)]


@pytest.mark.parametrize("n_jobs", [None, 0, 1, 2])
def test_n_jobs_none_or_zero_means_the_cpus_and_one_the_calling_thread(monkeypatch, n_jobs):
    threads = []
    real = tqla.batch.permuted_kron

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(tqla.batch, "permuted_kron", spy)
    monkeypatch.setattr(tqla.batch, "_usable_cpus", lambda: 4)
    Ws = _mats(3)
    out = permuted_kron_many(Ws, SHAPE, 1, n_jobs=n_jobs, n_iter=1, rng=0)
    assert len(out) == 3 and len(threads) == 3
    main = threading.current_thread()
    if n_jobs == 1:
        assert all(t is main for t in threads)
    else:  # a pool of min(jobs, 3) > 1 threads
        assert all(t is not main and t.name.startswith("tqla-job") for t in threads)


def test_a_value_that_is_neither_one_nor_one_per_matrix_is_named():
    with pytest.raises(
        ValueError, match=r"shapes must be one value or one per matrix \(2\), got int"
    ):
        permuted_kron_many(_mats(2), 5)
    with pytest.raises(ValueError, match=r"rank must be one value or one per matrix \(2\), got 3"):
        permuted_kron_many(_mats(2), SHAPE, [1, 1, 1])
