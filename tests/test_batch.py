"""permuted_kron_many: the library's parallelism over matrices (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from tqla import KroneckerShape, permuted_kron, permuted_kron_many


def _mats(n: int = 5):
    rng = np.random.default_rng(0)
    shapes = [((8, 6), (4, 2)), ((6, 8), (2, 4))] * n
    return [rng.standard_normal(KroneckerShape.of(s).matrix_shape) for s in shapes[:n]], shapes[:n]


@pytest.mark.parametrize("n_jobs", [1, 2, 3, None])
def test_equals_one_call_per_matrix(n_jobs):
    Ws, shapes = _mats()
    ranks = [1, 2, 1, 2, 1]
    out = permuted_kron_many(Ws, shapes, ranks, n_jobs=n_jobs, n_iter=3, rng=0)
    assert len(out) == len(Ws)
    for W, s, r, P in zip(Ws, shapes, ranks, out):
        ref = permuted_kron(W, s, r, n_iter=3, rng=0)
        # the same code path on the same data: the same permutations, errors to rounding
        np.testing.assert_array_equal(P.row_perm, ref.row_perm)
        np.testing.assert_array_equal(P.col_perm, ref.col_perm)
        np.testing.assert_allclose(P.errors, ref.errors, rtol=1e-12)
        assert P.kshape == KroneckerShape.of(s) and P.rank == r


def test_one_shape_and_rank_for_all_and_kwargs_pass_through():
    Ws = [np.random.default_rng(i).standard_normal((16, 12)) for i in range(3)]
    out = permuted_kron_many(Ws, ((4, 3), (4, 4)), 2, n_jobs=2, permute="rows", n_iter=2)
    assert all(P.permuted == (True, False) and P.rank == 2 for P in out)
    assert all(len(P.errors) <= 3 for P in out)


def test_bad_arguments_are_named():
    Ws, shapes = _mats(2)
    with pytest.raises(TypeError, match="Ws must be a sequence"):
        permuted_kron_many(np.zeros((2, 8, 6)), shapes[0])
    with pytest.raises(ValueError, match=r"shapes must be one value or one per matrix \(2\)"):
        permuted_kron_many(Ws, shapes * 2)
    with pytest.raises(ValueError, match=r"rank must be one value or one per matrix \(2\)"):
        permuted_kron_many(Ws, shapes, [1, 1, 1])
    with pytest.raises(TypeError, match="rng must be None or an int seed"):
        permuted_kron_many(Ws, shapes, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_jobs"):
        permuted_kron_many(Ws, shapes, n_jobs=-1)
    assert permuted_kron_many([], shapes[0]) == []
