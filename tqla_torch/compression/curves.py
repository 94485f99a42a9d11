"""Error curves of the automatic plan: every candidate (method × shape × rank) of one module.

:func:`layer_curves` gives, per module, parameters against the activation-aware squared error
tr(ΔW·C·ΔWᵀ) for every rank from one decomposition per shape (low rank, Kronecker sums,
permuted Kronecker sums); :mod:`~tqla_torch.compression.budget_plan` allocates a budget along
them.  docs/auto.md has the method and the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tqla.shapes import KroneckerShape

__all__ = ["PERMUTED_B_SHAPES", "Candidate", "default_b_shapes", "layer_curves", "tied_table_curve"]

DEFAULT_METHODS = ("svd", "kron")
PERMUTED_B_SHAPES = ((2, 4), (4, 2))
"""Default B shapes of ``permuted_kron`` candidates (one permutation search each)."""

@dataclass(frozen=True)
class Candidate:
    """One point of a module's error curve."""

    method: str  # "svd", "kron", "permuted_kron" or "dense"
    shape: tuple | None  # ((p, q), (s, t)) out×in for (permuted) kron
    rank: int
    params: int  # of the module after compression (factors + bias)
    error2: float  # whitened squared error tr(ΔW·C·ΔWᵀ)


# --------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_b_shapes(out_f: int, in_f: int) -> list[tuple[int, int]]:
    """B shapes (s, t), out×in, tried by default: s, t ∈ {1, 2, 4, 8} dividing out and in,
    2 <= s·t <= 32."""
    small = (1, 2, 4, 8)
    return [
        (s, t)
        for s in small
        for t in small
        if out_f % s == 0 and in_f % t == 0 and 2 <= s * t <= 32
    ]


