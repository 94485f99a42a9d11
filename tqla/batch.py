"""Several matrices at once: :func:`permuted_kron_many` (the library's own parallelism).

Compressing a model means many independent decompositions (GPT-2 small's MLP plan: twelve
768×3072 / 3072×768 matrices).  Inside one :func:`tqla.permuted_kron` the steps depend on
each other (each slot's assignment changes the next slot's cost), so the parallelism that
pays on a few cores is *across* matrices: the expensive parts — the cost GEMMs (BLAS), the
Jonker–Volgenant solves (Numba, ``nogil``) and the copies — release the GIL, so a pool of
threads keeps every core busy without pickling the weights to other processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tqla._array import check_int
from tqla.permuted import PermutedKronecker, permuted_kron

__all__ = ["permuted_kron_many"]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    """Limit BLAS to ``n`` threads per call while the pool runs (threadpoolctl, when
    installed; the limit is process-wide, as BLAS libraries only have a global one)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def permuted_kron_many(
    Ws: Sequence[Any],
    shapes: Sequence[Any] | Any,
    rank: int | Sequence[int] = 1,
    *,
    n_jobs: int | None = None,
    **kwargs: Any,
) -> list[PermutedKronecker]:
    """:func:`tqla.permuted_kron` of several matrices, ``n_jobs`` of them at a time.

    Parameters
    ----------
    Ws : sequence of arrays
        The matrices (any array library each).
    shapes : KroneckerShape, ((m1, n1), (m2, n2)), or a sequence of them
        One shape for all, or one per matrix.
    rank : int or sequence of int
        One rank for all, or one per matrix.
    n_jobs : int, optional
        Matrices decomposed concurrently (threads).  None or 0: the usable CPUs (at most
        the number of matrices); 1: one after another in the calling thread.  With more
        than one job, BLAS runs with max(1, CPUs // n_jobs) threads per call meanwhile
        (through threadpoolctl when it is installed), so the jobs do not oversubscribe
        the cores.
    **kwargs
        Passed to every :func:`tqla.permuted_kron` call (``rule``, ``permute``,
        ``n_iter``, ``tol``, ``solver``, ...).  ``rng`` must be None or an int seed: one
        ``numpy.random.Generator`` shared by concurrent jobs would make the results
        depend on the schedule (each job gets the same seed, as sequential calls with
        that seed would).

    Returns
    -------
    list of PermutedKronecker
        In the order of ``Ws``; each equal to ``permuted_kron(Ws[i], shapes[i],
        rank[i], **kwargs)`` (the jobs share nothing).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Ws = [rng.standard_normal((8, 6)) for _ in range(3)]
    >>> out = permuted_kron_many(Ws, ((4, 3), (2, 2)), 1, n_jobs=2, n_iter=2)
    >>> [P.shape for P in out]
    [(8, 6), (8, 6), (8, 6)]
    >>> bool(np.allclose(out[1].to_dense(), permuted_kron(Ws[1], ((4, 3), (2, 2)), 1,
    ...                                                    n_iter=2).to_dense()))
    True
    """
    if isinstance(Ws, np.ndarray) or not isinstance(Ws, Sequence):
        raise TypeError(
            f"Ws must be a sequence (list or tuple) of matrices, got {type(Ws).__name__}"
        )
    n = len(Ws)
    shape_list = _per_matrix(shapes, n, "shapes", is_one=_is_one_shape)
    rank_list = _per_matrix(rank, n, "rank", is_one=lambda r: not isinstance(r, Sequence))
    rng = kwargs.get("rng")
    if rng is not None and not isinstance(rng, (int, np.integer)):
        raise TypeError(
            f"rng must be None or an int seed for permuted_kron_many (each job seeds its "
            f"own generator), got {type(rng).__name__}"
        )
    jobs = _usable_cpus() if n_jobs in (None, 0) else check_int(n_jobs, "n_jobs", minimum=1)
    jobs = max(1, min(jobs, n))

    def one(i: int) -> PermutedKronecker:
        return permuted_kron(Ws[i], shape_list[i], rank_list[i], **kwargs)

    if jobs == 1:
        return [one(i) for i in range(n)]
    with _blas_threads(max(1, _usable_cpus() // jobs)):
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tqla-job") as ex:
            return list(ex.map(one, range(n)))


def _is_one_shape(s: Any) -> bool:
    from tqla.shapes import KroneckerShape

    if isinstance(s, KroneckerShape):
        return True
    try:  # ((m1, n1), (m2, n2)): two pairs of ints
        (a, b), (c, d) = s
        return all(isinstance(v, (int, np.integer)) for v in (a, b, c, d))
    except (TypeError, ValueError):
        return False


def _per_matrix(value: Any, n: int, name: str, *, is_one: Any) -> list[Any]:
    if is_one(value):
        return [value] * n
    if not isinstance(value, Sequence) or len(value) != n:
        got = len(value) if isinstance(value, Sequence) else type(value).__name__
        raise ValueError(f"{name} must be one value or one per matrix ({n}), got {got}")
    return list(value)
