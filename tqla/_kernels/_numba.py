"""Numba implementations (host NumPy arrays): products with R(W) read straight from W.

The rearrangement R(W) of an (m1·m2)×(n1·n2) matrix W only moves entries, so the products
with X = R(W) that :func:`tqla.kron_svd` needs can be computed from W in place, without the
(m1·n1)×(m2·n2) rearranged copy the NumPy implementation makes:

* ``rearranged_gram(W, s, side)``: XᵀX (``side="right"``, p×p with p = m2·n2) or XXᵀ
  (``side="left"``, q×q with q = m1·n1);
* ``rearranged_matmul(W, s, side, V)``: X·V (``side="right"``) or Xᵀ·V (``side="left"``);
* ``rearrange(W, s)`` / ``unrearrange(X, s)``: the copies themselves, for
  :func:`tqla.rearrange` and :func:`tqla.unrearrange` on NumPy input (NumPy's strided
  copy of the permuted view moves runs of only n2 entries and reaches about a third of
  the memory bandwidth; this loop reaches about 0.8 of it).

How W is walked (row-major, rows of length N = n1·n2, always along its rows):

* ``side="right"``.  Row (i1, j1) of X is the m2×n2 block of W at block position (i1, j1).
  Work is split in tasks (block-row i1, tile of block-columns j1).  For n2 ∈ {2, 4} (the
  GPT-2 plans) kernels specialised at compile time read the m2 rows of the block-row
  directly: the Gram sums, for each pair of rows (i2, i2'), the n2×n2 outer products of
  their length-n2 segments over j1 in registers, and X·V produces four columns of the
  result per pass over the rows.  For other n2 the tile is first de-interleaved into a
  small (p, tile) buffer T that stays in L1 (T[i2·n2 + j2, j] = W[i1·m2 + i2,
  (j1₀ + j)·n2 + j2]), and the products are contiguous dot products (2×2 register
  blocks) or AXPYs over T.
* ``side="left"``.  Row (i1, j1) of X is made of m2 contiguous segments of W of length n2,
  so XXᵀ and Xᵀ·V are contiguous dot products / AXPYs over those segments, in tasks of
  (row i2 inside the blocks, chunk of j2).

Parallelism: tasks are cut into a fixed number of chunks (it depends on the problem size
only, so results are bitwise reproducible whatever the thread count); chunks are shared by
a small pool of Python threads running the ``nogil`` compiled loops, each with its own
accumulator (no atomics, no false sharing), summed in chunk order at the end.  We measured
that NumPy-style thread pools that block when idle behave far better than Numba's
``parallel=True``/OpenMP layer on machines shared with other processes (where spinning
OpenMP workers made a 2 ms kernel take 140 ms); the number of threads follows
``NUMBA_NUM_THREADS`` when set, else the CPUs this process may run on.

Accumulation is in float64 whatever the input dtype; outputs have W's dtype.  ``fastmath``
is limited to re-association and contraction (so LLVM may vectorise the sums); it does
not assume finite values, so NaN and infinity propagate as in NumPy.

Over ~600 lines on purpose: the compiled kernels are specialised per factor shape (measured
faster, benchmarks/results/kron_cpu.md), and keeping them in one module keeps one compile cache.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba  # noqa: F401  (the ImportError names the optional dependency)
import numpy as np
from numba import njit

from tqla._kernels import register

__all__ = ["num_threads", "rearrange", "rearranged_gram", "rearranged_matmul", "unrearrange"]

_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
_JIT = {"fastmath": _FASTMATH, "cache": True, "nogil": True, "boundscheck": False}

# Entries of the per-task de-interleaved tile T (float64): 4096 × 8 B = 32 KiB, L1-sized.
_TILE_ENTRIES = 4096
# Values of n2 with kernels specialised at compile time (GPT-2's plans use B = 2×4 and
# 4×2; every specialisation costs a few seconds of compilation the first time it is used,
# cached on disk afterwards).  Other n2 use the generic de-interleaving kernels.
_SPECIALISED_N2 = (2, 4)
# Block-columns per task of the specialised right-side kernels.
_SPEC_TILE = 2048
# Above this size of the side of R(W) a product is taken on, the kernels make the
# rearranged copy and call BLAS: the O(q·p²) (or O(q·p·r)) arithmetic then dominates the
# copy, and BLAS blocks it better than these loops (measured: the direct loops win up to
# a side of 128, BLAS wins at 512).
_DIRECT_MAX_SIDE = 256
# Length of a j2 segment of the left-side kernels (16 KiB of float64).
_SEG = 2048
# Number of chunks the tasks are cut into (partial sums are added in chunk order).
_MAX_CHUNKS = 16
# Below this many entries of W, everything runs in the calling thread.
_MIN_PARALLEL = 1 << 16

# --------------------------------------------------------------------------------------
# Thread pool
# --------------------------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def num_threads() -> int:
    """Threads the kernels use: ``NUMBA_NUM_THREADS`` if set, else the usable CPUs."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env:
        try:
            n = min(n, int(env))
        except ValueError:
            pass
    return max(1, n)


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < workers:
            # A larger pool replaces the old one, which is not shut down: another thread
            # may still be submitting to it; its idle workers just stay blocked.
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tqla-numba")
            _POOL_SIZE = workers
        return _POOL


