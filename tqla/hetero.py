"""Heterogeneous Kronecker sums: terms with their own factor shapes (methods.md §4).

    W ≈ Σ_k A_k ⊗ B_k,   A_k: m1ₖ×n1ₖ,  B_k: m2ₖ×n2ₖ,  m1ₖ·m2ₖ = M,  n1ₖ·n2ₖ = N.

:class:`HeteroKroneckerSum` keeps the terms grouped by shape (one :class:`~tqla.KroneckerSum`
per shape) and multiplies without forming the matrix.  :func:`kron_hetero` fits one
greedily — from the residual, one term of each candidate shape, keep the best error
reduction per parameter, subtract — then back-fits each shape group against the others,
never increasing the error, until a parameter budget or a term count is reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from tqla._array import array_namespace, as_float_matrix, check_int
from tqla._estimator import _ApproxEstimator
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd
from tqla.norms import residual, spectral_norm

__all__ = ["HeteroKronecker", "HeteroKroneckerApprox", "HeteroKroneckerSum", "kron_hetero"]

Norm = Literal["fro", "spectral"]


class HeteroKroneckerSum:
    """A sum of Kronecker sums of the same matrix shape and different factor shapes.

    Parameters
    ----------
    terms : sequence of KroneckerSum
        One per factor shape (any rank each); all of one matrix shape, library and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> K1 = KroneckerSum(rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 3, 2)))
    >>> K2 = KroneckerSum(rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 2, 3)))
    >>> H = HeteroKroneckerSum([K1, K2])
    >>> H.shape, H.n_params, H.n_terms
    ((6, 6), 36, 3)
    >>> x = rng.standard_normal(6)
    >>> np.allclose(H @ x, H.to_dense() @ x)
    True
    """

    __array_priority__ = 1000

    def __init__(self, terms: Sequence[KroneckerSum]):
        terms = list(terms)
        if not terms:
            raise ValueError("terms must hold at least one KroneckerSum, got none")
        for i, K in enumerate(terms):
            if not isinstance(K, KroneckerSum):
                raise TypeError(f"terms[{i}] must be a KroneckerSum, got {type(K).__name__}")
        shape = terms[0].shape
        for i, K in enumerate(terms):
            if K.shape != shape:
                raise ValueError(
                    f"every term must have the matrix shape {shape}; terms[{i}] has {K.shape}"
                )
            if K.dtype != terms[0].dtype:
                raise TypeError(f"terms must share a dtype: {terms[0].dtype} and {K.dtype}")
        array_namespace(*[K.A for K in terms])  # one library
        self.terms = terms

    @property
    def shape(self) -> tuple[int, int]:
        return self.terms[0].shape

    @property
    def dtype(self) -> Any:
        return self.terms[0].dtype

    @property
    def xp(self) -> Any:
        return self.terms[0].xp

    @property
    def shapes(self) -> list[KroneckerShape]:
        """The factor shape of each group."""
        return [K.kshape for K in self.terms]

    @property
    def n_params(self) -> int:
        return sum(K.n_params for K in self.terms)

    @property
    def n_terms(self) -> int:
        """Total number of Kronecker products (the sum of the groups' ranks)."""
        return sum(K.rank for K in self.terms)

    @property
    def T(self) -> HeteroKroneckerSum:
        return HeteroKroneckerSum([K.T for K in self.terms])

    def to_dense(self) -> Any:
        out = self.terms[0].to_dense()
        for K in self.terms[1:]:
            out = out + K.to_dense()
        return out

    def matmat(self, X: Any) -> Any:
        """H @ X for X of shape (N,), (N, k) or (..., N, k), without forming H."""
        out = self.terms[0].matmat(X)
        for K in self.terms[1:]:
            out = out + K.matmat(X)
        return out

    def rmatmat(self, X: Any) -> Any:
        """X @ H for X of shape (M,) or (..., M), without forming H."""
        out = self.terms[0].rmatmat(X)
        for K in self.terms[1:]:
            out = out + K.rmatmat(X)
        return out

    def __matmul__(self, X: Any) -> Any:
        return self.matmat(X)

    def __rmatmul__(self, X: Any) -> Any:
        return self.rmatmat(X)

    def astype(self, dtype: Any) -> HeteroKroneckerSum:
        return HeteroKroneckerSum([K.astype(dtype) for K in self.terms])

    def __repr__(self) -> str:
        groups = ", ".join(f"{K.kshape.a}⊗{K.kshape.b}×{K.rank}" for K in self.terms)
        return f"HeteroKroneckerSum(shape={self.shape}, [{groups}], n_params={self.n_params})"


class HeteroKronecker(HeteroKroneckerSum):
    """The result of :func:`kron_hetero`: a :class:`HeteroKroneckerSum` with its history.

    Attributes
    ----------
    norm : str
        "fro" or "spectral", the norm that was fitted.
    errors : list of float
        Error ‖W − approx‖ in that norm: ``errors[0]`` = ‖W‖, then after every greedy term.
    sweep_errors : list of float
        Error after each back-fitting sweep (entry 0: the greedy's result): non-increasing.
    order : list of KroneckerShape
        The shape chosen at each greedy step.
    budget : int or None
        The parameter budget asked for.
    spectral_error : NormEstimate or None
        With ``norm="spectral"``: ‖W − approx‖₂ with a certified upper bound
        (:func:`tqla.spectral_norm` of :func:`tqla.residual`, exact where affordable).
    """

    def __init__(self, terms: Sequence[KroneckerSum], **info: Any):
        super().__init__(terms)
        self.norm: str = info.get("norm", "fro")
        self.errors: list[float] = list(info.get("errors", []))
        self.sweep_errors: list[float] = list(info.get("sweep_errors", []))
        self.order: list[KroneckerShape] = list(info.get("order", []))
        self.budget: int | None = info.get("budget")
        self.spectral_error = info.get("spectral_error")

    @property
    def error(self) -> float:
        """The final error in the fitted norm."""
        return self.sweep_errors[-1] if self.sweep_errors else self.errors[-1]


# --------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------
def _check_shapes(shapes: Any, W: Any) -> list[KroneckerShape]:
    if isinstance(shapes, (KroneckerShape, str)) or not hasattr(shapes, "__iter__"):
        raise TypeError(
            "shapes must be a sequence of factor shapes (KroneckerShape or ((m1, n1), (m2, n2)))"
        )
    out: list[KroneckerShape] = []
    for sh in shapes:
        s = KroneckerShape.of(sh)
        s.check_matrix(W)
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("shapes must hold at least one candidate factor shape, got an empty list")
    return out


def _error(xp: Any, R: Any, norm: str) -> float:
    if norm == "fro":
        return float(xp.linalg.vector_norm(R))
    return spectral_norm(R, method="auto", rng=0).estimate


class _Fitter:
    def __init__(self, xp, W, norm: str, spectral_options: dict):
        self.xp, self.W, self.norm, self.opts = xp, W, norm, spectral_options

    def fit_group(self, R: Any, s: KroneckerShape, rank: int, init: KroneckerSum | None):
        """Best group of one shape for the residual R: kron_svd, then (spectral) refined."""
        K = kron_svd(R, s, rank)
        if self.norm == "fro":
            return K
        from tqla.spectral import kron_spectral

        if init is not None:  # the current group: never worse than it (kept-best rule)
            Ki = kron_spectral(R, s, rank, init=init, **self.opts)
            Ks = kron_spectral(R, s, rank, init=K, **self.opts)
            best = min((Ki, Ks), key=lambda k: k.spectral_error.estimate)
            return best.kron
        return kron_spectral(R, s, rank, init=K, **self.opts).kron


def _greedy(fit: _Fitter, cands, budget, max_terms):
    xp, W, norm = fit.xp, fit.W, fit.norm
    R = W
    err = _error(xp, R, norm)
    errors, order = [err], []
    groups: dict[KroneckerShape, list[KroneckerSum]] = {}
    used = 0
    while max_terms is None or len(order) < max_terms:
        best = None
        for s in cands:
            cost = s.n_params(1)
            if budget is not None and used + cost > budget:
                continue
            if len(groups.get(s, ())) >= s.max_rank:  # the shape's Kronecker rank is full
                continue
            if norm == "fro":  # ‖R‖² − ‖R − T‖² = σ₁² of R's rearrangement
                T = kron_svd(R, s, 1)
                gain = float(xp.sum(T.A * T.A) * xp.sum(T.B * T.B))
            else:
                T = fit.fit_group(R, s, 1, None)
                gain = err - _error(xp, R - T.to_dense(), norm)
            score = gain / cost
            if best is None or score > best[0]:
                best = (score, s, T)
        if best is None or best[0] <= 0:
            break
        _, s, T = best
        Rn = R - T.to_dense()
        en = _error(xp, Rn, norm)
        if en >= err:  # no progress in the fitted norm: stop
            break
        R, err = Rn, en
        used += s.n_params(1)
        order.append(s)
        groups.setdefault(s, []).append(T)
        errors.append(err)
    merged = [
        KroneckerSum(xp.concat([t.A for t in ts], axis=0), xp.concat([t.B for t in ts], axis=0))
        for ts in groups.values()
    ]
    return merged, errors, order


def _backfit(fit: _Fitter, terms: list[KroneckerSum], n_sweeps: int, tol: float):
    xp, W, norm = fit.xp, fit.W, fit.norm
    dense = [K.to_dense() for K in terms]
    total = dense[0]
    for D in dense[1:]:
        total = total + D
    err = _error(xp, W - total, norm)
    sweep_errors = [err]
    for _ in range(n_sweeps):
        start = err
        for g, K in enumerate(terms):
            Rg = W - (total - dense[g])
            Kn = fit.fit_group(Rg, K.kshape, K.rank, K)
            Dn = Kn.to_dense()
            en = _error(xp, Rg - Dn, norm)
            if en < err:  # accept only improvements: the error never increases
                total = total - dense[g] + Dn
                terms[g], dense[g], err = Kn, Dn, en
        sweep_errors.append(err)
        if start - err <= tol * start:
            break
    return terms, sweep_errors


def kron_hetero(
    W: Any,
    shapes: Sequence[Any],
    *,
    n_params: int | None = None,
    rank: int | None = None,
    norm: Norm = "fro",
    n_sweeps: int = 3,
    tol: float = 1e-6,
    spectral_options: dict | None = None,
) -> HeteroKronecker:
    """Greedy heterogeneous Kronecker sum within a parameter budget or a term count.

    Greedy (methods.md §4): from the residual, fit one term of each candidate shape (the
    rank-1 :func:`tqla.kron_svd` of the residual), keep the one with the best error
    reduction per parameter — squared Frobenius error, or spectral error, reduced per
    parameter of the term — subtract it, repeat while a term fits the budget.  With
    ``norm="spectral"`` the chosen term is refined by :func:`tqla.kron_spectral` before it
    is subtracted.  Then back-fitting sweeps: each shape group (all terms of one shape,
    jointly) is refit to W minus the other groups and the new group is accepted only if
    the error in the fitted norm decreases, so the error never increases.

    Parameters
    ----------
    W : array of shape (M, N)
    shapes : sequence of KroneckerShape or ((m1, n1), (m2, n2))
        Candidate factor shapes, each of W's matrix shape.
    n_params : int, optional
        Parameter budget; must admit one term of the cheapest shape.
    rank : int, optional
        Maximum number of Kronecker terms.  At least one of ``n_params`` and ``rank``.
    norm : {"fro", "spectral"}
    n_sweeps : int
        Back-fitting sweeps at most (0: greedy only).
    tol : float
        Back-fitting stops when a sweep lowers the error by less than ``tol`` relatively.
    spectral_options : dict, optional
        Keyword arguments of :func:`tqla.kron_spectral` for the spectral fits (default
        ``p=(8, 32, 128), max_iter=10``).

    Returns
    -------
    HeteroKronecker

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((12, 12))
    >>> H = kron_hetero(W, [((3, 4), (4, 3)), ((2, 2), (6, 6))], n_params=150)
    >>> H.n_params <= 150, H.sweep_errors[-1] <= H.sweep_errors[0]
    (True, True)
    """
    xp, W = as_float_matrix(W, "W")
    cands = _check_shapes(shapes, W)
    if norm not in ("fro", "spectral"):
        raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")
    if n_params is None and rank is None:
        raise ValueError("give n_params (a parameter budget) or rank (a term count), or both")
    cheapest = min(s.n_params(1) for s in cands)
    if n_params is not None:
        n_params = check_int(n_params, "n_params", minimum=1)
        if n_params < cheapest:
            raise ValueError(
                f"n_params must be >= {cheapest}, the parameters of one term of the cheapest "
                f"candidate shape; got {n_params}"
            )
    if rank is not None:
        rank = check_int(rank, "rank", minimum=1)
    n_sweeps = check_int(n_sweeps, "n_sweeps", minimum=0)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    opts = {"p": (8.0, 32.0, 128.0), "max_iter": 10, "rng": 0}
    opts.update(spectral_options or {})
    if W.dtype not in (xp.float32, xp.float64):
        H = kron_hetero(xp.astype(W, xp.float32), cands, n_params=n_params, rank=rank,
                        norm=norm, n_sweeps=n_sweeps, tol=tol, spectral_options=opts)
        return HeteroKronecker([K.astype(W.dtype) for K in H.terms], norm=H.norm,
                               errors=H.errors, sweep_errors=H.sweep_errors, order=H.order,
                               budget=H.budget, spectral_error=H.spectral_error)
    fit = _Fitter(xp, W, norm, opts)
    terms, errors, order = _greedy(fit, cands, n_params, rank)
    if not terms:  # W = 0: nothing reduces the error; one zero term of the cheapest shape
        s = min(cands, key=lambda c: c.n_params(1))
        z = kron_svd(W, s, 1)
        terms, order = [KroneckerSum(z.A * 0, z.B * 0)], [s]
        errors.append(errors[0])
    terms, sweep_errors = _backfit(fit, terms, n_sweeps, float(tol))
    cert = None
    if norm == "spectral":
        cert = spectral_norm(residual(W, HeteroKroneckerSum(terms)), method="auto", rng=0)
    return HeteroKronecker(terms, norm=norm, errors=errors, sweep_errors=sweep_errors,
                           order=order, budget=n_params, spectral_error=cert)


class HeteroKroneckerApprox(_ApproxEstimator):
    """Estimator-style wrapper of :func:`kron_hetero`.

    :meth:`fit` sets ``result_`` (a :class:`HeteroKronecker`), ``errors_``,
    ``sweep_errors_``, ``n_params_``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 8))
    >>> est = HeteroKroneckerApprox([((2, 2), (4, 4)), ((4, 4), (2, 2))], rank=3).fit(W)
    >>> est.result_.n_terms
    3
    """

    def __init__(self, shapes: Sequence[Any], **kwargs: Any):
        self.shapes = [KroneckerShape.of(s) for s in shapes]
        self.kwargs = kwargs

    def fit(self, W: Any) -> HeteroKroneckerApprox:
        self.result_ = kron_hetero(W, self.shapes, **self.kwargs)
        self.errors_ = self.result_.errors
        self.sweep_errors_ = self.result_.sweep_errors
        self.n_params_ = self.result_.n_params
        return self
