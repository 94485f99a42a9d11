"""Generic implementations on the array-API namespace (torch, CuPy, array_api_strict, NumPy)."""

from __future__ import annotations

from typing import Any

from tqla._array import array_namespace
from tqla._kernels import register


@register("rearranged_gram", "array_api")
def rearranged_gram(W: Any, s: Any, side: str, X: Any = None) -> Any:
    """Gram matrix of X = R(W): XᵀX (side="right") or XXᵀ (side="left")."""
    from tqla.kron import rearrange

    xp = array_namespace(W)
    if X is None:
        X = rearrange(W, s)
    Xt = xp.permute_dims(X, (1, 0))
    G = xp.matmul(Xt, X) if side == "right" else xp.matmul(X, Xt)
    # exactly symmetric: BLAS may round G[i, j] and G[j, i] differently (issue 9, item 12)
    return (G + xp.permute_dims(G, (1, 0))) / 2


@register("rearranged_matmul", "array_api")
def rearranged_matmul(W: Any, s: Any, side: str, V: Any, X: Any = None) -> Any:
    """R(W) @ V (side="right") or R(W)ᵀ @ V (side="left")."""
    from tqla.kron import rearrange

    xp = array_namespace(W)
    if X is None:
        X = rearrange(W, s)
    return xp.matmul(X, V) if side == "right" else xp.matmul(xp.permute_dims(X, (1, 0)), V)
