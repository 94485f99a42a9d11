"""tqla/_permuted_base.py stated whole (issue 15, fifth pass), for both of its users.

:class:`tqla.PermutedKronecker` and :class:`tqla.PermutedTT` store W ≈
inner.to_dense()[row_perm][:, col_perm] and apply the permutations as gathers around the
inner product.  For every combination of identity / non-identity sides, on NumPy and
torch: the fields, ``to_dense``, ``matmat`` (1-D to 4-D operands) and ``rmatmat`` (1-D to
3-D) equal the dense products, and a namespace proxy counts the gathers, so that each
side's identity shortcut (no gather) and each gather's axis are observed, not only the
values.
"""

from __future__ import annotations

import numpy as np
import pytest

from tqla import KroneckerSum, PermutedKronecker, PermutedTT, tt_matrix

RP = np.array([3, 1, 0, 2])
CP = np.array([5, 0, 1, 4, 3, 2])
COMBOS = [(False, False), (True, False), (False, True), (True, True)]


class _CountingNamespace:
    """Wraps an array namespace; records the axis of every ``take``."""

    def __init__(self, xp):
        self._xp = xp
        self.takes: list[int] = []

    def take(self, x, idx, *, axis):
        self.takes.append(axis)
        return self._xp.take(x, idx, axis=axis)

    def __getattr__(self, name):
        return getattr(self._xp, name)


def _inner(kind: str, lib: str):
    rng = np.random.default_rng(0)
    if kind == "kron":
        A, B = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 2, 2))
        if lib == "torch":
            torch = pytest.importorskip("torch")
            A, B = torch.tensor(A), torch.tensor(B)
        return KroneckerSum(A, B)
    W = rng.standard_normal((4, 6))
    if lib == "torch":
        W = pytest.importorskip("torch").tensor(W)
    return tt_matrix(W, (2, 2), (3, 2), ranks=2)


def _make(kind, lib, rows, cols, **kw):
    inner = _inner(kind, lib)
    rp = RP if rows else np.arange(4)
    cp = CP if cols else np.arange(6)
    cls = PermutedKronecker if kind == "kron" else PermutedTT
    P = cls(inner, rp, cp, [0.5, 0.25], 1, **kw)
    return P, rp, cp


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _like(P, a):
    if type(P.row_perm).__module__.startswith("torch"):
        import torch

        return torch.tensor(a)
    return a


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("kind", ["kron", "tt"])
@pytest.mark.parametrize(("rows", "cols"), COMBOS)
def test_fields_dense_and_products_with_one_gather_per_permuted_side(kind, lib, rows, cols):
    P, rp, cp = _make(kind, lib, rows, cols)
    inner = P._inner
    Kd = _np(inner.to_dense())
    D = Kd[rp][:, cp]
    # fields
    assert P.shape == (4, 6) and P.n_params == inner.n_params
    assert P.permuted == (rows, cols) and P.n_perm_indices == 4 * rows + 6 * cols
    assert P.errors == [0.5, 0.25] and P.error == 0.25 and P.n_iter == 1
    for perm, want in ((P.row_perm, rp), (P.col_perm, cp)):
        assert type(perm) is type(inner.to_dense())  # the inner's library
        np.testing.assert_array_equal(_np(perm), want)
        assert _np(perm).dtype == np.int64
    # to_dense: a gather per permuted side, rows on axis 0, columns on axis 1
    xp = P._xp = _CountingNamespace(P._xp)
    np.testing.assert_allclose(_np(P.to_dense()), D, atol=1e-12)
    assert xp.takes == [0] * rows + [1] * cols
    rng = np.random.default_rng(1)
    for shape in [(6,), (6, 2), (3, 6, 2), (2, 3, 6, 1)]:
        X = rng.standard_normal(shape)
        xp.takes.clear()
        Y = _np(P @ _like(P, X))
        np.testing.assert_allclose(Y, np.matmul(D, X), atol=1e-12)
        axis = 0 if X.ndim <= 2 else X.ndim - 2
        assert xp.takes == [axis] * (cols + rows)
    for shape in [(4,), (3, 4), (2, 5, 4)]:
        X = rng.standard_normal(shape)
        xp.takes.clear()
        Y = _np(_like(P, X) @ P)
        np.testing.assert_allclose(Y, np.matmul(X, D), atol=1e-12)
        assert xp.takes == [X.ndim - 1] * (rows + cols)


