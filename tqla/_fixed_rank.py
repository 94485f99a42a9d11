"""The manifold of rank-r matrices X = U diag(S) Vᵀ used by :func:`tqla.kron_spectral`.

Points, the tangent projection P_U Z + Z P_V − P_U Z P_V, the retraction through the SVD
of a small core, and the map back to Kronecker factors (with kron_svd's sign rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import device_of, is_numpy
from tqla.kron import KroneckerShape, KroneckerSum

# --------------------------------------------------------------------------------------
# The manifold of rank-r matrices X = U diag(S) Vᵀ
# --------------------------------------------------------------------------------------
class _Point:
    __slots__ = ("U", "S", "V", "X")

    def __init__(self, xp, U, S, V):
        self.U, self.S, self.V = U, S, V
        self.X = xp.matmul(U * xp.reshape(S, (1, -1)), xp.permute_dims(V, (1, 0)))


def _point_from_kron(xp, K: KroneckerSum) -> _Point:
    r = K.rank
    Af = xp.permute_dims(xp.reshape(K.A, (r, -1)), (1, 0))  # (q, r)
    Bf = xp.permute_dims(xp.reshape(K.B, (r, -1)), (1, 0))  # (p', r)
    Qa, Ra = xp.linalg.qr(Af)
    Qb, Rb = xp.linalg.qr(Bf)
    Uc, S, Vch = xp.linalg.svd(xp.matmul(Ra, xp.permute_dims(Rb, (1, 0))))
    return _Point(xp, xp.matmul(Qa, Uc), S, xp.matmul(Qb, xp.permute_dims(Vch, (1, 0))))


def _project(xp, pt: _Point, Z: Any) -> Any:
    """Orthogonal projection of Z onto the tangent space at pt: P_U Z + Z P_V − P_U Z P_V."""
    U, V = pt.U, pt.V
    Ut, Vt = xp.permute_dims(U, (1, 0)), xp.permute_dims(V, (1, 0))
    UtZ = xp.matmul(Ut, Z)  # (r, p')
    ZV = xp.matmul(Z, V)  # (q, r)
    M = xp.matmul(UtZ, V)
    return xp.matmul(U, UtZ) + xp.matmul(ZV - xp.matmul(U, M), Vt)


class _Retraction:
    """Retraction t ↦ best rank-r approximation of X + t·D (D tangent at X)."""

    def __init__(self, xp, pt: _Point, D: Any):
        U, V = pt.U, pt.V
        Ut = xp.permute_dims(U, (1, 0))
        DV = xp.matmul(D, V)
        M = xp.matmul(Ut, DV)
        Up = DV - xp.matmul(U, M)
        Vp = xp.matmul(xp.permute_dims(D, (1, 0)), U) - xp.matmul(V, xp.permute_dims(M, (1, 0)))
        self.Ql, self.Rl = xp.linalg.qr(xp.concat([U, Up], axis=1))
        self.Qr, self.Rr = xp.linalg.qr(xp.concat([V, Vp], axis=1))
        self.xp, self.pt, self.M, self.r = xp, pt, M, int(U.shape[1])
        self.SM = _diag(xp, pt.S)

    def __call__(self, t: float) -> _Point:
        xp, r = self.xp, self.r
        # X + tD = [U Up] [[S + tM, tI], [tI, 0]] [V Vp]ᵀ
        eye = xp.eye(r, dtype=self.M.dtype, device=device_of(self.M))
        top = xp.concat([self.SM + t * self.M, t * eye], axis=1)
        bottom = xp.concat([t * eye, xp.zeros_like(eye)], axis=1)
        C = xp.concat([top, bottom], axis=0)
        core = xp.matmul(xp.matmul(self.Rl, C), xp.permute_dims(self.Rr, (1, 0)))
        Uc, S, Vch = xp.linalg.svd(core, full_matrices=False)
        U = xp.matmul(self.Ql, Uc[:, :r])
        V = xp.matmul(self.Qr, xp.permute_dims(Vch[:r, :], (1, 0)))
        return _Point(xp, U, S[:r], V)


def _diag(xp, s: Any) -> Any:
    n = int(s.shape[0])
    return xp.eye(n, dtype=s.dtype, device=device_of(s)) * xp.reshape(s, (1, n))


def _inner(xp, a: Any, b: Any) -> float:
    return float(xp.sum(a * b))


def _kron_from_point(xp, pt: _Point, s: KroneckerShape) -> KroneckerSum:
    """A_k = √S_k·unvec(U_k), B_k = √S_k·unvec(V_k), with kron_svd's sign rule."""
    r = int(pt.S.shape[0])
    root = xp.reshape(xp.sqrt(xp.where(pt.S > 0, pt.S, xp.zeros_like(pt.S))), (-1, 1))
    Ar = xp.permute_dims(pt.U, (1, 0)) * root
    Br = xp.permute_dims(pt.V, (1, 0)) * root
    small = Br if s.m2 * s.n2 <= s.m1 * s.n1 else Ar
    n = int(small.shape[1])
    idx = xp.argmax(xp.abs(small), axis=1)
    onehot = xp.reshape(xp.arange(n, device=device_of(small)), (1, n)) == xp.reshape(idx, (-1, 1))
    picked = xp.sum(xp.where(onehot, small, xp.zeros_like(small)), axis=1)
    sign = xp.reshape(xp.where(picked < 0, -xp.ones_like(picked), xp.ones_like(picked)), (-1, 1))
    Ar, Br = Ar * sign, Br * sign
    if is_numpy(xp):
        Ar, Br = np.ascontiguousarray(Ar), np.ascontiguousarray(Br)
    return KroneckerSum(xp.reshape(Ar, (r, s.m1, s.n1)), xp.reshape(Br, (r, s.m2, s.n2)))
