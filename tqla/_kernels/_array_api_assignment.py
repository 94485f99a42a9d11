"""Array-API implementations of the assignment kernels (torch CPU/CUDA, CuPy, ...).

The cost is built on the arrays' device with their own BLAS/cuBLAS; only the finished
cost matrix goes to the host for the LSAP solver (see :func:`tqla.assignment.lsap`).
"""

from __future__ import annotations

from typing import Any

from tqla._array import array_namespace
from tqla._kernels import register


@register("slots_cost", "array_api")
def slots_cost(C: Any, Vs: Any, Y: Any) -> tuple[Any, Any]:
    """cost[c, t] = −‖Y[t] − P[t] + P[c]‖² with P = C @ Vs; see the NumPy kernel."""
    xp = array_namespace(C, Vs, Y)
    m1, n1, n2 = (int(v) for v in C.shape)
    r = int(Vs.shape[1])
    P = xp.matmul(C, Vs)  # (m1, n1, r)
    H = Y - P
    p = xp.sum(xp.reshape(P * P, (m1, n1 * r)), axis=1)
    h = xp.sum(xp.reshape(H * H, (m1, n1 * r)), axis=1)
    if r <= n2:
        cross = xp.matmul(
            xp.reshape(P, (m1, n1 * r)), xp.permute_dims(xp.reshape(H, (m1, n1 * r)), (1, 0))
        )
    else:
        G = xp.matmul(H, xp.permute_dims(Vs, (1, 0)))  # (m1, n1, n2)
        cross = xp.matmul(
            xp.reshape(C, (m1, n1 * n2)), xp.permute_dims(xp.reshape(G, (m1, n1 * n2)), (1, 0))
        )
    cost = -2.0 * cross - xp.reshape(p, (m1, 1)) - xp.reshape(h, (1, m1))
    return cost, P
