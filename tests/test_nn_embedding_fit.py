"""The embedding's Gram-matrix route of permuted_kron (tqla_torch/nn/_embedding_fit.py):
the same iterations as tqla.permuted_kron, so the same permutation and error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tqla.permuted import permuted_kron
from tqla_torch.nn import KroneckerEmbedding
from tqla_torch.nn._embedding_fit import column_gram, gram_column_fit
from tqla_torch.nn.base import relative_error
from tqla_torch.nn.kronecker import kron_decompose
from tqla.kron import KroneckerShape


def _table(seed: int, V: int, d: int, k: int, planted: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not planted:
        return rng.standard_normal((V, d))
    A, b = rng.standard_normal((V, d // k)), rng.standard_normal((1, k))
    return np.kron(A, b)[:, rng.permutation(d)] + 1e-2 * rng.standard_normal((V, d))


@given(
    seed=st.integers(0, 2**16),
    V=st.integers(3, 60),
    groups=st.integers(2, 8),
    k=st.sampled_from([2, 3, 4]),
    rank=st.integers(1, 3),
    n_restarts=st.integers(1, 3),
    rule=st.sampled_from(["slots+assign", "slots", "assign"]),
    planted=st.booleans(),
)
def test_same_permutation_and_errors_as_permuted_kron(
    seed, V, groups, k, rank, n_restarts, rule, planted
):
    """Same steps, same LSAPs, same restarts: the same col_perm and error history."""
    rank = min(rank, k - 1)  # rank = k fits exactly: every permutation is optimal
    d = groups * k
    W = _table(seed, V, d, k, planted)
    P = permuted_kron(
        W, ((V, groups), (1, k)), rank, permute="cols", rule=rule, n_iter=6,
        n_restarts=n_restarts, rng=np.random.default_rng(seed),
    )  # fmt: skip
    perm, errors = gram_column_fit(
        torch.from_numpy(W), k, rank, rule=rule, n_iter=6, n_restarts=n_restarts, seed=seed
    )
    tol = 1e3 * np.finfo(np.float64).eps * max(1.0, V * d) ** 0.5
    assert errors[-1] == pytest.approx(P.errors[-1], rel=tol, abs=tol)
    if n_restarts == 1:  # restarts may tie to rounding (swapping two groups is a symmetry)
        assert np.array_equal(perm, P.col_perm)
        np.testing.assert_allclose(errors, P.errors, rtol=tol, atol=tol)
    assert all(b <= a for a, b in zip(errors, errors[1:]))  # the guard: never increases


def test_planted_structure_is_recovered():
    """A scrambled rank-1 table V×(d/k) ⊗ 1×k comes back exactly (restarts help)."""
    rng = np.random.default_rng(3)
    V, d, k = 40, 12, 2
    A, b = rng.standard_normal((V, d // k)), rng.standard_normal((1, k))
    W = np.kron(A, b)[:, rng.permutation(d)]
    perm, errors = gram_column_fit(torch.from_numpy(W), k, n_restarts=6, seed=0)
    assert errors[-1] < 1e-6
    U = W[:, np.argsort(perm)]  # K's column order
    R = U.reshape(V, d // k, k).reshape(-1, k)
    assert np.linalg.matrix_rank(R, tol=1e-8 * np.linalg.norm(R)) == 1


def test_column_gram_matches_the_product():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10_000, 6, generator=g)  # several row blocks
    G = column_gram(W)
    ref = (W.double().T @ W.double()).numpy()
    np.testing.assert_allclose(G, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_from_embedding_agrees_with_the_core_route():
    """KroneckerEmbedding.from_embedding (Gram route) against kron_decompose (tqla.permuted_kron)
    on a float32 table: the same permutation, and the reported error is the table's."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(500, 16)
    ke = KroneckerEmbedding.from_embedding(emb, 2, seed=0)
    shape = KroneckerShape((500, 8), (1, 2))
    A, B, _, cp, err = kron_decompose(
        emb.weight, shape, 1, method="permuted_kron", permute="cols", seed=0
    )
    assert torch.equal(ke.col_perm_0, cp)
    exact = relative_error(ke.to_dense(), emb.weight)
    eps = torch.finfo(torch.float32).eps
    assert abs(ke.approximation_error - exact) <= 50 * eps * exact
    assert abs(err - exact) <= 1e-3 * exact
    ref = torch.kron(A[0], B[0])[:, cp]
    torch.testing.assert_close(ke.to_dense(), ref, rtol=0, atol=50 * eps * float(ref.abs().max()))


def test_small_error_is_measured_on_the_table():
    """Near-exact tables take the direct error (the Gram identity would cancel)."""
    rng = np.random.default_rng(1)
    A, b = rng.standard_normal((30, 4)), rng.standard_normal((1, 2))
    W = np.kron(A, b) + 1e-7 * rng.standard_normal((30, 8))
    _, errors = gram_column_fit(torch.from_numpy(W), 2, n_iter=2)
    exact = np.linalg.norm(W - np.kron(*_best_rank1(W))) / np.linalg.norm(W)
    assert errors[0] == pytest.approx(exact, rel=1e-6)


def _best_rank1(W):
    R = W.reshape(W.shape[0], -1, 2).reshape(-1, 2)
    u, s, vt = np.linalg.svd(R, full_matrices=False)
    A = (u[:, 0] * s[0]).reshape(W.shape[0], -1)
    return A, vt[:1]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"k": 1}, "k = 1"),
        ({"k": 3}, "divide"),
        ({"k": 8}, "leave"),
        ({"k": 2, "rank": 3}, "rank"),
        ({"k": 2, "rule": "bogus"}, "rule"),
    ],
)
def test_bad_arguments_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        gram_column_fit(torch.zeros(4, 8), **kw)
