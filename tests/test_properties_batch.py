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


# --------------------------------------------------------------------------------------
# Fifth pass: permuted_kron_many stated whole (every call, the pool, the BLAS limit)
# --------------------------------------------------------------------------------------
class _Pool:
    """Records how permuted_kron_many sizes its pool, BLAS limit and calls."""

    def __init__(self, monkeypatch, cpus: int):
        self.calls: list[tuple] = []
        self.pools: list[dict] = []
        self.blas: list[int] = []
        self.outs: list[object] = []
        real_pool = tqla.batch.ThreadPoolExecutor
        real_blas = tqla.batch._blas_threads
        pools, blas = self.pools, self.blas

        class Pool(real_pool):
            def __init__(self, *args, **kwargs):
                pools.append(kwargs)
                super().__init__(*args, **kwargs)

        def blas_threads(n):
            blas.append(n)
            return real_blas(n)

        def fake(W, shape, rank, **kwargs):
            out = object()
            self.calls.append((W, shape, rank, kwargs, threading.current_thread(), out))
            return out

        monkeypatch.setattr(tqla.batch, "ThreadPoolExecutor", Pool)
        monkeypatch.setattr(tqla.batch, "_blas_threads", blas_threads)
        monkeypatch.setattr(tqla.batch, "permuted_kron", fake)
        monkeypatch.setattr(tqla.batch, "_usable_cpus", lambda: cpus)


@pytest.mark.parametrize(
    ("cpus", "n", "n_jobs", "jobs"),
    [(8, 3, None, 3), (8, 3, 0, 3), (8, 3, 2, 2), (8, 3, 5, 3), (8, 3, 1, 1), (1, 3, None, 1),
     (1, 3, 0, 1), (2, 3, 3, 3), (3, 4, 2, 2), (8, 1, None, 1), (16, 5, 4, 4)],
)  # fmt: skip
def test_each_matrix_is_one_call_in_a_pool_of_the_documented_size(monkeypatch, cpus, n, n_jobs,
                                                                   jobs):  # fmt: skip
    rec = _Pool(monkeypatch, cpus)
    Ws = _mats(n)
    shapes = [SHAPE, ((2, 3), (4, 2)), ((8, 1), (1, 6)), SHAPE, SHAPE][:n]
    ranks = [1, 2, 1, 2, 1][:n]
    out = permuted_kron_many(Ws, shapes, ranks, n_jobs=n_jobs, n_iter=3, tol=0.5, rng=7)
    assert len(rec.calls) == n
    by_w = {id(c[0]): c for c in rec.calls}
    for i in range(n):
        W, shape, rank, kwargs, _, result = by_w[id(Ws[i])]
        assert shape == shapes[i] and rank == ranks[i]
        assert kwargs == {"n_iter": 3, "tol": 0.5, "rng": 7}
        assert out[i] is result  # in the order of Ws
    main = threading.current_thread()
    if jobs == 1:
        assert rec.pools == [] and rec.blas == []
        assert all(c[4] is main for c in rec.calls)
    else:
        assert rec.pools == [{"max_workers": jobs, "thread_name_prefix": "tqla-job"}]
        assert rec.blas == [max(1, cpus // jobs)] and type(rec.blas[0]) is int
        assert all(c[4] is not main and c[4].name.startswith("tqla-job") for c in rec.calls)


def test_one_shape_and_one_rank_are_shared_and_rank_defaults_to_1(monkeypatch):
    from tqla import KroneckerShape

    rec = _Pool(monkeypatch, 1)
    Ws = _mats(3)
    for shape in (SHAPE, KroneckerShape(*SHAPE), ((np.int64(4), 3), (2, np.int64(2)))):
        rec.calls.clear()
        permuted_kron_many(Ws, shape)
        assert [(c[0], c[1], c[2], c[3]) for c in rec.calls] == [(W, shape, 1, {}) for W in Ws]
    rec.calls.clear()
    permuted_kron_many(Ws, [SHAPE, SHAPE, ((2, 3), (4, 2))], (1, 2, 3), rng=np.int64(4))
    assert [c[2] for c in rec.calls] == [1, 2, 3]
    assert rec.calls[2][1] == ((2, 3), (4, 2)) and rec.calls[0][3] == {"rng": 4}


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "msg"),
    [
        ((np.ones((2, 8, 6)), SHAPE), {}, TypeError,
         r"Ws must be a sequence \(list or tuple\) of matrices, got ndarray"),
        (((w for w in _mats(2)), SHAPE), {}, TypeError,
         r"Ws must be a sequence \(list or tuple\) of matrices, got generator"),
        ((_mats(2), SHAPE), {"rng": np.random.default_rng(0)}, TypeError,
         r"rng must be None or an int seed for permuted_kron_many \(each job seeds its own "
         r"generator\), got Generator"),
        ((_mats(2), SHAPE), {"rng": 1.0}, TypeError,
         r"rng must be None or an int seed for permuted_kron_many \(each job seeds its own "
         r"generator\), got float"),
        ((_mats(2), SHAPE), {"n_jobs": -1}, ValueError, r"n_jobs must be >= 1, got -1"),
        ((_mats(2), SHAPE), {"n_jobs": 1.5}, TypeError,
         r"n_jobs must be an integer, got float 1.5"),
        ((_mats(2), [SHAPE, SHAPE, SHAPE]), {}, ValueError,
         r"shapes must be one value or one per matrix \(2\), got 3"),
        ((_mats(3), [SHAPE, SHAPE]), {}, ValueError,
         r"shapes must be one value or one per matrix \(3\), got 2"),
        ((_mats(2), SHAPE, (1,)), {}, ValueError,
         r"rank must be one value or one per matrix \(2\), got 1"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named_in_the_whole_message(monkeypatch, args, kwargs, exc, msg):
    _Pool(monkeypatch, 2)
    with pytest.raises(exc, match=f"^{msg}$"):
        permuted_kron_many(*args, **kwargs)


def test_usable_cpus_without_an_affinity_call_is_the_cpu_count_or_1(monkeypatch):
    import os

    assert tqla.batch._usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert tqla.batch._usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert tqla.batch._usable_cpus() == 1