def layer_curves(
    W: torch.Tensor,
    C: torch.Tensor,
    *,
    bias: int,
    methods: Sequence[str] = DEFAULT_METHODS,
    b_shapes: Sequence[tuple[int, int]] | None = None,
    damp: float = 0.01,
    allow_dense: bool = True,
    permuted_b_shapes: Sequence[tuple[int, int]] | None = None,
    cache: dict | None = None,
    key: str = "",
) -> list[Candidate]:
    """Every candidate (method × shape × rank) of one module with its whitened error.

    SVD: one spectrum of W·S gives every rank (the squared error of rank r is the tail
    Σ_{k>r} σ_k²; a 1-D ``C`` is a diagonal moment, e.g. an embedding's token
    frequencies).  Kronecker: per B shape, one closed-form fit (kron_svd of W·(S₁⊗S₂),
    C ≈ C₁⊗C₂) at the largest useful rank gives every rank (its prefixes), each error
    measured exactly in the (damped) C.  Permuted Kronecker: per B shape (default
    :data:`PERMUTED_B_SHAPES`), one permutation search (:func:`tqla.permuted_kron`,
    plain, at rank min(4, top), 3 iterations) — by far the most expensive step, so its
    permutations are kept in ``cache`` under (``key``, shape) — then the Kronecker curve
    of the permuted W with the moment permuted like the columns.  The other ranks reuse
    that search's permutations (the compression itself searches again at its rank).
    Only candidates smaller than the dense module are kept; ``allow_dense`` adds the dense
    module itself (error 0).
    """
    from tqla import whitened_spectrum

    out_f, in_f = (int(v) for v in W.shape)
    dense = out_f * in_f + bias
    Wd = W.detach().to(torch.float64).cpu().numpy()
    Cd = C.detach().to(torch.float64).cpu().numpy()
    cands: list[Candidate] = []
    if "svd" in methods:
        sig = whitened_spectrum(Wd, Cd, damp=damp)
        tails = _tails(sig)
        for r in range(1, min(out_f, in_f) + 1):
            p = r * (out_f + in_f) + bias
            if p >= dense:
                break
            cands.append(Candidate("svd", None, r, p, float(tails[r])))
    if "kron" in methods:
        roots: dict = {}  # C₁, C₂ and their roots depend on the column factors only
        for s, t in b_shapes if b_shapes is not None else default_b_shapes(out_f, in_f):
            if out_f % s or in_f % t:
                raise ValueError(f"b_shape ({s}, {t}) does not divide the module's {out_f}×{in_f}")
            shape = ((out_f // s, in_f // t), (s, t))
            per = shape[0][0] * shape[0][1] + s * t
            top = min((dense - 1 - bias) // per, min(shape[0][0] * shape[0][1], s * t))
            if top < 1:
                continue
            for r, err2 in enumerate(_kron_errors(Wd, Cd, shape, top, damp, roots), start=1):
                cands.append(Candidate("kron", shape, r, r * per + bias, err2))
    if "permuted_kron" in methods:
        shapes = PERMUTED_B_SHAPES if permuted_b_shapes is None else permuted_b_shapes
        for s, t in shapes:
            if out_f % s or in_f % t:
                continue  # the defaults need not divide every module
            cands += _permuted_curve(Wd, Cd, (s, t), bias, dense, damp, cache, key)
    if allow_dense:
        cands.append(Candidate("dense", None, 0, dense, 0.0))
    return cands


def _kron_errors(
    Wd: np.ndarray, Cd: np.ndarray, shape: tuple, top: int, damp: float, roots: dict
) -> list[float]:
    """Exact whitened squared errors (in the damped C, the norm of the SVD curves) of the
    closed-form Kronecker fits of ranks 1..top: the rank-r fit is the first r terms of the
    rank-top one (a truncated SVD of W·(S₁⊗S₂)), so one decomposition serves every rank.

    With T_k = A_k⊗B_k, ‖W − Σ_{k≤r} T_k‖²_C = ‖W‖²_C − 2·Σ_k ⟨W, T_k⟩_C + Σ_{k,l} ⟨T_k, T_l⟩_C,
    and ⟨T_k, T_l⟩_C = Σ (A_kᵀA_l)[j, j′]·(B_kᵀB_l)[b, b′]·C[(j, b), (j′, b′)] needs no
    M×N product: per shape top·M·N + top²·N² multiply-adds (W·C, M·N², once per module in
    ``roots``) instead of top·M·N² for forming each residual's C-norm."""
    from tqla.kron import kron_svd
    from tqla.whiten import _kron_roots

    (m1, n1), (m2, n2) = shape
    key = (n1, n2, damp)
    if key not in roots:
        roots[key] = _kron_roots(Cd, KroneckerShape(shape[0], shape[1]), damp)
    if ("WC", damp) not in roots:  # W·C and ‖W‖²_C in the damped C, for every shape
        Creg = Cd + damp * float(np.trace(Cd)) / Cd.shape[0] * np.eye(Cd.shape[0])
        WC = Wd @ Creg
        roots[("WC", damp)] = (Creg, WC, float(np.sum(Wd * WC)))
    Creg, WC, w2 = roots[("WC", damp)]
    S1, S1p, S2, S2p = roots[key]
    n3 = Wd.reshape(Wd.shape[0], n1, n2)
    Ww = np.einsum("mab,ac,bd->mcd", n3, S1, S2, optimize=True).reshape(Wd.shape)
    K = kron_svd(Ww, shape, top)
    A = np.einsum("kij,jl->kil", np.asarray(K.A), S1p)
    B = np.einsum("kij,jl->kil", np.asarray(K.B), S2p)
    # ⟨W, T_k⟩_C = Σ (W·C)[(i, a), (j, b)]·A_k[i, j]·B_k[a, b]
    WC4 = WC.reshape(m1, m2, n1, n2)
    cross = np.einsum("kab,kab->k", np.einsum("kij,iajb->kab", A, WC4, optimize=True), B)
    gram = _kron_gram(A, B, Creg)
    out, err2 = [], w2
    for k in range(top):
        err2 += gram[k, k] - 2.0 * cross[k] + 2.0 * float(np.sum(gram[:k, k]))
        out.append(max(float(err2), 0.0))
    return out


def _kron_gram(
    A: np.ndarray, B: np.ndarray, C: np.ndarray, order: str | None = None
) -> np.ndarray:
    """gram[k, l] = ⟨A_k⊗B_k, A_l⊗B_l⟩_C for k <= l (upper triangle), by the cheapest of
    three contraction orders of Σ (A_kᵀA_l)[j, m]·(B_kᵀB_l)[b, c]·C[(j, b), (m, c)]:

    * "pairs": both small Grams per pair, then C (P·(m1·n1² + m2·n2² + N²), P = #pairs);
    * "A": U_k = A_k contracted with C once per k (top·m1·N²), then with A_l (P·m1·n1·n2²);
    * "B": the same from the B side (top·m2·N² + P·m2·n2·n1²).

    Working memory is bounded by about 2²² numbers per chunk in "pairs", and by m1·n2·N
    (or m2·n1·N) in "A" (or "B")."""
    top, m1, n1 = A.shape
    _, m2, n2 = B.shape
    N = n1 * n2
    P = top * (top + 1) // 2
    costs = {
        "pairs": P * (m1 * n1 * n1 + m2 * n2 * n2 + N * N),
        "A": top * m1 * N * N + P * (m1 * n1 * n2 * n2 + m2 * n2 * n2),
        "B": top * m2 * N * N + P * (m2 * n2 * n1 * n1 + m1 * n1 * n1),
    }
    order = min(costs, key=costs.__getitem__) if order is None else order
    C4 = C.reshape(n1, n2, n1, n2)  # [j, b, m, c]
    gram = np.zeros((top, top))
    if order == "A":
        for k in range(top):
            U = np.tensordot(A[k], C4, axes=(1, 0))  # [i, b, m, c]
            Wkl = np.tensordot(U, A[k:], axes=([0, 2], [1, 2]))  # [b, c, l]
            GB = np.einsum("ab,lac->bcl", B[k], B[k:])
            gram[k, k:] = np.sum(Wkl * GB, axis=(0, 1))
        return gram
    if order == "B":
        for k in range(top):
            U = np.tensordot(B[k], C4, axes=(1, 1))  # [a, j, m, c]
            Wkl = np.tensordot(U, B[k:], axes=([0, 3], [1, 2]))  # [j, m, l]
            GA = np.einsum("ij,lim->jml", A[k], A[k:])
            gram[k, k:] = np.sum(Wkl * GA, axis=(0, 1))
        return gram
    Cbc = C4.transpose(1, 3, 0, 2).reshape(n2 * n2, n1 * n1)
    kk, ll = np.triu_indices(top)
    step = max(1, 2**22 // max(n1 * n1, n2 * n2))
    for i in range(0, len(kk), step):
        k, l = kk[i : i + step], ll[i : i + step]
        GA = np.einsum("pij,pim->pjm", A[k], A[l], optimize=True).reshape(len(k), -1)
        GB = np.einsum("pab,pac->pbc", B[k], B[l], optimize=True).reshape(len(k), -1)
        gram[k, l] = np.sum((GB @ Cbc) * GA, axis=1)
    return gram


def _permuted_curve(
    Wd: np.ndarray,
    Cd: np.ndarray,
    b: tuple[int, int],
    bias: int,
    dense: int,
    damp: float,
    cache: dict | None,
    key: str,
) -> list[Candidate]:
    """The permuted Kronecker candidates of one B shape (see :func:`layer_curves`)."""
    from tqla.permuted import permuted_kron

    out_f, in_f = Wd.shape
    s, t = b
    shape = ((out_f // s, in_f // t), (s, t))
    per = shape[0][0] * shape[0][1] + s * t
    top = min((dense - 1 - bias) // per, min(shape[0][0] * shape[0][1], s * t))
    if top < 1:
        return []
    ckey = (key, shape)
    if cache is not None and ckey in cache:
        rp, cp = cache[ckey]
    else:
        P = permuted_kron(Wd, shape, min(4, top), n_iter=3, rng=0)
        rp, cp = np.asarray(P.row_perm), np.asarray(P.col_perm)
        if cache is not None:
            cache[ckey] = (rp, cp)
    inv_r, inv_c = np.argsort(rp), np.argsort(cp)
    Wk, Ck = Wd[inv_r][:, inv_c], Cd[inv_c][:, inv_c]
    errs = _kron_errors(np.ascontiguousarray(Wk), np.ascontiguousarray(Ck), shape, top, damp, {})
    return [
        Candidate("permuted_kron", shape, r, r * per + bias, e)
        for r, e in enumerate(errs, start=1)
    ]


def _tails(sig: np.ndarray) -> np.ndarray:
    """tails[r] = Σ_{k>=r} σ_k² (tails[len] = 0), clipped at 0."""
    sq = np.asarray(sig, dtype=np.float64) ** 2
    t = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])
    return np.clip(t, 0.0, None)


def tied_table_curve(
    E: torch.Tensor,
    terms: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    damp: float = 0.01,
    allow_dense: bool = True,
) -> tuple[list[Candidate], tuple[torch.Tensor, torch.Tensor]]:
    """Low-rank candidates of a token table with two-sided error terms (a tied LM head).

    ``terms`` are (row weight, column weight) pairs of the V×d table E: the input lookup
    (per-token weights, I) and the tied head (per-token weights of the logits, the second
    moment of the final hidden states).  One two-sided fit in their nearest Kronecker
    weight (:func:`tqla.nearest_kron_weight`) gives every rank, and each candidate's error
    is the exact sum of the terms (:func:`tqla.two_sided_error_curve`).

    Returns
    -------
    candidates : list of Candidate
        Method "svd" at every rank smaller than the table (and "dense" with
        ``allow_dense``); ``error2`` is the summed error.
    weight : (row weight (V,), column weight (d, d))
        The fit's weight, what :func:`tqla_torch.compress` needs as the table's moment.
    """
    from tqla import nearest_kron_weight, two_sided_error_curve

    V, d = (int(v) for v in E.shape)
    dense = V * d
    t64 = [
        tuple(x.detach().to(torch.float64).cpu().numpy() for x in pair) for pair in terms
    ]
    P, C = nearest_kron_weight(t64, V, d)
    top = min(d, (dense - 1) // (V + d))
    Ed = E.detach().to(torch.float64).cpu().numpy()
    errs = two_sided_error_curve(Ed, P, C, t64, damp=damp, max_rank=min(V, d))
    cands = [Candidate("svd", None, r, r * (V + d), float(errs[r])) for r in range(1, top + 1)]
    if allow_dense:
        cands.append(Candidate("dense", None, 0, dense, 0.0))
    P_t = torch.as_tensor(P if P.ndim == 1 else np.diag(P), dtype=torch.float64)
    return cands, (P_t, torch.as_tensor(C, dtype=torch.float64))
