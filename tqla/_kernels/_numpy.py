"""NumPy implementations (host arrays), fast enough that Numba is optional.

The rearrangement R(W) of an (m1·m2)×(n1·n2) matrix W moves whole runs of n2 entries
(one row of a B-sized block).  NumPy's own copy of the permuted view
``W.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3)`` runs its inner loop over those n2
entries only (n2 = 2 or 4 in GPT-2's plans), so it reaches a fraction of the memory
bandwidth.  :func:`rearrange_copy` instead views each run as *one* element of an
n2·itemsize-byte dtype (an unsigned integer of that size, else a void dtype) and moves
the runs with one strided assignment per index of the smaller of the m2 and n1 axes, whose
inner loop is the long axis (NumPy's own copy of the permuted unit view when runs are 64
bytes or longer).  Entries are moved bit for bit (NaN payloads, signed zeros).

The Gram route of :func:`tqla.kron_svd` then runs on that copy with BLAS: ``XᵀX`` (a
SYRK) and ``Vᵀ·Xᵀ`` (one GEMM writing the (r, q) result in C order, so the large factor
needs no transposed copy).  Measured in ``benchmarks/bench_kron.py``
(``benchmarks/results/kron_cpu.md``).
"""

from __future__ import annotations

import numpy as np

from tqla._array import c_contiguous
from tqla._kernels import register

__all__ = ["rearrange_copy", "unrearrange_copy"]

# Runs of at least this many bytes are long enough for NumPy's own copy of the permuted
# view of units; shorter runs are moved with one strided assignment per index of the
# smaller middle axis (inner loop over the longer axis), unless that axis is long too.
_LONG_RUN_BYTES = 64
_MAX_SLICES = 64


def _unit(nbytes: int) -> np.dtype:
    """A dtype whose elements are ``nbytes`` raw bytes (copied bit for bit)."""
    ints = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
    return np.dtype(ints.get(nbytes, (np.void, nbytes)))


def _dims(s) -> tuple[int, int, int, int]:
    (m1, n1), (m2, n2) = s
    return int(m1), int(n1), int(m2), int(n2)


def _move(dst: np.ndarray, src: np.ndarray, m2: int, n1: int, forward: bool) -> None:
    """Copy the (m1, m2, n1) unit array ``src`` into the (m1, n1, m2) ``dst``
    (``forward``), or the (m1, n1, m2) ``src`` into the (m1, m2, n1) ``dst``.

    Measured (benchmarks/bench_kron.py): one assignment per index of the smaller middle
    axis over the whole matrix beats cache-sized groups of block-rows, and NumPy's own
    transposed copy wins once a unit is 64 bytes or more.
    """
    if dst.dtype.itemsize >= _LONG_RUN_BYTES or min(m2, n1) > _MAX_SLICES:
        dst[...] = src.transpose(0, 2, 1)
    elif forward:  # dst: (m1, n1, m2), src: (m1, m2, n1)
        if m2 <= n1:
            for a in range(m2):
                dst[:, :, a] = src[:, a, :]
        else:
            for j in range(n1):
                dst[:, j, :] = src[:, :, j]
    elif m2 <= n1:  # dst: (m1, m2, n1), src: (m1, n1, m2)
        for a in range(m2):
            dst[:, a, :] = src[:, :, a]
    else:
        for j in range(n1):
            dst[:, :, j] = src[:, j, :]


def rearrange_copy(W: np.ndarray, s) -> np.ndarray:
    """A C-contiguous copy of R(W) for a 2-D NumPy array W of matching shape (not checked)."""
    m1, n1, m2, n2 = _dims(s)
    W = c_contiguous(W)
    out = np.empty((m1 * n1, m2 * n2), dtype=W.dtype)
    if out.size == 0:
        return out
    unit = _unit(n2 * W.dtype.itemsize)
    src = W.view(unit).reshape(m1, m2, n1)
    dst = out.view(unit).reshape(m1, n1, m2)
    _move(dst, src, m2, n1, forward=True)
    return out


def unrearrange_copy(X: np.ndarray, s) -> np.ndarray:
    """A C-contiguous copy of R⁻¹(X) for a 2-D NumPy array X of shape (m1·n1, m2·n2)."""
    m1, n1, m2, n2 = _dims(s)
    X = c_contiguous(X)
    out = np.empty((m1 * m2, n1 * n2), dtype=X.dtype)
    if out.size == 0:
        return out
    unit = _unit(n2 * X.dtype.itemsize)
    src = X.view(unit).reshape(m1, n1, m2)
    dst = out.view(unit).reshape(m1, m2, n1)
    _move(dst, src, m2, n1, forward=False)
    return out


@register("rearrange", "numpy")
def rearrange(W: np.ndarray, s) -> np.ndarray:
    """R(W) as a C-contiguous copy (:func:`rearrange_copy`)."""
    return rearrange_copy(W, s)


@register("unrearrange", "numpy")
def unrearrange(X: np.ndarray, s) -> np.ndarray:
    """R⁻¹(X) as a C-contiguous copy (:func:`unrearrange_copy`)."""
    return unrearrange_copy(X, s)


def _rearranged(W: np.ndarray, s, X: np.ndarray | None) -> np.ndarray:
    if X is None:
        return rearrange_copy(W, s)
    return c_contiguous(X)


@register("rearranged_gram", "numpy")
def rearranged_gram(W: np.ndarray, s, side: str, X: np.ndarray | None = None) -> np.ndarray:
    """Gram matrix of X = R(W) (``X`` when given, else one rearranged copy): XᵀX for
    ``side="right"`` (a BLAS SYRK), XXᵀ for ``side="left"``; exactly symmetric."""
    X = _rearranged(W, s, X)
    G = X.T @ X if side == "right" else X @ X.T
    return symmetrised(G)


def symmetrised(G: np.ndarray) -> np.ndarray:
    """(G + Gᵀ)/2: exactly symmetric (BLAS may round G[i, j] and G[j, i] differently)."""
    G += G.T.copy()
    G *= 0.5
    return G


@register("rearranged_matmul", "numpy")
def rearranged_matmul(W: np.ndarray, s, side: str, V: np.ndarray, X=None) -> np.ndarray:
    """R(W) @ V (``side="right"``) or R(W)ᵀ @ V (``side="left"``).

    The 2-D result is the transpose of a C-contiguous (r, q) / (r, p) array (one GEMM
    Vᵀ·Xᵀ), so ``result.T`` needs no copy; V may be 1-D.
    """
    X = _rearranged(W, s, X)
    V = np.asarray(V)
    if V.ndim == 1:
        return rearranged_matmul(W, s, side, V[:, None], X)[:, 0]
    Vt = V.T.astype(X.dtype, copy=False)
    P = Vt @ X.T if side == "right" else Vt @ X
    return P.T