def _reset_pool_after_fork() -> None:  # pragma: no cover - runs in forked children
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_after_fork)


def _run_chunks(fn: Any, nchunks: int, parallel: bool, *args: Any) -> None:
    """Call ``fn(*args, c_lo, c_hi)`` over chunk ranges covering ``range(nchunks)``.

    One range per thread; the calling thread takes the last one.
    """
    workers = min(num_threads(), nchunks) if parallel else 1
    bounds = [w * nchunks // workers for w in range(workers + 1)]
    if workers == 1:
        fn(*args, 0, nchunks)
        return
    pool = _pool(workers - 1)
    futures = [pool.submit(fn, *args, bounds[w], bounds[w + 1]) for w in range(workers - 1)]
    fn(*args, bounds[-2], bounds[-1])
    for f in futures:
        f.result()


def _n_chunks(n_tasks: int) -> int:
    return max(1, min(int(n_tasks), _MAX_CHUNKS))


# --------------------------------------------------------------------------------------
# side="right", generic n2: de-interleave a tile of block-row i1, then contiguous loops.
# --------------------------------------------------------------------------------------
@njit(inline="always", fastmath=_FASTMATH, nogil=True, boundscheck=False)
def _deinterleave(W, T, i1, t0, L, m2, n2):  # pragma: no cover - compiled
    """T[i2·n2 + j2, j] = W[i1·m2 + i2, (t0 + j)·n2 + j2] for j < L."""
    for i2 in range(m2):
        row = W[i1 * m2 + i2, t0 * n2 : (t0 + L) * n2]
        for j2 in range(n2):
            Trow = T[i2 * n2 + j2]
            for j in range(L):
                Trow[j] = row[j * n2 + j2]


@njit(**_JIT)
def _gram_tile(T, L, G):  # pragma: no cover - compiled
    """G[a, b] += Σ_j T[a, j]·T[b, j] for b >= a (upper triangle), 2×2 register blocks."""
    p = T.shape[0]
    a = 0
    while a + 1 < p:
        Ta0 = T[a, :L]
        Ta1 = T[a + 1, :L]
        b = a
        while b + 1 < p:
            Tb0 = T[b, :L]
            Tb1 = T[b + 1, :L]
            s00 = 0.0
            s01 = 0.0
            s10 = 0.0
            s11 = 0.0
            for j in range(L):
                x0 = Ta0[j]
                x1 = Ta1[j]
                y0 = Tb0[j]
                y1 = Tb1[j]
                s00 += x0 * y0
                s01 += x0 * y1
                s10 += x1 * y0
                s11 += x1 * y1
            G[a, b] += s00
            G[a, b + 1] += s01
            G[a + 1, b] += s10
            G[a + 1, b + 1] += s11
            b += 2
        if b < p:
            Tb0 = T[b, :L]
            s0 = 0.0
            s1 = 0.0
            for j in range(L):
                s0 += Ta0[j] * Tb0[j]
                s1 += Ta1[j] * Tb0[j]
            G[a, b] += s0
            G[a + 1, b] += s1
        a += 2
    if a < p:
        Ta0 = T[a, :L]
        s0 = 0.0
        for j in range(L):
            s0 += Ta0[j] * Ta0[j]
        G[a, a] += s0


@njit(**_JIT)
def _gram_right_generic(
    W, m1, m2, n1, n2, tile, ntasks, nchunks, parts, c_lo, c_hi
):  # pragma: no cover - compiled
    p = m2 * n2
    ntiles = (n1 + tile - 1) // tile
    T = np.empty((p, tile))
    for c in range(c_lo, c_hi):
        G = parts[c]
        for task in range(c * ntasks // nchunks, (c + 1) * ntasks // nchunks):
            i1 = task // ntiles
            t0 = (task % ntiles) * tile
            L = min(n1, t0 + tile) - t0
            _deinterleave(W, T, i1, t0, L, m2, n2)
            _gram_tile(T, L, G)


@njit(**_JIT)
def _matmul_right(
    W, V, m1, m2, n1, n2, tile, ntasks, nchunks, out, c_lo, c_hi
):  # pragma: no cover - compiled
    """out[k, i1·n1 + j1] = Σ_{i2, j2} W[i1·m2 + i2, j1·n2 + j2]·V[i2·n2 + j2, k]."""
    p = m2 * n2
    r = V.shape[1]
    ntiles = (n1 + tile - 1) // tile
    T = np.empty((p, tile))
    acc = np.empty(tile)
    for task in range(c_lo * ntasks // nchunks, c_hi * ntasks // nchunks):
        i1 = task // ntiles
        t0 = (task % ntiles) * tile
        L = min(n1, t0 + tile) - t0
        _deinterleave(W, T, i1, t0, L, m2, n2)
        ac = acc[:L]
        for k in range(r):
            v0 = V[0, k]
            T0 = T[0, :L]
            for j in range(L):
                ac[j] = v0 * T0[j]
            a = 1
            while a + 1 < p:
                va = V[a, k]
                vb = V[a + 1, k]
                Ta = T[a, :L]
                Tb = T[a + 1, :L]
                for j in range(L):
                    ac[j] += va * Ta[j] + vb * Tb[j]
                a += 2
            if a < p:
                va = V[a, k]
                Ta = T[a, :L]
                for j in range(L):
                    ac[j] += va * Ta[j]
            o = out[k, i1 * n1 + t0 : i1 * n1 + t0 + L]
            for j in range(L):
                o[j] = ac[j]


# --------------------------------------------------------------------------------------
# side="right", n2 in _SPECIALISED_N2: straight from W's rows (no buffer).
# --------------------------------------------------------------------------------------
def _make_gram_right_small(N2: int):
    """A Gram kernel with n2 = N2 (1 to 4) fixed at compile time (cached per N2)."""

    @njit(**_JIT)
    def kernel(W, m1, m2, n1, tile, ntasks, nchunks, parts, c_lo, c_hi):  # pragma: no cover
        ntiles = (n1 + tile - 1) // tile
        for c in range(c_lo, c_hi):
            G = parts[c]
            for task in range(c * ntasks // nchunks, (c + 1) * ntasks // nchunks):
                i1 = task // ntiles
                t0 = (task % ntiles) * tile
                L = min(n1, t0 + tile) - t0
                for a in range(m2):
                    ra = W[i1 * m2 + a, t0 * N2 : (t0 + L) * N2]
                    for b in range(a, m2):
                        rb = W[i1 * m2 + b, t0 * N2 : (t0 + L) * N2]
                        s00 = s01 = s02 = s03 = 0.0
                        s10 = s11 = s12 = s13 = 0.0
                        s20 = s21 = s22 = s23 = 0.0
                        s30 = s31 = s32 = s33 = 0.0
                        for j in range(L):
                            x0 = np.float64(ra[j * N2 + 0])
                            y0 = np.float64(rb[j * N2 + 0])
                            s00 += x0 * y0
                            if N2 > 1:
                                x1 = np.float64(ra[j * N2 + 1])
                                y1 = np.float64(rb[j * N2 + 1])
                                s01 += x0 * y1
                                s10 += x1 * y0
                                s11 += x1 * y1
                            if N2 > 2:
                                x2 = np.float64(ra[j * N2 + 2])
                                y2 = np.float64(rb[j * N2 + 2])
                                s02 += x0 * y2
                                s12 += x1 * y2
                                s20 += x2 * y0
                                s21 += x2 * y1
                                s22 += x2 * y2
                            if N2 > 3:
                                x3 = np.float64(ra[j * N2 + 3])
                                y3 = np.float64(rb[j * N2 + 3])
                                s03 += x0 * y3
                                s13 += x1 * y3
                                s23 += x2 * y3
                                s30 += x3 * y0
                                s31 += x3 * y1
                                s32 += x3 * y2
                                s33 += x3 * y3
                        oa = a * N2
                        ob = b * N2
                        G[oa, ob] += s00
                        if N2 > 1:
                            G[oa, ob + 1] += s01
                            G[oa + 1, ob] += s10
                            G[oa + 1, ob + 1] += s11
                        if N2 > 2:
                            G[oa, ob + 2] += s02
                            G[oa + 1, ob + 2] += s12
                            G[oa + 2, ob] += s20
                            G[oa + 2, ob + 1] += s21
                            G[oa + 2, ob + 2] += s22
                        if N2 > 3:
                            G[oa, ob + 3] += s03
                            G[oa + 1, ob + 3] += s13
                            G[oa + 2, ob + 3] += s23
                            G[oa + 3, ob] += s30
                            G[oa + 3, ob + 1] += s31
                            G[oa + 3, ob + 2] += s32
                            G[oa + 3, ob + 3] += s33

    return kernel


def _make_matmul_right_small(N2: int):
    """X·V with n2 = N2 (1 to 4) fixed at compile time: four columns of V per pass."""

    @njit(**_JIT)
    def kernel(W, V, m1, m2, n1, tile, ntasks, nchunks, out, c_lo, c_hi):  # pragma: no cover
        r = V.shape[1]
        ntiles = (n1 + tile - 1) // tile
        dummy = np.empty((4, tile), dtype=out.dtype)  # sink for the padding columns
        c = np.zeros((4, 4))
        for task in range(c_lo * ntasks // nchunks, c_hi * ntasks // nchunks):
            i1 = task // ntiles
            t0 = (task % ntiles) * tile
            L = min(n1, t0 + tile) - t0
            col = i1 * n1 + t0
            for k in range(0, r, 4):
                nk = min(4, r - k)
                o0 = out[k, col : col + L]
                o1 = out[k + 1, col : col + L] if nk > 1 else dummy[1, :L]
                o2 = out[k + 2, col : col + L] if nk > 2 else dummy[2, :L]
                o3 = out[k + 3, col : col + L] if nk > 3 else dummy[3, :L]
                for i2 in range(m2):
                    row = W[i1 * m2 + i2, t0 * N2 : (t0 + L) * N2]
                    for x in range(N2):
                        for kk in range(4):
                            c[x, kk] = V[i2 * N2 + x, k + kk] if kk < nk else 0.0
                    c00 = c[0, 0]
                    c01 = c[0, 1]
                    c02 = c[0, 2]
                    c03 = c[0, 3]
                    c10 = c[1, 0]
                    c11 = c[1, 1]
                    c12 = c[1, 2]
                    c13 = c[1, 3]
                    c20 = c[2, 0]
                    c21 = c[2, 1]
                    c22 = c[2, 2]
                    c23 = c[2, 3]
                    c30 = c[3, 0]
                    c31 = c[3, 1]
                    c32 = c[3, 2]
                    c33 = c[3, 3]
                    first = i2 == 0
                    for j in range(L):
                        x0 = np.float64(row[j * N2 + 0])
                        s0 = x0 * c00
                        s1 = x0 * c01
                        s2 = x0 * c02
                        s3 = x0 * c03
                        if N2 > 1:
                            x1 = np.float64(row[j * N2 + 1])
                            s0 += x1 * c10
                            s1 += x1 * c11
                            s2 += x1 * c12
                            s3 += x1 * c13
                        if N2 > 2:
                            x2 = np.float64(row[j * N2 + 2])
                            s0 += x2 * c20
                            s1 += x2 * c21
                            s2 += x2 * c22
                            s3 += x2 * c23
                        if N2 > 3:
                            x3 = np.float64(row[j * N2 + 3])
                            s0 += x3 * c30
                            s1 += x3 * c31
                            s2 += x3 * c32
                            s3 += x3 * c33
                        if first:
                            o0[j] = s0
                            o1[j] = s1
                            o2[j] = s2
                            o3[j] = s3
                        else:
                            o0[j] += s0
                            o1[j] += s1
                            o2[j] += s2
                            o3[j] += s3

    return kernel


_SPECIALISED: dict[tuple[Any, int], Any] = {}
_SPECIALISED_LOCK = threading.Lock()


def _specialised(factory: Any, n2: int) -> Any:
    """The kernel ``factory(n2)``, made once per (factory, n2)."""
    key = (factory, n2)
    with _SPECIALISED_LOCK:
        if key not in _SPECIALISED:
            _SPECIALISED[key] = factory(n2)
        return _SPECIALISED[key]


def _gram_right_small(n2: int) -> Any:
    return _specialised(_make_gram_right_small, n2)


def _matmul_right_small(n2: int) -> Any:
    return _specialised(_make_matmul_right_small, n2)


# --------------------------------------------------------------------------------------
# side="left": rows of X are m2 contiguous segments of W of length n2.
# --------------------------------------------------------------------------------------
@njit(**_JIT)
def _gram_left(
    W, m1, m2, n1, n2, seg, ntasks, nchunks, parts, c_lo, c_hi
):  # pragma: no cover - compiled
    q = m1 * n1
    nseg = (n2 + seg - 1) // seg
    for c in range(c_lo, c_hi):
        G = parts[c]
        for task in range(c * ntasks // nchunks, (c + 1) * ntasks // nchunks):
            i2 = task // nseg
            lo = (task % nseg) * seg
            L = min(n2, lo + seg) - lo
            a = 0
            while a < q:
                a1 = min(a + 1, q - 1)  # when q is odd the last block repeats a row
                oa0 = (a % n1) * n2 + lo
                oa1 = (a1 % n1) * n2 + lo
                sa0 = W[(a // n1) * m2 + i2, oa0 : oa0 + L]
                sa1 = W[(a1 // n1) * m2 + i2, oa1 : oa1 + L]
                b = a
                while b < q:
                    b1 = min(b + 1, q - 1)
                    ob0 = (b % n1) * n2 + lo
                    ob1 = (b1 % n1) * n2 + lo
                    sb0 = W[(b // n1) * m2 + i2, ob0 : ob0 + L]
                    sb1 = W[(b1 // n1) * m2 + i2, ob1 : ob1 + L]
                    s00 = 0.0
                    s01 = 0.0
                    s10 = 0.0
                    s11 = 0.0
                    for j in range(L):
                        x0 = np.float64(sa0[j])
                        x1 = np.float64(sa1[j])
                        y0 = np.float64(sb0[j])
                        y1 = np.float64(sb1[j])
                        s00 += x0 * y0
                        s01 += x0 * y1
                        s10 += x1 * y0
                        s11 += x1 * y1
                    G[a, b] += s00
                    if b1 != b:
                        G[a, b1] += s01
                    if a1 != a:
                        G[a1, b] += s10
                        if b1 != b:
                            G[a1, b1] += s11
                    b += 2
                a += 2


@njit(**_JIT)
def _matmul_left(
    W, U, m1, m2, n1, n2, seg, ntasks, nchunks, out, c_lo, c_hi
):  # pragma: no cover - compiled
    """out[k, i2·n2 + j2] = Σ_{i1, j1} W[i1·m2 + i2, j1·n2 + j2]·U[i1·n1 + j1, k]."""
    q = m1 * n1
    r = U.shape[1]
    nseg = (n2 + seg - 1) // seg
    acc = np.empty(seg)
    for task in range(c_lo * ntasks // nchunks, c_hi * ntasks // nchunks):
        i2 = task // nseg
        lo = (task % nseg) * seg
        L = min(n2, lo + seg) - lo
        ac = acc[:L]
        for k in range(r):
            for j in range(L):
                ac[j] = 0.0
            a = 0
            while a + 1 < q:
                oa0 = (a % n1) * n2 + lo
                oa1 = ((a + 1) % n1) * n2 + lo
                sa0 = W[(a // n1) * m2 + i2, oa0 : oa0 + L]
                sa1 = W[((a + 1) // n1) * m2 + i2, oa1 : oa1 + L]
                u0 = U[a, k]
                u1 = U[a + 1, k]
                for j in range(L):
                    ac[j] += u0 * sa0[j] + u1 * sa1[j]
                a += 2
            if a < q:
                oa0 = (a % n1) * n2 + lo
                sa0 = W[(a // n1) * m2 + i2, oa0 : oa0 + L]
                u0 = U[a, k]
                for j in range(L):
                    ac[j] += u0 * sa0[j]
            o = out[k, i2 * n2 + lo : i2 * n2 + lo + L]
            for j in range(L):
                o[j] = ac[j]


# --------------------------------------------------------------------------------------
# The rearranged copy itself (and its inverse), for rearrange() / unrearrange()
# --------------------------------------------------------------------------------------
@njit(**_JIT)
def _rearrange_copy(W, out, m1, m2, n1, n2, ntasks, nchunks, c_lo, c_hi):  # pragma: no cover
    """out[i1·n1 + j1, i2·n2 + j2] = W[i1·m2 + i2, j1·n2 + j2], block-rows of a chunk."""
    for i1 in range(c_lo * ntasks // nchunks, c_hi * ntasks // nchunks):
        for i2 in range(m2):
            row = W[i1 * m2 + i2]
            for j1 in range(n1):
                o = out[i1 * n1 + j1]
                for j2 in range(n2):
                    o[i2 * n2 + j2] = row[j1 * n2 + j2]


def _make_rearrange_copy_small(N2: int):
    """The copy with n2 = N2 fixed at compile time: each output row is written whole,
    from its m2 segments of N2 entries (unrolled moves)."""

    @njit(**_JIT)
    def kernel(W, out, m1, m2, n1, n2, ntasks, nchunks, c_lo, c_hi):  # pragma: no cover
        p = m2 * N2
        N = n1 * N2
        flat = out.reshape(-1)
        src = W.reshape(-1)
        for i1 in range(c_lo * ntasks // nchunks, c_hi * ntasks // nchunks):
            for j1 in range(n1):
                o = (i1 * n1 + j1) * p
                for i2 in range(m2):
                    w = (i1 * m2 + i2) * N + j1 * N2
                    for j2 in range(N2):
                        flat[o + i2 * N2 + j2] = src[w + j2]

    return kernel


@njit(**_JIT)
def _unrearrange_copy(X, out, m1, m2, n1, n2, ntasks, nchunks, c_lo, c_hi):  # pragma: no cover
    """out[i1·m2 + i2, j1·n2 + j2] = X[i1·n1 + j1, i2·n2 + j2], block-rows of a chunk."""
    for i1 in range(c_lo * ntasks // nchunks, c_hi * ntasks // nchunks):
        for i2 in range(m2):
            orow = out[i1 * m2 + i2]
            for j1 in range(n1):
                x = X[i1 * n1 + j1]
                for j2 in range(n2):
                    orow[j1 * n2 + j2] = x[i2 * n2 + j2]


def _copy_kernel(fn: Any, A: np.ndarray, s: Any, out_shape: tuple[int, int]) -> np.ndarray:
    (m1, n1), (m2, n2) = s
    m1, n1, m2, n2 = int(m1), int(n1), int(m2), int(n2)
    A = np.ascontiguousarray(A)
    out = np.empty(out_shape, dtype=A.dtype)
    nchunks = _n_chunks(m1)
    _run_chunks(fn, nchunks, A.size >= _MIN_PARALLEL, A, out, m1, m2, n1, n2, m1, nchunks)
    return out


@register("rearrange", "numba")
def rearrange(W: np.ndarray, s: Any) -> np.ndarray:
    """A C-contiguous copy of R(W) (float32/float64 W of the right shape, not checked)."""
    (m1, n1), (m2, n2) = s
    fn = _specialised(_make_rearrange_copy_small, n2) if n2 in _SPECIALISED_N2 else None
    return _copy_kernel(fn or _rearrange_copy, W, s, (m1 * n1, m2 * n2))


@register("unrearrange", "numba")
def unrearrange(X: np.ndarray, s: Any) -> np.ndarray:
    """A C-contiguous copy of R⁻¹(X) (float32/float64 X of the right shape, not checked)."""
    (m1, n1), (m2, n2) = s
    return _copy_kernel(_unrearrange_copy, X, s, (m1 * m2, n1 * n2))


# --------------------------------------------------------------------------------------
# Kernel-table entries
# --------------------------------------------------------------------------------------
def _prepare(W: Any, s: Any, side: str) -> tuple[np.ndarray, int, int, int, int]:
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    W = np.asarray(W)
    if W.dtype not in (np.float32, np.float64):
        raise TypeError(f"the numba kernels take float32 or float64 arrays, got {W.dtype}")
    (m1, n1), (m2, n2) = s
    m1, m2, n1, n2 = int(m1), int(m2), int(n1), int(n2)
    if W.shape != (m1 * m2, n1 * n2):
        raise ValueError(
            f"W of shape {W.shape} does not match A {(m1, n1)} ⊗ B {(m2, n2)}, which needs "
            f"{(m1 * m2, n1 * n2)}"
        )
    # A C-contiguous W is read in place; any other layout is copied once.
    return np.ascontiguousarray(W), m1, m2, n1, n2


def _sum_parts(parts: np.ndarray) -> np.ndarray:
    """Add the per-chunk upper triangles in chunk order and mirror them.

    Non-finite sums (from NaN/inf in W, or overflow) are returned as they are, without
    warnings: the caller checks the Gram matrix and reports on W.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        G = parts[0].copy()
        for c in range(1, parts.shape[0]):
            G += parts[c]
        return np.triu(G) + np.triu(G, 1).T


@register("rearranged_gram", "numba")
def rearranged_gram(W: np.ndarray, s: Any, side: str, X: Any = None) -> np.ndarray:
    """Gram matrix of X = R(W) computed from W in place (``X`` is ignored).

    Returns XᵀX (p×p, ``side="right"``) or XXᵀ (q×q, ``side="left"``) in W's dtype,
    accumulated in float64.
    """
    W, m1, m2, n1, n2 = _prepare(W, s, side)
    parallel = W.size >= _MIN_PARALLEL
    if (m2 * n2 if side == "right" else m1 * n1) > _DIRECT_MAX_SIDE:
        X = rearrange(W, ((m1, n1), (m2, n2)))
        G = X.T @ X if side == "right" else X @ X.T
        return np.triu(G) + np.triu(G, 1).T  # exactly symmetric
    if side == "right":
        p = m2 * n2
        if n2 in _SPECIALISED_N2:
            tile = min(n1, _SPEC_TILE)
            kernel = _gram_right_small(n2)
            ntasks = m1 * (-(-n1 // tile))
            nchunks = _n_chunks(ntasks)
            parts = np.zeros((nchunks, p, p))
            _run_chunks(kernel, nchunks, parallel, W, m1, m2, n1, tile, ntasks, nchunks, parts)
        else:
            tile = max(1, min(n1, _TILE_ENTRIES // p))
            ntasks = m1 * (-(-n1 // tile))
            nchunks = _n_chunks(ntasks)
            parts = np.zeros((nchunks, p, p))
            _run_chunks(
                _gram_right_generic, nchunks, parallel,
                W, m1, m2, n1, n2, tile, ntasks, nchunks, parts,
            )  # fmt: skip
    else:
        q = m1 * n1
        seg = min(n2, _SEG)
        ntasks = m2 * (-(-n2 // seg))
        nchunks = _n_chunks(ntasks)
        parts = np.zeros((nchunks, q, q))
        _run_chunks(_gram_left, nchunks, parallel, W, m1, m2, n1, n2, seg, ntasks, nchunks, parts)
    return _sum_parts(parts).astype(W.dtype, copy=False)


@register("rearranged_matmul", "numba")
def rearranged_matmul(W: np.ndarray, s: Any, side: str, V: np.ndarray, X: Any = None) -> np.ndarray:
    """R(W) @ V (``side="right"``) or R(W)ᵀ @ V (``side="left"``) from W in place.

    ``X`` is ignored; V may be 1-D or 2-D.  The 2-D result, of shape (q, r) or (p, r), is
    the transpose of a C-contiguous (r, q) / (r, p) array, so ``result.T`` reshapes
    without a copy.  Accumulated in float64; W's dtype out.
    """
    W, m1, m2, n1, n2 = _prepare(W, s, side)
    V = np.asarray(V)
    if V.ndim == 1:
        return rearranged_matmul(W, s, side, V[:, None], X)[:, 0]
    inner = m2 * n2 if side == "right" else m1 * n1
    if V.ndim != 2 or V.shape[0] != inner:
        what = "R(W) @ V" if side == "right" else "R(W).T @ V"
        raise ValueError(f"V must have {inner} rows for {what}, got shape {V.shape}")
    if inner > _DIRECT_MAX_SIDE:
        X = rearrange(W, ((m1, n1), (m2, n2)))
        Vw = V.astype(W.dtype, copy=False)
        P = (Vw.T @ X.T) if side == "right" else (Vw.T @ X)  # (r, q) / (r, p), C order
        return P.T
    Vd = np.ascontiguousarray(V, dtype=np.float64)
    r = Vd.shape[1]
    parallel = W.size >= _MIN_PARALLEL
    if side == "right" and n2 in _SPECIALISED_N2:
        tile = min(n1, _SPEC_TILE)
        ntasks = m1 * (-(-n1 // tile))
        nchunks = _n_chunks(ntasks)
        out = np.empty((r, m1 * n1), dtype=W.dtype)
        kernel = _matmul_right_small(n2)
        _run_chunks(kernel, nchunks, parallel, W, Vd, m1, m2, n1, tile, ntasks, nchunks, out)
    elif side == "right":
        tile = max(1, min(n1, _TILE_ENTRIES // (m2 * n2)))
        ntasks = m1 * (-(-n1 // tile))
        nchunks = _n_chunks(ntasks)
        out = np.empty((r, m1 * n1), dtype=W.dtype)
        _run_chunks(
            _matmul_right, nchunks, parallel, W, Vd, m1, m2, n1, n2, tile, ntasks, nchunks, out
        )
    else:
        seg = min(n2, _SEG)
        ntasks = m2 * (-(-n2 // seg))
        nchunks = _n_chunks(ntasks)
        out = np.empty((r, m2 * n2), dtype=W.dtype)
        _run_chunks(
            _matmul_left, nchunks, parallel, W, Vd, m1, m2, n1, n2, seg, ntasks, nchunks, out
        )
    return out.T
