"""Tests of tqla.hetero: HeteroKroneckerSum and kron_hetero (greedy + back-fitting)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla
from tqla.kron import KroneckerShape, KroneckerSum, factor_shapes, kron_svd
from tqla.testing import (
    assert_hetero_consistent,
    assert_nonincreasing,
    assert_same_array_type,
    hetero_kronecker_sums,
)

SHAPES_12 = [f.shape for f in factor_shapes(12, 12)]
CANDS = [((3, 4), (4, 3)), ((2, 2), (6, 6)), ((6, 6), (2, 2)), ((4, 3), (3, 4))]


def _gauss(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@given(hetero_kronecker_sums(12, 12))
def test_hetero_products_transpose_params(H):
    assert_hetero_consistent(H)
    assert H.T.shape == (H.shape[1], H.shape[0])
    assert H.n_terms == sum(K.rank for K in H.terms)


@given(st.sampled_from(SHAPES_12), st.integers(1, 4), st.integers(0, 2**31))
def test_single_shape_equals_kron_svd(shape, rank, seed):
    rank = min(rank, shape.max_rank)
    W = _gauss(seed, (12, 12))
    H = tqla.kron_hetero(W, [shape], rank=rank)
    K = kron_svd(W, shape, rank)
    assert H.n_terms == rank and len(H.terms) == 1
    scale = np.linalg.norm(W)
    np.testing.assert_allclose(H.to_dense(), K.to_dense(), atol=1e-10 * scale)


@settings(max_examples=12)
@given(st.integers(0, 2**31), st.integers(40, 400), st.sampled_from(["fro", "spectral"]))
def test_budget_never_exceeded_and_monotone(seed, budget, norm):
    W = _gauss(seed, (12, 12))
    opts = {"p": (8.0, 32.0), "max_iter": 4}
    H = tqla.kron_hetero(W, CANDS, n_params=budget, norm=norm, spectral_options=opts)
    assert H.n_params <= budget
    assert_nonincreasing(H.errors, rtol=0)
    assert_nonincreasing(H.sweep_errors, rtol=0)  # back-fitting never increases the error
    assert H.sweep_errors[0] == pytest.approx(H.errors[-1], rel=1e-12)
    assert all(K.rank <= K.kshape.max_rank for K in H.terms)
    got = np.linalg.norm(W - H.to_dense(), "fro" if norm == "fro" else 2)
    assert H.error == pytest.approx(got, rel=1e-9)
    if norm == "spectral":
        assert H.spectral_error.upper >= got
        assert H.spectral_error.estimate == pytest.approx(got, rel=1e-9)
    else:
        assert H.spectral_error is None
    # no candidate still fits the remaining budget unless the greedy stopped for lack of gain
    cheapest = min(KroneckerShape.of(s).n_params(1) for s in CANDS)
    assert H.n_params + cheapest > budget or len(H.order) == len(H.errors) - 1


def test_backfitting_improves_frobenius():
    W = _gauss(0, (12, 12))  # the greedy mixes two shapes here
    H = tqla.kron_hetero(W, CANDS, n_params=120, n_sweeps=5)
    assert H.sweep_errors[-1] < H.sweep_errors[0]
    H0 = tqla.kron_hetero(W, CANDS, n_params=120, n_sweeps=0)
    assert len(H0.sweep_errors) == 1 and H0.error == H.sweep_errors[0]


def test_greedy_prefers_cheap_shape_for_its_structure():
    """A planted low-cost term of one shape is found first."""
    rng = np.random.default_rng(0)
    W = np.kron(rng.standard_normal((2, 2)), rng.standard_normal((6, 6)))
    W += 1e-3 * rng.standard_normal((12, 12))
    H = tqla.kron_hetero(W, CANDS, rank=1)
    assert H.order[0] == KroneckerShape((2, 2), (6, 6))


def test_rank_limits_terms():
    W = _gauss(2, (12, 12))
    H = tqla.kron_hetero(W, CANDS, rank=3)
    assert H.n_terms == 3 and len(H.errors) == 4


def test_backends_agree(backend):
    W = _gauss(3, (12, 12))
    ref = tqla.kron_hetero(W, CANDS, n_params=200)
    Wb = backend.asarray(W)
    H = tqla.kron_hetero(Wb, CANDS, n_params=200)
    assert_same_array_type(H.terms[0].A, Wb)
    assert [K.kshape for K in H.terms] == [K.kshape for K in ref.terms]
    np.testing.assert_allclose(backend.to_numpy(H.to_dense()), ref.to_dense(), atol=1e-9)


def test_estimator_and_operator():
    W = _gauss(0, (8, 8))
    est = tqla.HeteroKroneckerApprox([((2, 2), (4, 4)), ((4, 4), (2, 2))], rank=3).fit(W)
    assert est.result_.n_terms == 3 and est.n_params_ == est.result_.n_params
    assert est.transform().shape == (8, 8)
    e = tqla.spectral_norm(tqla.residual(W, est.result_), method="lanczos", rng=0)
    assert e.upper >= np.linalg.norm(W - est.transform(), 2)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ([], {"rank": 2}, ValueError, "at least one candidate"),
        (CANDS, {"n_params": 10}, ValueError, "n_params must be >= 24"),
        (CANDS, {}, ValueError, "give n_params"),
        (CANDS, {"rank": 0}, ValueError, "rank must be >= 1"),
        (CANDS, {"rank": 2, "norm": "nuclear"}, ValueError, "norm must be"),
        ([((3, 3), (3, 3))], {"rank": 1}, ValueError, "does not match the Kronecker shape"),
        (CANDS, {"rank": 1, "tol": -1.0}, ValueError, "tol must be"),
    ],
)
def test_bad_input(args, kwargs, exc, match):
    W = _gauss(0, (12, 12))
    with pytest.raises(exc, match=match):
        tqla.kron_hetero(W, args, **kwargs)


def test_bad_input_matrix_and_terms():
    bad = _gauss(0, (12, 12))
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        tqla.kron_hetero(bad, CANDS, rank=1)
    with pytest.raises(ValueError, match="at least one KroneckerSum"):
        tqla.HeteroKroneckerSum([])
    K1 = kron_svd(_gauss(0, (12, 12)), CANDS[0], 1)
    K2 = kron_svd(_gauss(0, (6, 6)), ((2, 3), (3, 2)), 1)
    with pytest.raises(ValueError, match="matrix shape"):
        tqla.HeteroKroneckerSum([K1, K2])
    with pytest.raises(TypeError, match="must be a KroneckerSum"):
        tqla.HeteroKroneckerSum([np.eye(3)])


def test_zero_matrix():
    H = tqla.kron_hetero(np.zeros((12, 12)), CANDS, rank=2)
    assert H.error == 0.0 and isinstance(H.terms[0], KroneckerSum)
