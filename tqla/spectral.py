"""Kronecker sums that are best in the spectral norm (methods.md §4).

:func:`kron_spectral` minimises ‖W − Σ A_k ⊗ B_k‖₂, the worst-case output error of a layer,
through the Schatten-p norm ‖E‖_p = (Σ σᵢ(E)^p)^(1/p) (smooth, equal to the Frobenius
problem at p = 2 and tending to ‖E‖₂ as p grows), by continuation in p.  K is parametrised
by X = R(K), a matrix of rank r, and each stage runs Riemannian conjugate gradients on the
fixed-rank manifold:

* Euclidean gradient of F(X) = ‖W − R⁻¹(X)‖_p with E = W − R⁻¹(X) = U Σ Vᵀ:
  ∇F = −R(U·diag((σᵢ/F)^(p−1))·Vᵀ) — already scaled by F^(1−p), so it stays O(1) for
  any p;
* projection to the tangent space at X = U S Vᵀ: P_U G + G P_V − P_U G P_V;
* Polak–Ribière+ directions (the previous direction projected to the new tangent space),
  reset to steepest descent when not a descent direction;
* Armijo backtracking line search, with retraction by the SVD of a small core
  (≤ 2r × 2r) in orthonormal bases of [U, U_p] and [V, V_p];
* the iterate — accepted or only tried in a line search — with the lowest true spectral
  error σ₁(E) is kept, so the result is never worse in ‖·‖₂ than the p = 2 start
  (:func:`tqla.kron_svd`).

The spectrum of E comes by default from the Gram matrix of E's smaller side (one GEMM and
a symmetric eigenproblem of size min(M, N); line-search trials need only its eigenvalues,
and the gradient Q·diag(σ^(p−2)/F^(p−1))·Qᵀ·E needs no division by small singular values).
``svd="full"`` takes LAPACK's SVD of E instead, and ``svd="partial"`` a block subspace
iteration warm-started at the previous iterate's singular vectors (only the triplets with a
weight (σᵢ/σ₁)^(p−1) above 1e-3 matter at large p; the block grows until its last weight is
below that) — the default for min(M, N) > 2048, where the Gram eigenproblem gets costly.  docs/spectral.md gives the measurements behind
the default schedule and stopping rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tqla._array import (
    as_float_matrix,
    check_int,
    check_rng,
    is_numpy,
)
from tqla._estimator import _KronEstimator
from tqla._fixed_rank import (
    _inner,
    _kron_from_point,
    _Point,
    _point_from_kron,
    _project,
    _Retraction,
)
from tqla._spectral_residual import (  # noqa: F401 - constants re-exported for the docs
    GRAM_MAX_SIDE,
    SMALL_EIGH,
    WEIGHT_CUTOFF,
    _Residual,
    _schatten,
)
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd, rearrange
from tqla.norms import NormEstimate, spectral_norm

__all__ = [
    "DEFAULT_P",
    "SpectralHistory",
    "SpectralKronecker",
    "SpectralKroneckerApprox",
    "check_p_schedule",
    "kron_spectral",
]

SVDMode = Literal["auto", "gram", "full", "partial"]

#: Default continuation: p = 4, 8, ..., 128 (chosen by the measurements in docs/spectral.md).
DEFAULT_P: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
DEFAULT_MAX_ITER = 25  # iterations per value of p
DEFAULT_TOL = 1e-4  # stop a stage when F decreased by less than tol·F in an iteration
_ARMIJO = 1e-4
_MAX_BACKTRACK = 12


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------
@dataclass
class SpectralHistory:
    """What :func:`kron_spectral` did, one entry per evaluated iterate of the main path.

    Entry 0 is the start (:func:`tqla.kron_svd`'s answer unless ``init`` was given, p = 2);
    entry i > 0 is the iterate accepted by the i-th line search.

    Attributes
    ----------
    p : list of float
        Schatten order of the stage.
    error : list of float
        True spectral error σ₁(W − K) of that iterate.
    best : list of float
        Spectral error of the kept iterate so far (the minimum over every evaluated point,
        line-search trials included): non-increasing.
    objective : list of float
        Schatten-p norm ‖W − K‖_p at that iterate.
    step : list of float
        Accepted step length (0 for entry 0).
    """

    p: list[float] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)

    def append(self, p: float, error: float, best: float, objective: float, step: float):
        self.p.append(float(p))
        self.error.append(float(error))
        self.best.append(float(best))
        self.objective.append(float(objective))
        self.step.append(float(step))

    def __len__(self) -> int:
        return len(self.p)


class SpectralKronecker(KroneckerSum):
    """A :class:`~tqla.KroneckerSum` fitted in the spectral norm, with its history.

    Attributes
    ----------
    history : SpectralHistory
    spectral_error : NormEstimate
        ‖W − K‖₂ of the returned sum, with a certified upper bound (exact where
        affordable; see :func:`tqla.spectral_norm`).
    kron_svd_error : NormEstimate
        The same for the start (kron_svd's answer unless ``init`` was given).
    frobenius_error : float
        ‖W − K‖_F.
    n_iter : int
        Line searches run.
    n_evals : int
        Residuals whose singular triplets were computed.
    svd : str
        "gram", "full" or "partial": how the residual's spectrum was computed.
    time_s : float
        Wall time of the fit.
    """

    def __init__(self, A: Any, B: Any, **info: Any):
        super().__init__(A, B)
        self.history: SpectralHistory = info.get("history", SpectralHistory())
        self.spectral_error: NormEstimate | None = info.get("spectral_error")
        self.kron_svd_error: NormEstimate | None = info.get("kron_svd_error")
        self.frobenius_error: float = float(info.get("frobenius_error", math.nan))
        self.n_iter: int = int(info.get("n_iter", 0))
        self.n_evals: int = int(info.get("n_evals", 0))
        self.svd: str = str(info.get("svd", "full"))
        self.time_s: float = float(info.get("time_s", 0.0))

    @property
    def kron(self) -> KroneckerSum:
        """The plain :class:`~tqla.KroneckerSum` (same factors, no history)."""
        return KroneckerSum(self.A, self.B)

    def __repr__(self) -> str:
        s = self.kshape
        err = "?" if self.spectral_error is None else f"{self.spectral_error.estimate:.6g}"
        return (
            f"SpectralKronecker(shape={self.shape}, A={s.a}, B={s.b}, rank={self.rank}, "
            f"spectral_error={err}, n_iter={self.n_iter})"
        )


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def _check_p_value(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number or a sequence of numbers, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 2:
        raise ValueError(
            f"{name} must be >= 2 (the Schatten-p continuation starts from the Frobenius "
            f"problem p = 2 and grows towards the spectral norm), got {v}"
        )
    return v


def check_p_schedule(p: Any) -> tuple[float, ...]:
    """The continuation schedule for ``p``: a number or a non-decreasing sequence, all ≥ 2.

    A number P gives the powers of two 4, 8, ... below P, then P (P = 2: no continuation,
    plain :func:`tqla.kron_svd`).

    Examples
    --------
    >>> check_p_schedule(20)
    (4.0, 8.0, 16.0, 20.0)
    >>> check_p_schedule([2, 6])
    (6.0,)
    """
    if isinstance(p, (list, tuple)):
        if not p:
            raise ValueError("p must be a number >= 2 or a non-empty sequence, got []")
        vals = [_check_p_value(v, "p") for v in p]
        if any(b < a for a, b in zip(vals, vals[1:])):
            raise ValueError(f"p must be non-decreasing (a continuation), got {list(p)}")
        return tuple(v for v in vals if v > 2)
    P = _check_p_value(p, "p")
    out: list[float] = []
    v = 4.0
    while v < P:
        out.append(v)
        v *= 2
    if P > 2:
        out.append(P)
    return tuple(out)


def _check_init(init: Any, W: Any, s: KroneckerShape, rank: int) -> KroneckerSum:
    if not isinstance(init, KroneckerSum):
        raise TypeError(f"init must be a KroneckerSum or None, got {type(init).__name__}")
    if init.kshape != s:
        raise ValueError(f"init has factor shapes A {init.kshape.a} ⊗ B {init.kshape.b}, "
                         f"expected A {s.a} ⊗ B {s.b}")
    if init.rank != rank:
        raise ValueError(f"init must have rank {rank}, got rank {init.rank}")
    if type(init.A) is not type(W) or init.dtype != W.dtype:
        raise TypeError(
            f"init must be of W's array library and dtype ({type(W).__name__}, {W.dtype}), "
            f"got {type(init.A).__name__}, {init.dtype}"
        )
    return init


# --------------------------------------------------------------------------------------
# The continuation
# --------------------------------------------------------------------------------------
class _Optimiser:
    """Riemannian CG at each p of the schedule; keeps the best true spectral error."""

    def __init__(self, xp, res: _Residual, s: KroneckerShape, K0: KroneckerSum, callback):
        self.xp, self.res, self.s, self.callback = xp, res, s, callback
        self.history = SpectralHistory()
        self.pt = _point_from_kron(xp, K0)
        self.ev = res.evaluate(self.pt.X, n_iter=8, vectors=True)
        self.best_err = float(self.sig[0])
        self.best_pt: _Point | None = None  # None: the start itself
        self.n_iter = 0
        self.stopped = False
        eps = float(np.finfo(np.float32 if res.W.dtype == xp.float32 else np.float64).eps)
        self.tiny = 4 * eps * max(s.matrix_shape) * float(xp.max(xp.abs(res.W)))
        self.history.append(2.0, self.sig[0], self.best_err, _schatten(self.sig, 2.0), 0.0)

    @property
    def sig(self) -> np.ndarray:
        return self.ev.sig

    def _egrad(self, p: float, F: float) -> Any:
        """Euclidean gradient of F(X) = ‖W − R⁻¹(X)‖_p at the current point."""
        return -rearrange(self.res.gradient(self.ev, p, F), self.s)

    def _consider(self, pt: _Point, sig: np.ndarray) -> None:
        if float(sig[0]) < self.best_err:
            self.best_err, self.best_pt = float(sig[0]), pt

    def _refresh_block(self, p: float) -> None:
        changed = self.res.mode == "partial" and self.res.plan(self.sig, self.ev.V, p)
        while changed:
            self.ev = self.res.evaluate(self.pt.X, n_iter=4)
            self._consider(self.pt, self.sig)
            changed = self.res.adapt(self.sig, p, self.ev.V)

    def _line_search(self, D: Any, xi: Any, t: float, p: float, F: float):
        """Armijo backtracking along the retraction; returns (t, n_tries, state) or None."""
        slope = _inner(self.xp, xi, D)
        retr = _Retraction(self.xp, self.pt, D)
        for k in range(_MAX_BACKTRACK):
            cand = retr(t)
            state = self.res.evaluate(cand.X)
            self._consider(cand, state.sig)
            Fc = _schatten(state.sig, p)
            if Fc <= F + _ARMIJO * t * slope:
                return t, k + 1, cand, state, Fc
            t *= 0.5
        return None

    def stage(self, p: float, max_iter: int, tol: float) -> None:
        xp = self.xp
        if self.sig[0] <= self.tiny:  # W − K vanishes to rounding: nothing to improve
            return
        self._refresh_block(p)
        F = _schatten(self.sig, p)
        xi = _project(xp, self.pt, self._egrad(p, F))
        xi_prev = D_prev = None
        t = None
        for _ in range(max_iter):
            if F <= self.tiny:
                return
            D = -xi
            if D_prev is not None:
                Txi = _project(xp, self.pt, xi_prev)
                TD = _project(xp, self.pt, D_prev)
                beta = max(0.0, _inner(xp, xi, xi - Txi) / _inner(xp, xi_prev, xi_prev))
                D = -xi + beta * TD
                if _inner(xp, xi, D) >= -1e-3 * math.sqrt(_inner(xp, xi, xi) * _inner(xp, D, D)):
                    D = -xi  # not a (sufficient) descent direction: restart
            dn = math.sqrt(_inner(xp, D, D))
            if dn == 0.0:
                return
            if t is None:
                t = 0.1 * F / dn
            found = self._line_search(D, xi, t, p, F)
            if found is None:
                return
            t, tries, cand, state, Fc = found
            rel = (F - Fc) / F
            self.pt, F, self.ev = cand, Fc, state
            self.n_iter += 1
            block_changed = False
            while self.res.adapt(self.sig, p, self.ev.V):  # block too small: grow, re-evaluate
                block_changed = True
                self.ev = self.res.evaluate(self.pt.X, n_iter=4)
                self._consider(self.pt, self.sig)
                F = _schatten(self.sig, p)
            self.history.append(p, self.sig[0], self.best_err, F, t)
            if self.callback is not None and self.callback(self._info(p, F)):
                self.stopped = True
                return
            if rel < tol:
                return
            if tries == 1:
                t *= 2.0
            xi_prev, D_prev = (None, None) if block_changed else (xi, D)
            xi = _project(xp, self.pt, self._egrad(p, F))

    def _info(self, p: float, F: float) -> dict:
        return {
            "iteration": self.n_iter,
            "p": p,
            "error": float(self.sig[0]),
            "best": self.best_err,
            "objective": F,
        }


def _check_number(v: Any, name: str, *, minimum: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(float(v)) or float(v) < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {v}")
    return float(v)


def kron_spectral(
    W: Any,
    shape: Any,
    rank: int = 1,
    *,
    p: float | Sequence[float] = DEFAULT_P,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    init: KroneckerSum | None = None,
    rng: None | int | np.random.Generator = None,
    callback: Callable[[dict], Any] | None = None,
    svd: SVDMode = "auto",
    error_method: str = "auto",
) -> SpectralKronecker:
    """Rank-``rank`` Kronecker sum approximating W in the spectral norm.

    Starts from :func:`tqla.kron_svd` (the p = 2 solution) and runs the Schatten-p
    continuation described in the module docstring; returns the iterate with the lowest
    true spectral error seen, so ‖W − K‖₂ is never above kron_svd's.

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
        Real floating matrix of any array library; the result has its library, device
        and dtype (half precisions are fitted in float32).
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    rank : int
        1 ≤ rank ≤ min(m1·n1, m2·n2).
    p : number or sequence of numbers, each ≥ 2
        The continuation schedule (see :func:`check_p_schedule`); default 4, 8, ..., 128.
        ``p=2`` returns kron_svd's answer.
    max_iter : int
        Line searches per value of p.
    tol : float
        A stage ends when an iteration lowers ‖E‖_p by less than ``tol`` relatively.
    init : KroneckerSum, optional
        Start instead of kron_svd (same shapes, rank, library and dtype).
    rng : None, int or numpy.random.Generator
        Start vectors of the partial SVD.
    callback : callable, optional
        Called after every iteration with a dict (iteration, p, error, best, objective);
        returning True stops the fit.
    svd : {"auto", "gram", "full", "partial"}
        How the residual's spectrum is computed: "gram" (eigenvalues of the Gram matrix of
        E's smaller side), "full" (LAPACK SVD of E), "partial" (warm-started block subspace
        iteration); "auto" takes "gram" when min(M, N) ≤ 2048, else "partial".
    error_method : str
        Method of :func:`tqla.spectral_norm` for the certified final errors.

    Returns
    -------
    SpectralKronecker
        A KroneckerSum with ``history``, ``spectral_error``, ``kron_svd_error``, ...

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((16, 16))
    >>> K = kron_spectral(W, ((4, 4), (4, 4)), rank=2, rng=0)
    >>> bool(K.spectral_error.estimate <= K.kron_svd_error.estimate)
    True
    >>> all(a >= b for a, b in zip(K.history.best, K.history.best[1:]))
    True
    """
    t_start = time.perf_counter()
    xp, W = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(W)
    rank = s.check_rank(rank)
    schedule = check_p_schedule(p)
    max_iter = check_int(max_iter, "max_iter", minimum=0)
    tol = _check_number(tol, "tol")
    if svd not in ("auto", "gram", "full", "partial"):
        raise ValueError(f"svd must be one of 'auto', 'gram', 'full', 'partial', got {svd!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if W.dtype not in (xp.float32, xp.float64):
        init32 = None if init is None else init.astype(xp.float32)
        K = kron_spectral(xp.astype(W, xp.float32), s, rank, p=p, max_iter=max_iter, tol=tol,
                          init=init32, rng=rng, callback=callback, svd=svd,
                          error_method=error_method)
        return _with_dtype(K, W.dtype)
    K0 = kron_svd(W, s, rank) if init is None else _check_init(init, W, s, rank)
    if is_numpy(xp) and hasattr(np, "permute_dims"):  # NumPy ≥ 2 is an array-API namespace
        xp = np
    opt = _Optimiser(xp, _Residual(xp, W, s, svd, check_rng(rng), rank), s, K0, callback)
    for pv in schedule:
        if opt.stopped or max_iter == 0:
            break
        opt.stage(pv, max_iter, tol)
    err0 = spectral_norm(W - K0.to_dense(), method=error_method, rng=0)
    K, err = K0, err0
    if opt.best_pt is not None:
        Kb = _kron_from_point(xp, opt.best_pt, s)
        errb = spectral_norm(W - Kb.to_dense(), method=error_method, rng=0)
        if errb.estimate <= err0.estimate:  # guard against inexact partial triplets
            K, err = Kb, errb
    frob = float(xp.linalg.vector_norm(W - K.to_dense()))
    return SpectralKronecker(
        K.A, K.B, history=opt.history, spectral_error=err, kron_svd_error=err0,
        frobenius_error=frob, n_iter=opt.n_iter, n_evals=opt.res.n_evals,
        svd=opt.res.mode, time_s=time.perf_counter() - t_start,
    )


def _with_dtype(K: SpectralKronecker, dtype: Any) -> SpectralKronecker:
    xp = K.xp
    return SpectralKronecker(
        xp.astype(K.A, dtype), xp.astype(K.B, dtype), history=K.history,
        spectral_error=K.spectral_error, kron_svd_error=K.kron_svd_error,
        frobenius_error=K.frobenius_error, n_iter=K.n_iter, n_evals=K.n_evals, svd=K.svd,
        time_s=K.time_s,
    )


class SpectralKroneckerApprox(_KronEstimator):
    """Estimator-style wrapper of :func:`kron_spectral`.

    :meth:`fit` sets ``result_`` (a :class:`SpectralKronecker`), ``spectral_error_``,
    ``history_``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> est = SpectralKroneckerApprox(((4, 3), (2, 2)), rank=1, rng=0).fit(W)
    >>> est.transform().shape
    (8, 6)
    """

    def fit(self, W: Any) -> SpectralKroneckerApprox:
        self.result_ = kron_spectral(W, self.shape, self.rank, **self.kwargs)
        self.spectral_error_ = self.result_.spectral_error
        self.history_ = self.result_.history
        return self
