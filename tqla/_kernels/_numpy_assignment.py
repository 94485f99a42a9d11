"""NumPy implementations of the assignment kernels (host arrays)."""

from __future__ import annotations

import numpy as np

from tqla._kernels import register


@register("slots_cost", "numpy")
def slots_cost(C: np.ndarray, Vs: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot cost of the ``slots`` rule: cost[c, t] = −‖Y[t] − P[t] + P[c]‖², P = C @ Vs.

    Parameters
    ----------
    C : (m1, n1, n2)
        The candidate rows (the rows now in the slot), each cut into n1 segments.
    Vs : (n2, r)
        The slot's rows of V (the held orthonormal basis of the B factors).
    Y : (m1, n1, r)
        Projections R(U)·V of every block-row with the current arrangement.

    Returns
    -------
    cost : (m1, m1)
        ``cost[c, t]`` is minus the energy captured by block-row t when candidate c sits in
        it; built from two norms and one BLAS GEMM (m1 × n1·k × m1 with k = min(r, n2)).
    P : (m1, n1, r)
        The candidates' projections (for updating Y after the assignment).
    """
    m1, n1, n2 = C.shape
    r = Vs.shape[1]
    P = np.matmul(C, Vs)  # (m1, n1, r): one GEMM m1·n1 × n2 × r
    H = Y - P
    p = np.einsum("cjk,cjk->c", P, P)
    h = np.einsum("tjk,tjk->t", H, H)
    if r <= n2:
        cross = P.reshape(m1, n1 * r) @ H.reshape(m1, n1 * r).T
    else:  # contract over n1·n2 instead: <P_c, H_t> = <C_c, H_t Vsᵀ>
        G = np.matmul(H, Vs.T)  # (m1, n1, n2)
        cross = np.ascontiguousarray(C).reshape(m1, n1 * n2) @ G.reshape(m1, n1 * n2).T
    cost = cross
    cost *= -2.0
    cost -= p[:, None]
    cost -= h[None, :]
    return cost, P