@pytest.mark.parametrize("kind", ["kron", "tt"])
def test_permuted_flags_timings_and_numbers_are_stored_as_given(kind):
    timings = {"total": 1.5, "n_lsap": 3}
    P, _, _ = _make(kind, "numpy", False, False, permuted=(np.True_, 1), timings=timings)
    assert P.permuted == (True, True) and all(type(b) is bool for b in P.permuted)
    assert P.n_perm_indices == 10
    assert P.timings == timings and P.timings is not timings
    timings["total"] = 0.0
    assert P.timings["total"] == 1.5  # a copy
    Q, _, _ = _make(kind, "numpy", True, False, permuted=None, timings=None)
    assert Q.permuted == (True, False) and Q.timings == {}
    R, _, _ = _make(kind, "numpy", False, True, timings={})
    assert R.permuted == (False, True) and R.timings == {}
    cls = PermutedKronecker if kind == "kron" else PermutedTT
    S = cls(_inner(kind, "numpy"), RP, CP, np.array([0.5, 0.25]), np.int64(1))
    assert S.errors == [0.5, 0.25] and all(type(e) is float for e in S.errors)
    assert S.n_iter == 1 and type(S.n_iter) is int


@pytest.mark.parametrize("kind", ["kron", "tt"])
@pytest.mark.parametrize(
    ("rp", "cp", "exc", "msg"),
    [
        (np.arange(3), CP, ValueError, r"row_perm must have shape \(4,\), got \(3,\)"),
        (RP, np.arange(7), ValueError, r"col_perm must have shape \(6,\), got \(7,\)"),
        (np.array([0, 0, 1, 2]), CP, ValueError,
         r"row_perm must be a permutation of range\(4\): it repeats entries"),
        (RP, np.array([0, 1, 2, 3, 4, 6]), ValueError,
         r"col_perm must be a permutation of range\(6\): entries out of range"),
        (RP.astype(float), CP, TypeError, r"row_perm must be an integer array, got dtype float64"),
        (RP, None, TypeError, r"col_perm must be an integer array of shape \(6,\), got None"),
    ],
)  # fmt: skip
def test_a_bad_permutation_is_named_in_the_whole_message(kind, rp, cp, exc, msg):
    cls = PermutedKronecker if kind == "kron" else PermutedTT
    with pytest.raises(exc, match=f"^{msg}$"):
        cls(_inner(kind, "numpy"), rp, cp, [0.0], 0)


@pytest.mark.parametrize(("rows", "cols"), COMBOS)
def test_operands_the_inner_rejects_reach_it_unpermuted_and_its_message_is_raised(rows, cols):
    """PermutedTT has no operand check of its own: a scalar or an operand of the wrong
    size is handed to the TT-matrix (no gather is tried), whose whole message is raised."""
    P, _, _ = _make("tt", "numpy", rows, cols)
    T = P._inner
    for X in (np.array(2.0), np.ones(5), np.ones((5, 2)), np.ones((2, 5, 2))):
        with pytest.raises(ValueError) as want:
            T @ X
        with pytest.raises(ValueError, match=f"^{_re(str(want.value))}$"):
            P @ X
    for X in (np.array(2.0), np.ones(5), np.ones((2, 5)), np.ones((4, 3))):
        with pytest.raises(ValueError) as want:
            X @ T
        with pytest.raises(ValueError, match=f"^{_re(str(want.value))}$"):
            X @ P


def _re(s: str) -> str:
    import re

    return re.escape(s)
