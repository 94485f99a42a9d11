"""The residual E = W − R⁻¹(X) of :func:`tqla.kron_spectral` and its spectrum.

Three routes (see :class:`_Residual`): the Gram matrix of E's smaller side (default), the
full SVD of E, or a block subspace iteration warm-started at the previous singular vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import from_numpy, to_numpy
from tqla.kron import KroneckerShape, unrearrange

# svd="auto" takes the Gram route when min(M, N) is at most this, else the partial route.
GRAM_MAX_SIDE = 2048
# Up to this size line-search trials take eigenvectors too (eigh costs little more than
# eigvalsh there, and an accepted trial then needs no second decomposition).
SMALL_EIGH = 128
WEIGHT_CUTOFF = 1e-3  # triplets whose gradient weight (σᵢ/σ₁)^(p−1) is below are dropped


# --------------------------------------------------------------------------------------
# Singular triplets of the residual
# --------------------------------------------------------------------------------------
class _Eval:
    """The residual E at one point and what is known of its spectrum.

    ``sig``: singular values on the host, descending (all of them, or the top block on the
    partial route).  ``U``/``V``: singular vectors (full and partial routes), ``G``/``Q``:
    the Gram matrix of E's smaller side and its eigenvectors (Gram route; ``Q`` is computed
    only where a gradient is needed).
    """

    __slots__ = ("E", "sig", "U", "V", "G", "Q")

    def __init__(self, E, sig, U=None, V=None, G=None, Q=None):
        self.E, self.sig, self.U, self.V, self.G, self.Q = E, sig, U, V, G, Q


class _Residual:
    """E = W − R⁻¹(X) and its singular values / gradient factors, by one of three routes.

    * ``"gram"``: eigenvalues of the Gram matrix of E's smaller side (one GEMM and a small
      symmetric eigenproblem; line-search trials need the eigenvalues only, accepted points
      the eigenvectors too);
    * ``"full"``: LAPACK/cuSOLVER SVD of E;
    * ``"partial"``: block subspace iteration warm-started at the previous singular vectors.
    """

    def __init__(self, xp, W, s: KroneckerShape, mode: str, rng: np.random.Generator, rank):
        self.xp, self.W, self.s = xp, W, s
        M, N = s.matrix_shape
        self.n = min(M, N)
        self.left = M <= N  # Gram route: E Eᵀ (M×M) if True, else Eᵀ E
        if mode == "auto":
            mode = "gram" if self.n <= GRAM_MAX_SIDE else "partial"
        self.allow_partial = mode == "partial"
        self.k_min = min(self.n, max(16, 4 * rank))
        # The block never exceeds k_max: beyond it the objective is the Schatten-p norm of
        # the top k_max singular values (a truncated surrogate that still bounds ‖E‖₂).
        self.k_max = self.n
        self.mode = mode
        self.k = self.k_min
        self.rng = rng
        self.V = None  # warm start (N × k) for the partial route
        self.n_evals = 0

    def _gauss(self, rows: int, cols: int) -> Any:
        g = from_numpy(self.rng.standard_normal((rows, cols)), self.W)
        return self.xp.astype(g, self.W.dtype)

    def evaluate(self, X: Any, n_iter: int = 2, vectors: bool = False) -> _Eval:
        """The residual at X with its singular values (and vectors if ``vectors``)."""
        xp = self.xp
        E = self.W - unrearrange(X, self.s)
        self.n_evals += 1
        if self.mode == "gram":
            Et = xp.permute_dims(E, (1, 0))
            G = xp.matmul(E, Et) if self.left else xp.matmul(Et, E)
            ev = _Eval(E, None, G=G)
            if vectors or self.n <= SMALL_EIGH:
                self.complete(ev)
            else:
                lam = _host(xp.linalg.eigvalsh(G))[::-1]
                ev.sig = np.sqrt(np.maximum(lam, 0.0))
            return ev
        if self.mode == "full":
            U, sig, Vh = xp.linalg.svd(E, full_matrices=False)
            return _Eval(E, _host(sig), U=U, V=xp.permute_dims(Vh, (1, 0)))
        V0 = self.V if self.V is not None else self._gauss(E.shape[1], self.k)
        if self.V is None:
            n_iter = 8
        Et = xp.permute_dims(E, (1, 0))
        Q = V0
        for _ in range(n_iter):
            Qy, _ = xp.linalg.qr(xp.matmul(E, Q))
            Q, _ = xp.linalg.qr(xp.matmul(Et, Qy))
        Ub, sig, Vbh = xp.linalg.svd(xp.matmul(E, Q), full_matrices=False)
        V = xp.matmul(Q, xp.permute_dims(Vbh, (1, 0)))
        return _Eval(E, _host(sig), U=Ub, V=V)

    def complete(self, ev: _Eval, k: int | None = None) -> None:
        """Add what the gradient needs (the Gram route's eigenvectors: the top ``k``)."""
        if self.mode != "gram" or ev.Q is not None:
            return
        xp = self.xp
        n = int(ev.G.shape[0])
        if xp is np and k is not None and 8 * k <= n:  # MRRR pays for few vectors only
            # NumPy input: LAPACK's MRRR computes only the top k eigenpairs (SciPy).
            from scipy.linalg import eigh as _eigh

            lam, Q = _eigh(ev.G, subset_by_index=[n - k, n - 1], driver="evr")
            ev.Q = Q[:, ::-1]  # the values stay those of the full spectrum (ev.sig)
            return
        lam, Q = xp.linalg.eigh(ev.G)
        ev.sig = np.sqrt(np.maximum(_host(lam)[::-1], 0.0))
        ev.Q = xp.flip(Q, axis=1)

    def gradient(self, ev: _Eval, p: float, F: float) -> Any:
        """∇_E ‖E‖_p = U diag((σ/F)^(p−1)) Vᵀ, on the triplets whose weight is not negligible.

        On the Gram route (E Eᵀ = Q Σ² Qᵀ) this is Q diag(σ^(p−2)/F^(p−1)) Qᵀ E, with no
        division by small singular values.
        """
        xp = self.xp
        sig = ev.sig
        keep = max(1, int(np.sum((sig / sig[0]) ** (p - 1) > 1e-8))) if sig[0] > 0 else 1
        if self.mode == "gram":
            self.complete(ev, keep)
            d = (sig[:keep] / F) ** (p - 2) / F
            d_x = xp.astype(from_numpy(d, ev.E), ev.E.dtype)
            Qk = ev.Q[:, :keep]
            Qt = xp.permute_dims(Qk, (1, 0))
            if self.left:
                return xp.matmul(Qk * xp.reshape(d_x, (1, -1)), xp.matmul(Qt, ev.E))
            return xp.matmul(xp.matmul(ev.E, Qk) * xp.reshape(d_x, (1, -1)), Qt)
        w = (sig[:keep] / F) ** (p - 1)
        w_x = xp.astype(from_numpy(w, ev.E), ev.E.dtype)
        Uk = ev.U[:, :keep] * xp.reshape(w_x, (1, -1))
        return xp.matmul(Uk, xp.permute_dims(ev.V[:, :keep], (1, 0)))

    def plan(self, sig: np.ndarray, V: Any, p: float) -> bool:
        """At the start of a stage on the partial route: the block size k for order p.

        k is 1.5× the number of triplets whose weight (σᵢ/σ₁)^(p−1) exceeds
        :data:`WEIGHT_CUTOFF` (at least 16 and 4·rank); the block is warm-started from the
        current singular vectors.  Returns True when the route or block changed.
        """
        if not self.allow_partial or sig[0] <= 0:
            return False
        need = int(np.sum((sig / sig[0]) ** (p - 1) > WEIGHT_CUTOFF))
        k = min(self.n, max(self.k_min, int(1.5 * need) + 1))
        k = min(k, self.k_max)
        if self.mode == "partial" and k <= self.k:
            return False
        cols = min(k, int(V.shape[1]))
        Vk = V[:, :cols]
        if cols < k:
            Vk = self.xp.concat([Vk, self._gauss(int(V.shape[0]), k - cols)], axis=1)
        self.mode, self.k, self.V = "partial", k, Vk
        return True

    def adapt(self, sig: np.ndarray, p: float, V: Any) -> bool:
        """After an accepted step: keep V as the warm start; grow the block if its last
        weight is not negligible.  Returns True when the block changed (the caller then
        re-evaluates the current point)."""
        if self.mode != "partial":
            return False
        self.V = V
        if sig[0] <= 0 or (sig[-1] / sig[0]) ** (p - 1) <= WEIGHT_CUTOFF:
            return False
        k_new = min(self.k_max, 2 * self.k)
        if k_new <= self.k:  # at the cap: keep the truncated objective
            return False
        extra = self._gauss(int(V.shape[0]), k_new - self.k)
        self.V = self.xp.concat([V, extra], axis=1)
        self.k = k_new
        return True


def _host(x: Any) -> np.ndarray:
    return to_numpy(x, np.float64)


def _schatten(sig: np.ndarray, p: float) -> float:
    s1 = float(sig[0])
    if s1 <= 0:
        return 0.0
    return s1 * float(np.sum((sig / s1) ** p)) ** (1.0 / p)
