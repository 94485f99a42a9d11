"""Activation-aware spectral-norm Kronecker sums and tensor trains (docs/auto.md §1).

The remaining methods of :mod:`tqla.whiten`, by the same reduction: approximate the input
second moment C by a Kronecker product matched to the factors' column modes, whiten W by
its root, fit plainly, map the column factors back.

* :func:`whitened_kron_spectral` — minimises ‖(W − Σ A_k⊗B_k)·(S₁⊗S₂)‖₂ with
  C ≈ C₁⊗C₂: :func:`tqla.kron_spectral` of W·(S₁⊗S₂), then A_k·S₁⁺ and B_k·S₂⁺ (the
  spectral norm of the output error over unit-second-moment input directions);
* :func:`whitened_tt_matrix` — a TT-matrix W ≈ G₁⋯G_d, whose column index splits as
  (j₁, …, j_d): with C ≈ C₁⊗⋯⊗C_d (:func:`kron_moment_factors`), Ŵ·(S₁⊗⋯⊗S_d) is the
  TT-matrix with cores G_k contracted with S_k over j_k, so :func:`tqla.tt_matrix` of
  W·(S₁⊗⋯⊗S_d) followed by the contraction of each core with S_k⁺ minimises
  ‖(W − Ŵ)·S‖_F as well as TT-SVD minimises the plain error (quasi-optimal, exact at full
  ranks).

Both are exact reductions when C is exactly that Kronecker product and S is invertible
(``damp > 0`` or a non-singular C); with C = I they return the plain answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tqla._array import as_float_matrix, check_int, to_numpy
from tqla.shapes import KroneckerShape
from tqla.whiten import (
    _back,
    _check_damp,
    _kron_roots,
    _moment64,
    _root64,
    _times_kron,
    nearest_kron_moment,
)

__all__ = ["kron_moment_factors", "whitened_kron_spectral", "whitened_tt_matrix"]


def kron_moment_factors(C: Any, col_modes: Any) -> list[np.ndarray]:
    """C ≈ C₁ ⊗ C₂ ⊗ ⋯ ⊗ C_d, factor k of size n_k×n_k, by successive nearest Kronecker
    products (:func:`tqla.nearest_kron_moment` of C, then of the remainder).

    Exact (up to rounding) when C is such a Kronecker product; each factor is symmetric
    PSD.  Returned as float64 NumPy arrays.

    Parameters
    ----------
    C : array of shape (N, N), N = n₁⋯n_d
    col_modes : sequence of d positive ints

    Examples
    --------
    >>> import numpy as np
    >>> F = [np.diag([1.0, 2.0]), np.diag([3.0, 1.0, 2.0]), np.eye(2)]
    >>> C = np.kron(np.kron(F[0], F[1]), F[2])
    >>> G = kron_moment_factors(C, (2, 3, 2))
    >>> bool(np.allclose(np.kron(np.kron(G[0], G[1]), G[2]), C))
    True
    """
    modes = _modes(col_modes, "col_modes")
    rest = _moment64(C, math.prod(modes))
    out = []
    for k, n in enumerate(modes[:-1]):
        Ck, rest = nearest_kron_moment(rest, n, math.prod(modes[k + 1 :]))
        out.append(Ck)
    out.append(rest)
    return out


def _modes(modes: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(check_int(v, name, minimum=1) for v in modes)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints, got {modes!r}") from None
    if not out:
        raise ValueError(f"{name} must hold at least one mode")
    return out


def whitened_kron_spectral(
    W: Any, C: Any, shape: Any, rank: int = 1, *, damp: float = 0.0, **options: Any
) -> Any:
    """Kronecker sum minimising the spectral norm of the whitened error ‖(W − K)·(S₁⊗S₂)‖₂.

    C ≈ C₁⊗C₂ (:func:`tqla.nearest_kron_moment`), S_i·S_iᵀ = C_i (damped by ``damp``);
    :func:`tqla.kron_spectral` of W' = W·(S₁⊗S₂) gives A'_k, B'_k, and A_k = A'_k·S₁⁺,
    B_k = B'_k·S₂⁺.  When C = C₁⊗C₂ exactly (and S invertible) this is the spectral fit of
    the output error over the input distribution: ‖(W − K)·S‖₂ = max over inputs x with
    E-normalised covariance of the output error.

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
    C : array of shape (n1·n2, n1·n2)
        Second moment of the inputs.
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    rank : int
    damp : float, default 0
        Relative damping of C₁ and C₂ (see :func:`tqla.moment_root`).
    **options
        Keyword arguments of :func:`tqla.kron_spectral` (``p``, ``max_iter``, ``init`` —
        a sum in W's frame —, ...).

    Returns
    -------
    SpectralKronecker
        Factors of W's library, device and dtype.  Its ``spectral_error``,
        ``kron_svd_error``, ``frobenius_error`` and ``history`` are those of the whitened
        problem (W' against K·(S₁⊗S₂)) with S₁, S₂ scaled to spectral norm 1, i.e. the
        whitened errors divided by √λ_max(C₁⊗C₂); relative errors do not depend on it.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((6, 4))
    >>> K = whitened_kron_spectral(W, np.eye(4), ((3, 2), (2, 2)), 1, p=[4], max_iter=5)
    >>> K.to_dense().shape
    (6, 4)
    """
    from tqla.kron import KroneckerSum
    from tqla.spectral import SpectralKronecker, kron_spectral

    _, Wx = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(Wx)
    rank = s.check_rank(rank)
    damp = _check_damp(damp)
    S1, S1p, S2, S2p = _kron_roots(_moment64(C, s.matrix_shape[1]), s, damp)
    # the minimiser does not depend on the scale of S: normalise each root to norm 1, so
    # that a multiple of I (e.g. I damped) whitens W by exactly I — the plain fit, bit for bit
    (S1, S1p), (S2, S2p) = _unit_root(S1, S1p), _unit_root(S2, S2p)
    init = options.pop("init", None)
    if init is not None:  # into the whitened frame: (A⊗B)(S₁⊗S₂) = (A·S₁)⊗(B·S₂)
        init = KroneckerSum(
            _back(np.einsum("kij,jl->kil", to_numpy(init.A, np.float64), S1), Wx),
            _back(np.einsum("kij,jl->kil", to_numpy(init.B, np.float64), S2), Wx),
        )
    # the spectral fit runs in W's library and dtype (with C = I on W itself, bit for bit)
    Ww = _back(_times_kron(to_numpy(Wx, np.float64), S1, S2), Wx)
    K = kron_spectral(Ww, s, rank, init=init, **options)
    A = np.einsum("kij,jl->kil", to_numpy(K.A, np.float64), S1p)
    B = np.einsum("kij,jl->kil", to_numpy(K.B, np.float64), S2p)
    return SpectralKronecker(
        _back(A, Wx),
        _back(B, Wx),
        history=K.history,
        spectral_error=K.spectral_error,
        kron_svd_error=K.kron_svd_error,
        frobenius_error=K.frobenius_error,
        n_iter=K.n_iter,
        n_evals=K.n_evals,
        svd=K.svd,
        time_s=K.time_s,
    )


def _unit_root(S: np.ndarray, Sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S/c, c·S⁺) with c = ‖S‖₂ (the largest root of the eigenvalues; 1 for S = 0)."""
    c = float(np.sqrt(np.max(np.sum(S * S, axis=0)))) if S.size else 0.0
    return (S / c, Sp * c) if c > 0 else (S, Sp)


def whitened_tt_matrix(
    W: Any,
    C: Any,
    row_modes: Any,
    col_modes: Any,
    *,
    ranks: Any = None,
    eps: float | None = None,
    damp: float = 0.0,
    method: str = "auto",
) -> Any:
    """TT-matrix Ŵ fitted to the inputs: TT-SVD of ‖(W − Ŵ)·S‖_F, S·Sᵀ ≈ C.

    C ≈ C₁⊗⋯⊗C_d over the column modes (:func:`kron_moment_factors`), S_k·S_kᵀ = C_k
    (damped by ``damp``); :func:`tqla.tt_matrix` of W·(S₁⊗⋯⊗S_d), then each core's column
    index contracted with S_k⁺ (G_k[a, i, j, b] ← Σ_l G'_k[a, i, l, b]·S_k⁺[l, j]).

    Parameters
    ----------
    W : array of shape (M, N)
    C : array of shape (N, N)
        Second moment of the inputs.
    row_modes, col_modes, ranks, method
        As in :func:`tqla.tt_matrix`.
    eps : float, optional
        As in :func:`tqla.tt_matrix`, relative to the whitened norm ‖W·S‖_F.
    damp : float, default 0
        Relative damping of each factor C_k.

    Returns
    -------
    TTMatrix
        Cores of W's library, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((6, 8))
    >>> X = rng.standard_normal((100, 8)) * np.linspace(0.1, 3.0, 8)
    >>> C = X.T @ X / 100
    >>> T = whitened_tt_matrix(W, C, (3, 2), (2, 4), ranks=[2], damp=0.01)
    >>> T.ranks
    (1, 2, 1)
    """
    from tqla.tt_matrix import TTMatrix, tt_matrix

    _, Wx = as_float_matrix(W, "W")
    M, N = (int(v) for v in Wx.shape)
    cm = _modes(col_modes, "col_modes")
    if math.prod(cm) != N:
        raise ValueError(f"col_modes {cm} must multiply to W's {N} columns")
    damp = _check_damp(damp)
    roots = [_unit_root(*_root64(Ck, damp)) for Ck in kron_moment_factors(_moment64(C, N), cm)]
    Ww = to_numpy(Wx, np.float64).reshape(M, *cm)
    for k, (S, _) in enumerate(roots):  # contract column axis k with S_k
        Ww = np.moveaxis(np.tensordot(Ww, S, axes=([k + 1], [0])), -1, k + 1)
    T = tt_matrix(Ww.reshape(M, N), row_modes, cm, ranks=ranks, eps=eps, method=method)
    cores = [
        np.einsum("ailb,lj->aijb", np.asarray(G), Sp)
        for G, (_, Sp) in zip(T.cores, roots)
    ]
    return TTMatrix([_back(G, Wx) for G in cores])
