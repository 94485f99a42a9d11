"""The public surface of tqla/permuted.py stated whole (issue 15, fifth pass): the result
class (every field, the repr, the transpose, operand checks with their whole messages),
the estimator wrapper, and every option check of :func:`permuted_kron` with its whole
message.  The algorithm itself: tests/test_properties_permuted_whole.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tqla import KroneckerShape, KroneckerSum, PermutedKronecker, permuted_kron
from tqla.permuted import PermutedKroneckerApprox


def _W(s: KroneckerShape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(s.matrix_shape)


def test_a_hand_built_result_states_every_field_its_repr_and_its_transpose():
    rng = np.random.default_rng(0)
    K = KroneckerSum(rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 3, 2)))
    rp, cp = np.array([5, 4, 3, 2, 1, 0]), np.array([1, 0, 2, 3, 4, 5])
    P = PermutedKronecker(
        K, rp, cp, [0.5, 0.25], 1, timings={"total": 1.0}, restart_errors=[0.3, 0.25]
    )
    assert P.kron is K and P.kshape == K.kshape and P.rank == 2 and P.dtype == K.dtype
    assert P.n_params == K.n_params and P.shape == (6, 6)
    assert P.errors == [0.5, 0.25] and P.error == 0.25 and P.n_iter == 1
    assert P.permuted == (True, True) and P.timings == {"total": 1.0}
    assert P.restart_errors == [0.3, 0.25]
    assert repr(P) == (
        "PermutedKronecker(shape=(6, 6), A=(2, 3), B=(3, 2), rank=2, "
        "permuted rows=True cols=True, error=0.25, n_iter=1)"
    )
    Q = PermutedKronecker(K, np.arange(6), cp, [1.0], 0, permuted=(False, True))
    assert repr(Q).endswith("permuted rows=False cols=True, error=1, n_iter=0)")
    assert Q.restart_errors == []
    T = P.T
    assert T.kron.kshape == K.kshape.T and T.permuted == (True, True)
    np.testing.assert_array_equal(T.row_perm, cp)
    np.testing.assert_array_equal(T.col_perm, rp)
    np.testing.assert_allclose(T.to_dense(), P.to_dense().T)
    assert T.errors == P.errors and T.timings == P.timings and T.restart_errors == [0.3, 0.25]
    with pytest.raises(TypeError, match=r"^kron must be a KroneckerSum, got ndarray$"):
        PermutedKronecker(np.eye(6), rp, cp, [0.0], 0)


def test_operands_of_the_wrong_size_are_rejected_with_the_whole_message():
    rng = np.random.default_rng(1)
    K = KroneckerSum(rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 2)))
    P = PermutedKronecker(K, np.array([3, 1, 0, 2]), np.array([5, 0, 1, 2, 3, 4]), [0.0], 0)
    D = P.to_dense()
    for X in (
        rng.standard_normal(6),
        rng.standard_normal((6, 2)),
        rng.standard_normal((2, 6, 3)),
        rng.standard_normal((3, 2, 6, 1)),
    ):
        np.testing.assert_allclose(P @ X, D @ X, atol=1e-12)
    for X in (rng.standard_normal(4), rng.standard_normal((3, 4)), rng.standard_normal((2, 5, 4))):
        np.testing.assert_allclose(X @ P, X @ D, atol=1e-12)
    for X in (np.ones(4), np.ones((4, 6)), np.ones((6, 4, 2))):
        msg = (
            rf"^approx @ X needs X with 6 rows \(shape \(4, 6\)\), "
            rf"got shape {re_shape(X.shape)}$"
        )
        with pytest.raises(ValueError, match=msg):
            P @ X
    for X in (np.ones(6), np.ones((4, 6)), np.ones((4, 6, 4))[:, :, :3]):
        msg = (
            rf"^X @ approx needs X with 4 columns \(shape \(4, 6\)\), "
            rf"got shape {re_shape(X.shape)}$"
        )
        with pytest.raises(ValueError, match=msg):
            X @ P
    with pytest.raises(ValueError, match=r"^X @ approx needs X with 4 columns"):
        np.array(1.0) @ P


def re_shape(shape) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_the_estimator_passes_its_shape_rank_and_options_and_exposes_the_result():
    s = KroneckerShape((4, 3), (3, 2))
    W = _W(s, 10)
    opts = {"rule": "assign", "permute": "rows", "n_iter": 2, "tol": 0.0}
    est = PermutedKroneckerApprox(((4, 3), (3, 2)), 2, **opts)
    assert est.shape == s and est.rank == 2 and est.kwargs == opts
    assert est.fit(W) is est
    ref = permuted_kron(W, s, 2, **opts)
    R = est.result_
    assert isinstance(R, PermutedKronecker) and R.rank == 2 and R.permuted == (True, False)
    assert est.errors_ == R.errors == ref.errors and est.n_iter_ == R.n_iter == ref.n_iter
    assert est.row_perm_ is R.row_perm and est.col_perm_ is R.col_perm
    np.testing.assert_array_equal(R.row_perm, ref.row_perm)
    np.testing.assert_allclose(est.transform(), ref.to_dense(), rtol=1e-12, atol=1e-12)
    assert PermutedKroneckerApprox(s).rank == 1


@pytest.mark.parametrize(
    ("kwargs", "exc", "msg"),
    [
        ({"rule": "greedy"}, ValueError,
         "rule must be one of ('slots', 'assign', 'slots+assign'), got 'greedy'"),
        ({"permute": "diag"}, ValueError,
         "permute must be one of ('both', 'rows', 'cols', 'none'), got 'diag'"),
        ({"n_iter": -1}, ValueError, "n_iter must be >= 0, got -1"),
        ({"n_iter": 2.5}, TypeError, "n_iter must be an integer, got float 2.5"),
        ({"n_restarts": 0}, ValueError, "n_restarts must be >= 1, got 0"),
        ({"n_restarts": "2"}, TypeError, "n_restarts must be an integer, got str '2'"),
        ({"tol": -1.0}, ValueError, "tol must be a number >= 0, got -1.0"),
        ({"tol": float("nan")}, ValueError, "tol must be a number >= 0, got nan"),
        ({"tol": "x"}, TypeError, "tol must be a number >= 0, got 'x'"),
        ({"tol": None}, TypeError, "tol must be a number >= 0, got None"),
        ({"solver": "magic"}, ValueError,
         "solver must be one of ('auto', 'scipy', 'lap', 'lapx', 'jv') or a tuple of them, "
         "got 'magic'"),
        ({"callback": 3}, TypeError, "callback must be callable, got int"),
        ({"rng": "seed"}, TypeError,
         "rng must be None, an int seed or a numpy.random.Generator, got str"),
        ({"max_cost_bytes": 0}, ValueError,
         "max_cost_bytes must be None or a positive whole number of bytes, got 0"),
        ({"max_cost_bytes": "1"}, TypeError,
         "max_cost_bytes must be None or a positive number of bytes, got str '1'"),
    ],
)  # fmt: skip
def test_every_bad_option_is_named_in_the_whole_message(kwargs, exc, msg):
    s = KroneckerShape((4, 3), (2, 2))
    with pytest.raises(exc, match=f"^{re.escape(msg)}$"):
        permuted_kron(_W(s), s, 1, **kwargs)
    ok = {"tol": 0.0, "n_iter": 0, "n_restarts": 1, "max_cost_bytes": 1}
    for k, v in ok.items():  # the edges of the rules are accepted
        if k in kwargs:
            permuted_kron(_W(s), s, 1, **{k: v, "permute": "none"})
