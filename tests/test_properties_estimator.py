"""The estimator-style wrappers (tqla._estimator): fit_transform = fit then transform =
the fitted result's dense matrix, and the constructor's arguments reach the fitting
function (third mutation pass, benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

import numpy as np
import pytest

import tqla
from tqla.kron import KroneckerShape

W = np.random.default_rng(0).standard_normal((8, 6))
SHAPE = ((4, 3), (2, 2))


@pytest.mark.parametrize(
    "make",
    [
        lambda: tqla.PermutedKroneckerApprox(SHAPE, rank=2, n_iter=2, rng=0),
        lambda: tqla.SpectralKroneckerApprox(SHAPE, rank=2, p=(8.0,), max_iter=2, rng=0),
        lambda: tqla.HeteroKroneckerApprox([SHAPE, ((2, 3), (4, 2))], rank=2),
    ],
)
def test_fit_transform_is_the_fitted_results_dense_matrix(make):
    est = make()
    D = est.fit_transform(W)
    np.testing.assert_array_equal(D, est.result_.to_dense())
    np.testing.assert_array_equal(est.transform(), D)
    again = make().fit(W)  # deterministic: the same fit from a fresh estimator
    np.testing.assert_array_equal(again.transform(), D)


def test_kron_estimators_take_the_shape_the_rank_and_the_options():
    est = tqla.PermutedKroneckerApprox(SHAPE, n_iter=1, permute="rows")
    assert est.shape == KroneckerShape.of(SHAPE) and est.rank == 1
    assert est.kwargs == {"n_iter": 1, "permute": "rows"}
    est.fit(W)
    assert est.result_.rank == 1 and est.result_.permuted == (True, False)
    est = tqla.SpectralKroneckerApprox(KroneckerShape.of(SHAPE), 3, p=(8.0,), max_iter=1)
    assert est.rank == 3 and est.fit(W).result_.rank == 3
