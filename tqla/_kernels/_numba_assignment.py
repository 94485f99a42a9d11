"""Numba implementations of the assignment kernels (host NumPy arrays).

* ``"lsap_jv"`` — a Jonker–Volgenant style shortest-augmenting-path LSAP solver that
  accepts initial column prices (dual variables) and an initial assignment, so a problem
  close to a previously solved one can start from the previous solution;
* ``"slots_cost"`` — the fused slot-cost build of the ``slots`` rule (see
  :func:`tqla.assignment.slots_cost`).

Numba is optional: ``pip install 'tqla[numba]'``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from tqla._kernels import register

_INF = np.inf


@nb.njit(cache=True, nogil=True)
def _augment(cost, u, v, path, row4col, spc, cur, SR, SC, visited_rows):
    """Dijkstra from free row ``cur`` on reduced costs; returns (sink, min_val, n_rows).

    The structure follows Crouse (2016) as in SciPy's ``linear_sum_assignment``; the rows
    reached are written to ``visited_rows[:n_rows]`` so the dual update costs O(visited).
    Each step relaxes the columns not yet reached (``SC``) in one contiguous pass over the
    row, then finds the closest one in a second pass (15% faster on the slot costs of
    ``permuted_kron`` than one pass over a shuffled list of the remaining columns, with the
    same reduced costs; among equally close columns a free one is still preferred, but
    other ties may be broken in another order, so problems with several optima may end at
    another optimal assignment).
    """
    n = cost.shape[0]
    min_val = 0.0
    for j in range(n):
        spc[j] = _INF
    sink = -1
    i = cur
    n_rows = 0
    while sink == -1:
        SR[i] = True
        visited_rows[n_rows] = i
        n_rows += 1
        ui = u[i]
        row = cost[i]
        for j in range(n):
            r = min_val + row[j] - ui - v[j]
            if r < spc[j] and not SC[j]:
                path[j] = i
                spc[j] = r
        index = -1
        lowest = _INF
        for j in range(n):
            if SC[j]:
                continue
            s = spc[j]
            if s < lowest or (s == lowest and row4col[j] == -1):
                lowest = s
                index = j
        min_val = lowest
        if min_val == _INF or index == -1:
            return -1, min_val, n_rows
        if row4col[index] == -1:
            sink = index
        else:
            i = row4col[index]
        SC[index] = True
    return sink, min_val, n_rows


@nb.njit(cache=True, nogil=True)
def _column_reduction(cost, v, x, y):
    """Jonker–Volgenant column reduction and reduction transfer (cold start).

    v[j] = min_i cost[i, j]; each column goes to its minimising row if that row is still
    free; rows that got exactly one column transfer their slack to its price.
    """
    n = cost.shape[0]
    for j in range(n):
        v[j] = _INF
        y[j] = -1
    for i in range(n):
        x[i] = -1
    argrow = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for j in range(n):
            c = cost[i, j]
            if c < v[j]:
                v[j] = c
                argrow[j] = i
    for j in range(n):
        if v[j] == _INF:  # a column of +inf only: infeasible, caught later
            v[j] = 0.0
    unique = np.ones(n, dtype=np.bool_)
    for j in range(n - 1, -1, -1):
        i = argrow[j]
        if x[i] < 0:
            x[i] = j
            y[j] = i
        else:
            unique[i] = False
    for i in range(n):
        if x[i] >= 0 and unique[i]:
            j = x[i]
            mn = _INF
            for j2 in range(n):
                if j2 != j:
                    c = cost[i, j2] - v[j2]
                    if c < mn:
                        mn = c
            if mn < _INF:
                v[j] -= mn


@nb.njit(cache=True, nogil=True)
def _row_reduction(cost, v, x, y, prev):
    """Warm start at given prices.

    First pass: a row keeps its previous column when that column is still among its
    cheapest at these prices (to a relative 1e-12, so that re-solving a solved problem
    from its own prices needs no augmentation despite rounding; the optimum can move by
    at most n·1e-12 of the costs' scale).  Second pass: the other rows take a free
    cheapest column when there is one.
    """
    n = cost.shape[0]
    for j in range(n):
        y[j] = -1
    for i in range(n):
        x[i] = -1
    best = np.empty(n)
    arg = np.empty(n, dtype=np.int64)
    for i in range(n):
        b = _INF
        a = -1
        for j in range(n):
            r = cost[i, j] - v[j]
            if r < b:
                b = r
                a = j
        best[i] = b
        arg[i] = a
        j0 = prev[i]
        if a < 0 or j0 < 0 or j0 >= n or y[j0] != -1:
            continue
        r0 = cost[i, j0] - v[j0]
        if r0 < _INF and r0 <= b + 1e-12 * (abs(cost[i, j0]) + abs(v[j0])):
            x[i] = j0
            y[j0] = i
    for i in range(n):
        if x[i] < 0 and arg[i] >= 0 and y[arg[i]] == -1:
            x[i] = arg[i]
            y[arg[i]] = i


@nb.njit(cache=True, nogil=True)
def _augmenting_row_reduction(cost, v, x, y, free_rows, n_free, max_steps):
    """One pass of Jonker–Volgenant's augmenting row reduction (as in LAPJV).

    Invariant kept: an assigned row's column attains min_j cost[i, j] − v[j].
    At most ``max_steps`` row reductions (each O(n)) are made: on costs with many
    near-ties (geometric, low-rank) the reductions can chase each other for O(n²) steps,
    where shortest augmenting paths are cheaper; the rows still free are left to them.
    Returns the number of rows still free (written to the front of ``free_rows``).
    """
    n = cost.shape[0]
    current = 0
    new_free = 0
    rr_cnt = 0
    while current < n_free:
        if rr_cnt >= max_steps:  # hand the rest to the shortest-augmenting-path phase
            while current < n_free:
                free_rows[new_free] = free_rows[current]
                new_free += 1
                current += 1
            break
        rr_cnt += 1
        i = free_rows[current]
        current += 1
        j1 = 0
        v1 = cost[i, 0] - v[0]
        j2 = -1
        v2 = _INF
        for j in range(1, n):
            c = cost[i, j] - v[j]
            if c < v2:
                if c >= v1:
                    v2 = c
                    j2 = j
                else:
                    v2 = v1
                    v1 = c
                    j2 = j1
                    j1 = j
        if v1 == _INF:
            free_rows[new_free] = i  # every column forbidden: leave it to the SAP phase
            new_free += 1
            continue
        i0 = y[j1]
        lowers = False
        if v2 < _INF:
            v1_new = v[j1] - (v2 - v1)
            lowers = v1_new < v[j1]
        if rr_cnt < current * n:
            if lowers:
                v[j1] = v1_new
            elif i0 >= 0 and j2 >= 0 and v2 < _INF:
                j1 = j2
                i0 = y[j2]
            if i0 >= 0:
                if lowers:
                    current -= 1
                    free_rows[current] = i0
                else:
                    free_rows[new_free] = i0
                    new_free += 1
        else:
            if i0 >= 0:
                free_rows[new_free] = i0
                new_free += 1
        if i0 >= 0:
            x[i0] = -1
        x[i] = j1
        y[j1] = i
    return new_free


@nb.njit(cache=True, nogil=True)
def _solve(cost, v, col4row, warm, n_arr, arr_steps):
    """Solve the square LSAP ``cost``; ``v`` (column prices) and ``col4row`` in/out.

    Cold (``warm`` False): column reduction and reduction transfer set the prices.  Warm:
    the given prices are kept and ``col4row`` holds a previous assignment (−1 = none)
    whose still-cheapest pairs are kept.  Then ``n_arr`` passes of augmenting row
    reduction and shortest augmenting paths (Dijkstra, as in SciPy) for the rows left.
    Reduced costs cost[i, j] − u[i] − v[j] are ≥ 0 with equality on matched pairs
    whenever a path search starts, so the result is optimal whatever the start.

    Returns (status, n_augment): status 0 = solved, 1 = infeasible.
    """
    n = cost.shape[0]
    x = np.full(n, -1, dtype=np.int64)
    row4col = np.full(n, -1, dtype=np.int64)
    if warm:
        _row_reduction(cost, v, x, row4col, col4row)
    else:
        _column_reduction(cost, v, x, row4col)
    free_rows = np.empty(n, dtype=np.int64)
    n_free = 0
    for i in range(n):
        if x[i] < 0:
            free_rows[n_free] = i
            n_free += 1
    for _ in range(n_arr):
        if n_free == 0:
            break
        n_free = _augmenting_row_reduction(cost, v, x, row4col, free_rows, n_free, arr_steps)
    u = np.empty(n)
    for i in range(n):
        if x[i] >= 0:
            u[i] = cost[i, x[i]] - v[x[i]]
        else:
            mn = _INF
            for j in range(n):
                c = cost[i, j] - v[j]
                if c < mn:
                    mn = c
            u[i] = mn if mn < _INF else 0.0
    path = np.full(n, -1, dtype=np.int64)
    spc = np.empty(n)
    SR = np.zeros(n, dtype=np.bool_)
    SC = np.zeros(n, dtype=np.bool_)
    visited_rows = np.empty(n, dtype=np.int64)
    for k in range(n_free):
        cur = free_rows[k]
        sink, min_val, n_rows = _augment(
            cost, u, v, path, row4col, spc, cur, SR, SC, visited_rows
        )
        if sink < 0:
            return 1, n_free
        u[cur] += min_val
        for q in range(n_rows):
            i = visited_rows[q]
            SR[i] = False
            if i != cur:
                u[i] += min_val - spc[x[i]]
        for j in range(n):
            if SC[j]:
                v[j] -= min_val - spc[j]
                SC[j] = False
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            tmp = x[i]
            x[i] = j
            j = tmp
            if i == cur:
                break
    for i in range(n):
        col4row[i] = x[i]
    return 0, n_free


@register("lsap_jv", "numba")
def lsap_jv(
    cost: np.ndarray,
    prices: np.ndarray | None = None,
    init: np.ndarray | None = None,
    n_arr: int = 2,
    arr_steps: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Solve a square LSAP; return (col4row, column prices, n_augmentations).

    ``cost`` is float64, or float32 read in place: every kernel widens an entry to float64
    (exactly) where it reads it and computes in float64, so a float32 matrix gets the
    solution of its float64 copy without the copy.

    ``prices`` (length n) warm-starts the column duals, ``init`` (a previous col4row) the
    assignment; without prices the Jonker–Volgenant column reduction starts.  ``n_arr``
    passes of augmenting row reduction, of at most ``arr_steps``·n row reductions each,
    precede the shortest-augmenting-path phase.
    ``n_augmentations`` counts the rows left to the path phase.
    """
    if cost.dtype != np.float32:
        cost = np.ascontiguousarray(cost, dtype=np.float64)
    cost = np.ascontiguousarray(cost)
    n = cost.shape[0]
    if prices is None:
        v = np.zeros(n)
        col4row = np.full(n, -1, dtype=np.int64)
        warm = False
    else:
        v = np.array(prices, dtype=np.float64, copy=True)
        col4row = (
            np.full(n, -1, dtype=np.int64)
            if init is None
            else np.array(init, dtype=np.int64, copy=True)
        )
        warm = True
    steps = max(1, int(arr_steps * n))
    status, n_aug = _solve(cost, v, col4row, warm, int(n_arr), steps)
    if status != 0:
        raise ValueError("cost matrix is infeasible: no assignment avoids every +inf entry")
    return col4row, v, int(n_aug)


@nb.njit(cache=True, nogil=True)
def _slots_cost(C, Vs, Y, cost, P):
    m1, n1, n2 = C.shape
    r = Vs.shape[1]
    L = n1 * r
    # P[c, j1, :] = C[c, j1, :] @ Vs, read from the strided slot view in one pass
    for c in range(m1):
        for j1 in range(n1):
            for k in range(r):
                acc = 0.0
                for j2 in range(n2):
                    acc += C[c, j1, j2] * Vs[j2, k]
                P[c, j1, k] = acc
    Pf = P.reshape(m1, L)
    H = Y.reshape(m1, L) - Pf
    p = np.empty(m1, dtype=P.dtype)
    h = np.empty(m1, dtype=P.dtype)
    for c in range(m1):
        a = 0.0
        b = 0.0
        for q in range(L):
            a += Pf[c, q] * Pf[c, q]
            b += H[c, q] * H[c, q]
        p[c] = a
        h[c] = b
    cross = np.dot(Pf, H.T)  # BLAS GEMM m1 × n1·r × m1
    # cost[c, t] = −‖H[t] + P[c]‖² = −(p[c] + h[t] + 2⟨P[c], H[t]⟩)
    for c in range(m1):
        for t in range(m1):
            cost[c, t] = -(p[c] + h[t] + 2.0 * cross[c, t])
    return cost


@register("slots_cost", "numba")
def slots_cost(C: np.ndarray, Vs: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fused loops around one BLAS GEMM: cost[c, t] = −‖Y[t] − P[t] + P[c]‖², P = C @ Vs.

    The candidates' projections P are computed straight from the strided slot view, the
    norms and the cost assembly in single passes; the cross term is one GEMM
    (m1 × n1·r × m1) through Numba's BLAS binding.
    """
    dt = np.result_type(C.dtype, Vs.dtype, Y.dtype)
    C = C.astype(dt, copy=False)
    Vs = np.ascontiguousarray(Vs, dtype=dt)
    Y = np.ascontiguousarray(Y, dtype=dt)
    m1, n1, _ = C.shape
    cost = np.empty((m1, m1), dtype=dt)
    P = np.empty((m1, n1, Vs.shape[1]), dtype=dt)
    _slots_cost(C, Vs, Y, cost, P)
    return cost, P
