"""NumPy implementations (host arrays)."""

from __future__ import annotations

import numpy as np

from tqla._kernels import register


@register("rearranged_gram", "numpy")
def rearranged_gram(W: np.ndarray, s, side: str, X: np.ndarray | None = None) -> np.ndarray:
    """Gram matrix of X = R(W): a contiguous rearranged copy, then one BLAS GEMM."""
    from tqla.kron import rearrange

    if X is None:
        X = rearrange(W, s)
    X = np.ascontiguousarray(X)
    G = X.T @ X if side == "right" else X @ X.T
    return symmetrised(G)


def symmetrised(G: np.ndarray) -> np.ndarray:
    """(G + Gᵀ)/2: exactly symmetric (BLAS may round G[i, j] and G[j, i] differently)."""
    G += G.T.copy()
    G *= 0.5
    return G


@register("rearranged_matmul", "numpy")
def rearranged_matmul(W: np.ndarray, s, side: str, V: np.ndarray, X=None) -> np.ndarray:
    from tqla.kron import rearrange

    if X is None:
        X = rearrange(W, s)
    X = np.ascontiguousarray(X)
    return X @ V if side == "right" else X.T @ V
