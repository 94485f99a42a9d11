"""Cost builders of the permutation updates of :func:`tqla.permuted_kron`.

The two update rules of the alternating minimisation (``docs/permuted.md``) each reduce
to a linear sum assignment (:func:`tqla.lsap`, re-exported here):

* :func:`assign_cost` (hold K fixed, re-choose one permutation: an M×M or N×N problem);
* :func:`slots_cost` and :class:`SlotsCost` (hold the span of the B factors fixed, let A
  re-fit: one m1×m1 problem per slot, with state carried from slot to slot).

They run on the arrays' own library and device, and the memory they need is estimated
and checked first (``max_bytes=``; default :func:`default_max_cost_bytes`).

Conventions
-----------
A permuted Kronecker sum approximates ``W ≈ K.to_dense()[row_perm][:, col_perm]``, that is
``W[i, j] ≈ K[row_perm[i], col_perm[j]]``.  Cost matrices index *sources* by row and
*targets* by column: ``cost[i, t]`` is the cost of sending W's row i (or, in the slot
form, the candidate now in block-row i) to K's row t; ``lsap(cost).col_ind[i]`` is then
the new ``row_perm[i]``.  Columns are handled by transposition: ``side="cols"`` is the
row problem of ``Wᵀ ≈ Kᵀ[col_perm][:, row_perm]``.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Literal

import numpy as np

from tqla._array import (
    array_namespace,
    as_float_matrix,
    c_contiguous,
    check_int,
    check_permutation,
    take,
    is_numpy,
    lib_name,
)
from tqla._kernels import available, get_kernel
from tqla._memory import fmt_bytes, physical_memory, positive_bytes
from tqla.kron import KroneckerShape, KroneckerSum
from tqla.lsap import SOLVERS, LSAPResult, available_solvers, lsap

__all__ = [
    "LSAPResult",
    "SOLVERS",
    "SlotsCost",
    "assign_cost",
    "available_solvers",
    "check_cost_memory",
    "check_max_bytes",
    "default_max_cost_bytes",
    "lsap",
    "slots_basis",
    "slots_cost",
]

logger = logging.getLogger(__name__)

Side = Literal["rows", "cols"]

_GiB = 1024**3
_ENV = "TQLA_MAX_COST_BYTES"


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------
def default_max_cost_bytes() -> int:
    """The memory ceiling for one cost build when ``max_bytes=None``.

    The environment variable ``TQLA_MAX_COST_BYTES`` when set (a positive number of bytes,
    e.g. ``4e9``; anything else raises ValueError naming the variable), else min(2 GiB,
    a quarter of the physical memory).

    Examples
    --------
    >>> default_max_cost_bytes() > 0
    True
    """
    env = os.environ.get(_ENV)
    if env is not None and env.strip() != "":
        try:
            value = float(env.strip())
        except ValueError:
            raise ValueError(
                f"environment variable {_ENV} must be a positive number of bytes "
                f"(e.g. 4e9), got {env!r}"
            ) from None
        if not math.isfinite(value) or value < 1:
            raise ValueError(
                f"environment variable {_ENV} must be a positive, finite number of bytes "
                f"(e.g. 4e9), got {env!r}"
            )
        return int(value)
    phys = physical_memory()
    return min(2 * _GiB, phys // 4) if phys else 2 * _GiB


def check_max_bytes(max_bytes: Any, name: str = "max_bytes") -> int:
    """Validate a memory ceiling: None (the default, :func:`default_max_cost_bytes`) or a
    positive integer number of bytes (an integral float such as ``4e9`` is accepted)."""
    if max_bytes is None:
        return default_max_cost_bytes()
    return positive_bytes(max_bytes, name)


_fmt_bytes = fmt_bytes


def check_cost_memory(
    n: int, itemsize: int, *, what: str, extra_bytes: int = 0, max_bytes: int | None = None
) -> int:
    """Refuse a cost build of an n×n matrix that would exceed ``max_bytes``.

    The estimate counts the cost matrix in its dtype, the float64 host copy the LSAP solver
    needs (skipped when the matrix already is float64 on the host, but counted anyway to
    stay on the safe side) and ``extra_bytes`` of other temporaries.

    Returns the estimate in bytes; raises :class:`MemoryError` naming the size and what to
    do when it does not fit.

    Examples
    --------
    >>> check_cost_memory(1000, 8, what="test")
    16000000
    """
    limit = check_max_bytes(max_bytes)
    matrix = int(n) * int(n) * (int(itemsize) + 8)
    need = matrix + int(extra_bytes)
    if need > limit:
        extra = f", plus {_fmt_bytes(extra_bytes)} of temporaries" if extra_bytes else ""
        raise MemoryError(
            f"{what}: the {n}×{n} cost matrix would need about {_fmt_bytes(need)} "
            f"({n}² entries × ({itemsize} bytes + 8 for the float64 host copy the LSAP "
            f"solver needs) = {_fmt_bytes(matrix)}{extra}), over the limit of "
            f"{_fmt_bytes(limit)}. Permute only the other side (permute='rows'/'cols'), use "
            f"rule='slots' whose cost matrices are m1×m1 instead of M×M, choose factor shapes "
            f"with a smaller side, or raise the limit with max_cost_bytes= (or the "
            f"{_ENV} environment variable)."
        )
    return need


# --------------------------------------------------------------------------------------
# Cost builders
# --------------------------------------------------------------------------------------
def _check_side(side: str) -> None:
    if side not in ("rows", "cols"):
        raise ValueError(f"side must be 'rows' or 'cols', got {side!r}")


def _check_perm(p: Any, n: int, name: str) -> np.ndarray | None:
    """:func:`tqla.check_permutation`, or None for None (the identity)."""
    return None if p is None else check_permutation(p, n, name)


_take = take


def _transpose(xp: Any, x: Any) -> Any:
    return xp.permute_dims(x, (1, 0))


def slots_basis(K: KroneckerSum, side: Side = "rows") -> Any:
    """Orthonormal basis V of span{vec(B_k)}: the subspace the ``slots`` rule holds.

    Returns an (m2·n2, r) array (for ``side="cols"``, the (n2·m2, r) basis of the
    transposed sum, whose rows are ordered (j2, i2)).  For the output of
    :func:`tqla.kron_svd` these are the top-r right singular vectors of R(W).

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> K = kron_svd(np.random.default_rng(0).standard_normal((6, 8)), ((3, 4), (2, 2)), 2)
    >>> V = slots_basis(K)
    >>> V.shape, bool(np.allclose(V.T @ V, np.eye(2)))
    ((4, 2), True)
    """
    _check_side(side)
    if not isinstance(K, KroneckerSum):
        raise TypeError(f"K must be a KroneckerSum, got {type(K).__name__}")
    if side == "cols":
        K = K.T
    xp = K.xp
    r = K.rank
    Bf = xp.reshape(K.B, (r, -1))
    Q, _ = xp.linalg.qr(_transpose(xp, Bf))
    return Q


def _check_basis(xp: Any, V: Any, p: int, name: str = "V") -> Any:
    if not hasattr(V, "shape"):
        raise TypeError(f"{name} must be a KroneckerSum or an array, got {type(V).__name__}")
    if len(V.shape) != 2 or int(V.shape[0]) != p:
        raise ValueError(
            f"{name} must be an (m2·n2, r) = ({p}, r) orthonormal basis, got shape {tuple(V.shape)}"
        )
    return V


def _block_projections(xp: Any, U: Any, s: KroneckerShape, V: Any, kernel: str = "auto") -> Any:
    """Y = R(U) @ V reshaped (m1, n1, r): the held-basis coordinates of every block.

    One pass over U through the ``rearranged_matmul`` kernel (which reads U in place
    where an implementation can, else from one rearranged copy).
    """
    r = int(V.shape[1])
    impl = kernel if kernel in available("rearranged_matmul") else "auto"
    fn = get_kernel("rearranged_matmul", impl, U)
    Y = xp.reshape(fn(U, s, "right", V), (s.m1, s.n1, r))
    if is_numpy(xp):
        Y = np.ascontiguousarray(Y)  # the kernels' GEMMs want a C-ordered Y
    return Y


def _as_blocks(xp: Any, U: Any, s: KroneckerShape) -> Any:
    """U reshaped (m1, m2, n1, n2), from one C-ordered copy when U is a strided view."""
    if is_numpy(xp):
        U = c_contiguous(U)
    return xp.reshape(U, (s.m1, s.m2, s.n1, s.n2))


def _slot_extra_bytes(s: KroneckerShape, r: int, itemsize: int) -> int:
    # P, H and Y (m1·n1·r each) plus the candidate block copy (m1·n1·n2)
    return (3 * s.m1 * s.n1 * r + s.m1 * s.n1 * s.n2) * itemsize


def _assign_extra_bytes(M: int, N: int, itemsize: int) -> int:
    return 2 * M * N * itemsize  # dense K and its column-permuted copy


def _orient(
    xp: Any, W: Any, s: KroneckerShape, side: str, row_perm: Any, col_perm: Any
) -> tuple[Any, KroneckerShape, np.ndarray | None, np.ndarray | None]:
    """The rows-problem view: (W or Wᵀ, shape or shape.T, own perm, other perm)."""
    M, N = s.matrix_shape
    rp = _check_perm(row_perm, M, "row_perm")
    cp = _check_perm(col_perm, N, "col_perm")
    if side == "rows":
        return W, s, rp, cp
    return _transpose(xp, W), s.T, cp, rp


def _align(xp: Any, W: Any, own: np.ndarray | None, other: np.ndarray | None) -> Any:
    """U with U[own[i], other[j]] = W[i, j] (K's frame)."""
    if own is not None:
        W = _take(xp, W, np.argsort(own), 0)
    if other is not None:
        W = _take(xp, W, np.argsort(other), 1)
    return W


class SlotsCost:
    """The cost matrices of one sweep of the ``slots`` rule (hold span{B_k}, let A re-fit).

    Let U be W brought into K's frame (``U[row_perm[i], col_perm[j]] = W[i, j]``) and
    X = R(U).  With V the held orthonormal basis of span{vec(B_k)} ((m2·n2) × r), the best
    error of a Kronecker sum whose B factors lie in that span is Σ_{i1,j1} ‖(I − VVᵀ)
    x_{i1,j1}‖², where x_{i1,j1} stacks the j1-th length-n2 segment of the m2 rows of
    block-row i1.  Slot ``s`` holds the m1 rows (i1, s); re-assigning them among the
    block-rows while every other row stays gives, for candidate c (the row now in
    block-row c) placed in block-row t,

        cost[c, t] = −Σ_{j1} ‖P_c[j1] + H_t[j1]‖²
                   = −‖P_c‖² − ‖H_t‖² − 2⟨P_c, H_t⟩,

    where P_c[j1] = V_sᵀ c_{j1} is the candidate's projection (V_s = V's rows of slot s)
    and H_t[j1] = Σ_{i2≠s} V_{i2}ᵀ u_{t,i2,j1} that of the held rows.  The cross term for
    all (c, t) is one GEMM (m1 × n1·min(r, n2) × m1); no n×n×d intermediate is formed.
    The total cost of an assignment σ is exactly ‖X_σ(I − VVᵀ)‖² − ‖W‖², so differences
    of totals are differences of refit errors.

    The projections of every block-row onto V are computed once (one pass over U) and
    updated after each accepted slot assignment (:meth:`assign`), so a sweep over the
    slots makes one pass over the data, not one per slot.  :func:`slots_cost` is one
    :meth:`cost` of a fresh sweep; :func:`tqla.permuted_kron` runs whole sweeps.

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    V : KroneckerSum or array of shape (m2·n2, r)
        The held basis, or a KroneckerSum whose B factors span it (see :func:`slots_basis`).
        For ``side="cols"`` an array must be the basis of the transposed problem
        (``slots_basis(K, "cols")``).
    side : {"rows", "cols"}
        ``"cols"`` builds the column problem by transposition (slot < n2, size n1×n1).
    row_perm, col_perm : integer arrays or None
        The current permutations (identity when None).
    kernel : {"auto", "numpy", "numba", "array_api"}
        Kernel of the ``slots_cost`` and ``rearranged_matmul`` operations.
    max_bytes : int, optional
        Memory ceiling (default :func:`default_max_cost_bytes`); a larger build raises
        MemoryError before anything is allocated.
    projection_kernel : str, optional
        Kernel of the one ``rearranged_matmul`` pass that computes the held projections
        (default: ``kernel``).  :func:`tqla.permuted_kron` passes the kernel of its
        refits ("numba" reads W in place, 3–4× faster than NumPy's copy and GEMM).

    Attributes
    ----------
    order : numpy.ndarray of int64
        Row order of the rows problem after the assignments made so far: new row k of U
        (Uᵀ for ``side="cols"``) is old row ``order[k]``.
    shape : KroneckerShape
        The shape of the rows problem (``shape.T`` for ``side="cols"``).

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> from tqla.lsap import lsap
    >>> W = np.random.default_rng(0).standard_normal((6, 8))
    >>> K = kron_svd(W, ((3, 4), (2, 2)), 1)
    >>> sweep = SlotsCost(W, ((3, 4), (2, 2)), K)
    >>> for slot in range(2):
    ...     sweep.assign(slot, lsap(sweep.cost(slot)).col_ind)
    >>> sorted(sweep.order.tolist()) == list(range(6))
    True
    """

    def __init__(
        self,
        W: Any,
        shape: Any,
        V: Any,
        *,
        side: Side = "rows",
        row_perm: Any = None,
        col_perm: Any = None,
        kernel: str = "auto",
        max_bytes: int | None = None,
        projection_kernel: str | None = None,
    ):
        xp, W = as_float_matrix(W, "W")
        s = KroneckerShape.of(shape)
        s.check_matrix(W)
        _check_side(side)
        if isinstance(V, KroneckerSum):
            if V.kshape != s:
                raise ValueError(
                    f"K has factor shapes {V.kshape.a} ⊗ {V.kshape.b}, expected {s.a} ⊗ {s.b}"
                )
            V = slots_basis(V, side)
        Wr, sr, own, other = _orient(xp, W, s, side, row_perm, col_perm)
        V = _check_basis(xp, V, sr.m2 * sr.n2)
        itemsize = getattr(W.dtype, "itemsize", 8)
        check_cost_memory(
            sr.m1,
            itemsize,
            what=f"slots cost ({side})",
            extra_bytes=_slot_extra_bytes(sr, int(V.shape[1]), itemsize),
            max_bytes=max_bytes,
        )
        self.xp, self.shape, self.V, self.kernel = xp, sr, V, kernel
        self._U4 = _as_blocks(xp, _align(xp, Wr, own, other), sr)
        pk = kernel if projection_kernel is None else projection_kernel
        self._Y = _block_projections(xp, xp.reshape(self._U4, sr.matrix_shape), sr, V, pk)
        self._P: dict[int, Any] = {}
        # m2 = 2: slot 0's cost matrix and the move of its assignment (see _pair_cost)
        self._pair: tuple[Any, np.ndarray | None] | None = None
        self.order = np.arange(sr.matrix_shape[0], dtype=np.int64)

    def cost(self, slot: int) -> Any:
        """The (m1, m1) cost matrix of ``slot`` at the current arrangement (W's library,
        device and dtype); ``lsap(cost).col_ind[c]`` is the new block-row of the
        candidate now in block-row c."""
        sr = self.shape
        slot = check_int(slot, "slot", minimum=0, maximum=sr.m2 - 1)
        C = self._U4[:, slot, :, :]
        rows = np.arange(sr.m1) * sr.m2 + slot
        if not _is_identity(self.order[rows]):  # a slot assigned before: gather its rows
            C = _take(self.xp, C, self.order[rows] // sr.m2, 0)
        Vs = self.V[slot * sr.n2 : (slot + 1) * sr.n2, :]
        if slot == 1 and self._pair is not None:
            cost, P = self._pair_cost(C, Vs)
        else:
            cost, P = get_kernel("slots_cost", self.kernel, self._U4)(C, Vs, self._Y)
        self._pair = None
        if slot == 0 and sr.m2 == 2:  # a copy: the caller may change the returned matrix
            self._pair = (self.xp.asarray(cost, copy=True), None)
        self._P = {slot: P}
        return cost

    def _pair_cost(self, C: Any, Vs: Any) -> tuple[Any, Any]:
        """Slot 1's cost of a two-slot sweep from slot 0's, without a GEMM.

        With m2 = 2 the held projection of block-row t is Y_t = P⁰_t + P¹_t, so slot 0's
        cost is cost⁰[c, t] = −‖P¹_t + P⁰_c‖².  After slot 0's assignment (block-row t
        takes candidate src[t]), slot 1's is cost¹[c, t] = −‖P⁰_src[t] + P¹_c‖² =
        cost⁰[src[t], c]: a gather of the transpose (equal to rounding: Y came from one
        pass over the whole blocks).  Only the candidates' projections P¹ = C·V_s are
        computed (for :meth:`assign`).
        """
        xp = self.xp
        cost0, src = self._pair
        if src is not None:
            cost0 = _take(xp, cost0, src, 0)
        P = xp.matmul(C, Vs)
        cost = _transpose(xp, cost0)
        if is_numpy(xp):
            cost = np.ascontiguousarray(cost)
        return cost, P

    def assign(self, slot: int, col_ind: Any) -> None:
        """Move the candidate in block-row c of ``slot`` to block-row ``col_ind[c]``
        (after :meth:`cost` of that slot): updates the held projections and :attr:`order`."""
        sr = self.shape
        if slot not in self._P:
            raise ValueError(f"assign(slot={slot!r}) must follow cost({slot!r})")
        col = check_permutation(col_ind, sr.m1, "col_ind")
        if slot != 0:
            self._pair = None  # slot 0's cost no longer describes the arrangement
        if _is_identity(col):
            return
        src = np.argsort(col)  # block-row t takes candidate src[t]
        if self._pair is not None:
            self._pair = (self._pair[0], src)
        P = self._P.pop(slot)
        self._Y = self._Y - P + _take(self.xp, P, src, 0)
        rows = np.arange(sr.m1) * sr.m2 + slot
        self.order[rows] = self.order[src * sr.m2 + slot]


def _is_identity(p: np.ndarray) -> bool:
    return bool(np.array_equal(p, np.arange(len(p))))


def slots_cost(
    W: Any,
    shape: Any,
    V: Any,
    slot: int,
    *,
    side: Side = "rows",
    row_perm: Any = None,
    col_perm: Any = None,
    kernel: str = "auto",
    max_bytes: int | None = None,
) -> Any:
    """Cost matrix of one slot of the ``slots`` rule (hold span{B_k}, let A re-fit).

    ``SlotsCost(W, shape, V, ...).cost(slot)``; see :class:`SlotsCost` for the
    mathematics (``docs/permuted.md``).

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    V : KroneckerSum or array of shape (m2·n2, r)
        The held basis, or a KroneckerSum whose B factors span it (see :func:`slots_basis`).
        For ``side="cols"`` an array must be the basis of the transposed problem
        (``slots_basis(K, "cols")``).
    slot : int
        0 ≤ slot < m2 (rows) or n2 (columns).
    side : {"rows", "cols"}
        ``"cols"`` builds the column problem by transposition (slot < n2, size n1×n1).
    row_perm, col_perm : integer arrays or None
        The current permutations (identity when None).
    kernel : {"auto", "numpy", "numba", "array_api"}
        Kernel of the ``slots_cost`` and ``rearranged_matmul`` operations.
    max_bytes : int, optional
        Memory ceiling (default :func:`default_max_cost_bytes`); a larger build raises
        MemoryError before anything is allocated.

    Returns
    -------
    array of shape (m1, m1)
        On W's library and device, in W's dtype; ``lsap(cost).col_ind[c]`` is the new
        block-row of the candidate now in block-row c.

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> W = np.random.default_rng(0).standard_normal((6, 8))
    >>> K = kron_svd(W, ((3, 4), (2, 2)), 1)
    >>> C = slots_cost(W, ((3, 4), (2, 2)), K, slot=1)
    >>> C.shape
    (3, 3)
    """
    sweep = SlotsCost(
        W, shape, V, side=side, row_perm=row_perm, col_perm=col_perm, kernel=kernel,
        max_bytes=max_bytes,
    )  # fmt: skip
    return sweep.cost(slot)


def assign_cost(
    W: Any,
    K: Any,
    *,
    side: Side = "rows",
    row_perm: Any = None,
    col_perm: Any = None,
    max_bytes: int | None = None,
) -> Any:
    """Cost matrix of the ``assign`` rule (hold K fixed, re-choose one permutation).

    For rows, ``cost[i, t] = −W[i, :] · K[t, col_perm]`` — the GEMM −W·(K P_c)ᵀ.  The
    dropped terms ‖W_i‖² + ‖K_t‖² add the same constant to every assignment, so for any
    row permutation σ, Σ_i cost[i, σ(i)] = (‖W − K[σ][:, col_perm]‖² − const) / 2.
    ``side="cols"`` is the same for Wᵀ and Kᵀ with ``row_perm`` fixed.

    Parameters
    ----------
    W : array of shape (M, N)
    K : KroneckerSum or array of shape (M, N)
        The held approximation (K's frame, before permutation).
    side : {"rows", "cols"}
    row_perm, col_perm : integer arrays or None
        Only the permutation of the other side is used (``col_perm`` for rows).
    max_bytes : int, optional
        Memory ceiling (default :func:`default_max_cost_bytes`).  A 50257-row side would
        need a 50257² matrix (~20 GB in float32 plus its float64 host copy) and is refused.

    Returns
    -------
    array of shape (M, M) (rows) or (N, N) (cols), W's library, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> W = np.random.default_rng(0).standard_normal((6, 8))
    >>> K = kron_svd(W, ((3, 4), (2, 2)), 1)
    >>> assign_cost(W, K).shape, assign_cost(W, K, side="cols").shape
    ((6, 6), (8, 8))
    """
    xp, W = as_float_matrix(W, "W")
    _check_side(side)
    M, N = (int(v) for v in W.shape)
    n = M if side == "rows" else N
    itemsize = W.dtype.itemsize if hasattr(W.dtype, "itemsize") else 8
    check_cost_memory(
        n,
        itemsize,
        what=f"assign cost ({side})",
        extra_bytes=_assign_extra_bytes(M, N, itemsize),
        max_bytes=max_bytes,
    )
    if isinstance(K, KroneckerSum):
        if K.shape != (M, N):
            raise ValueError(f"K of shape {K.shape} does not match W of shape {(M, N)}")
        Kd = K.to_dense()
    else:
        _, Kd = as_float_matrix(K, "K")
        if tuple(int(v) for v in Kd.shape) != (M, N):
            raise ValueError(f"K of shape {tuple(Kd.shape)} does not match W of shape {(M, N)}")
    if array_namespace(Kd) is not xp and lib_name(array_namespace(Kd)) != lib_name(xp):
        raise TypeError("W and K must be arrays of the same library")
    rp = _check_perm(row_perm, M, "row_perm")
    cp = _check_perm(col_perm, N, "col_perm")
    if side == "rows":
        Kp = _take(xp, Kd, cp, 1) if cp is not None else Kd
        return _negated(xp, xp.matmul(W, _transpose(xp, Kp)))
    Kp = _take(xp, Kd, rp, 0) if rp is not None else Kd
    return _negated(xp, xp.matmul(_transpose(xp, W), Kp))


def _negated(xp: Any, C: Any) -> Any:
    """−C; in place for NumPy (C is a fresh product): an n×n cost is large (n = 5,120 for
    GPT-2 large's MLPs: 100 MiB in float32), and a second one would double the peak."""
    if is_numpy(xp):
        return np.negative(C, out=C)
    return -C
