"""Array type in = array type out, and every backend computes what NumPy computes.

Runs over the ``backend`` fixture (NumPy, array_api_strict, torch CPU; torch CUDA and CuPy
when a GPU is present).  Factors of :func:`tqla.kron_svd` are compared term by term with
NumPy's: the sign convention makes them unique when the singular values of R(W) are
distinct, which the tests ``assume``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tqla import KroneckerShape, KroneckerSum, kron_svd, rearrange, unrearrange
from tqla.kron import kron_singular_values
from tqla.testing import (
    assert_kron_close,
    assert_same_array_type,
    assert_same_result_across_backends,
    kronecker_shapes,
    matrices,
)

with_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)

DTYPES = [np.float32, np.float64]


def _gap_ok(W: np.ndarray, s: KroneckerShape, rank: int, gap: float) -> bool:
    """Distinct, non-negligible leading singular values of R(W) (factors are unique)."""
    sigma = np.linalg.svd(rearrange(W.astype(np.float64), s), compute_uv=False)
    top = sigma[: rank + 1] if rank < sigma.size else np.append(sigma[:rank], 0.0)
    if sigma[0] == 0 or top[rank - 1] < 1e-3 * sigma[0]:
        return False
    return bool(np.all(-np.diff(top) > gap * sigma[0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["gram", "full", "randomized"])
def test_outputs_have_the_input_library_device_and_dtype(backend, dtype, method):
    rng = np.random.default_rng(0)
    s = KroneckerShape((3, 4), (2, 5))
    W = backend.asarray(rng.standard_normal(s.matrix_shape), dtype=dtype)
    K = kron_svd(W, s, 2, method=method, rng=0)
    assert_same_array_type(K, W)
    assert K.dtype == W.dtype
    assert_same_array_type(rearrange(W, s), W)
    assert_same_array_type(unrearrange(rearrange(W, s), s), W)
    assert_same_array_type(K.to_dense(), W)
    assert_same_array_type(K.rearranged(), W)
    assert_same_array_type(kron_singular_values(W, s), W)
    x = backend.asarray(rng.standard_normal((s.matrix_shape[1], 3)), dtype=dtype)
    y = backend.asarray(rng.standard_normal((2, s.matrix_shape[0])), dtype=dtype)
    assert_same_array_type(K @ x, W)
    assert_same_array_type(K.rmatmat(y), W)
    assert_same_array_type(K.T.to_dense(), W)


@with_fixture
@given(
    data=kronecker_shapes(max_side=5, max_dim=25).flatmap(
        lambda s: st.tuples(st.just(s), matrices(s, gaussian=True))
    ),
    rank=st.integers(1, 3),
    method=st.sampled_from(["gram", "full", "randomized"]),
)
def test_kron_svd_factors_match_numpy(backend, data, rank, method):
    s, W = data
    rank = min(rank, s.max_rank)
    assume(_gap_ok(W, s, rank, 1e-3))
    ref = kron_svd(W, s, rank, method=method, rng=3)
    K = kron_svd(backend.asarray(W), s, rank, method=method, rng=3)
    assert_kron_close(K, ref, rtol=1e-6, atol=1e-12)


@with_fixture
@given(
    data=kronecker_shapes(max_side=5, max_dim=25).flatmap(
        lambda s: st.tuples(st.just(s), matrices(s, gaussian=True, dtype="float32"))
    ),
    rank=st.integers(1, 3),
)
def test_kron_svd_float32_matches_numpy_float64(backend, data, rank):
    s, W = data
    rank = min(rank, s.max_rank)
    assume(_gap_ok(W, s, rank, 3e-2))
    ref = kron_svd(W.astype(np.float64), s, rank)
    K = kron_svd(backend.asarray(W), s, rank)
    assert K.dtype == backend.dtype(np.float32)
    assert_kron_close(K, ref, rtol=1e-2, atol=1e-5)


def test_same_result_across_backends_helper(backend):
    """The public helper, run on the backend at hand."""
    W = np.random.default_rng(1).standard_normal((12, 20))
    dev = backend.device if backend.name.startswith("torch") else None
    assert_same_result_across_backends(
        lambda w: kron_svd(w, ((3, 4), (4, 5)), 2), [W], [(backend.xp, dev)], rtol=1e-8
    )


def test_products_keep_type_and_agree(backend):
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 2, 3))
    K_np = KroneckerSum(A, B)
    K = KroneckerSum(backend.asarray(A), backend.asarray(B))
    X = rng.standard_normal((4, 15, 2))
    out = K @ backend.asarray(X)
    assert_same_array_type(out, K.A)
    np.testing.assert_allclose(backend.to_numpy(out), K_np @ X, rtol=1e-12)


def test_randomized_route_is_reproducible_across_backends(backend):
    """The random test matrix is drawn on the host from ``rng``, then moved: same draws."""
    W = np.random.default_rng(4).standard_normal((64, 64))
    s = ((8, 8), (8, 8))
    ref = kron_svd(W, s, 2, method="randomized", rng=11)
    K = kron_svd(backend.asarray(W), s, 2, method="randomized", rng=11)
    assert_kron_close(K, ref, rtol=1e-6, atol=1e-12)


def test_gpu_inputs_stay_on_the_gpu(gpu_backend):
    W = gpu_backend.asarray(np.random.default_rng(0).standard_normal((768, 3072)))
    K = kron_svd(W, ((384, 768), (2, 4)), 4)
    assert_same_array_type(K, W)
