"""The kernel table: every implementation of every kernel agrees, and lookups fail clearly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tqla._kernels as kernels
from tqla import KroneckerShape, kron_svd, rearrange, unrearrange
from tqla._kernels import available, get_kernel, resolve
from tqla.testing import assert_kron_close, kronecker_shapes, rounding_tolerance

numba = pytest.importorskip("numba")
torch = pytest.importorskip("torch")

KERNELS = ("rearranged_gram", "rearranged_matmul")

# Shapes that reach every code path of the Numba kernels: the specialised n2 ∈ {2, 4}
# right-side kernels, the generic de-interleaving ones, and the left side.
shapes = st.one_of(
    kronecker_shapes(max_side=6, max_dim=48),
    st.builds(
        lambda m1, n1, m2, n2: KroneckerShape((m1, n1), (m2, n2)),
        st.integers(1, 9),
        st.integers(1, 40),
        st.integers(1, 4),
        st.sampled_from([2, 4]),
    ),
)


def _reference(Wn: np.ndarray, s: KroneckerShape, side: str, V=None) -> np.ndarray:
    X = rearrange(Wn.astype(np.float64), s)
    if V is None:
        return X.T @ X if side == "right" else X @ X.T
    return X @ V if side == "right" else X.T @ V


def _implementations(W: np.ndarray):
    """(name, callable, converted W, back-to-NumPy) for every implementation and library."""
    out = []
    for impl in available("rearranged_gram"):
        out.append((impl, impl, W, np.asarray))
    tw = torch.from_numpy(W.copy())
    out.append(("array_api[torch]", "array_api", tw, lambda t: t.numpy()))
    return out


@given(
    s=shapes,
    side=st.sampled_from(["right", "left"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    r=st.integers(1, 6),
    vector=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_implementation_agrees(s, side, dtype, r, vector, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(s.matrix_shape).astype(dtype)
    q, p = s.rearranged_shape
    inner = p if side == "right" else q
    V = rng.standard_normal(inner if vector else (inner, r)).astype(dtype)
    G_ref = _reference(W, s, side)
    P_ref = _reference(W, s, side, V.astype(np.float64))
    # Entry-wise rounding bounds of sums of `n` products in the input dtype (the kernels
    # may sum in any order, and in float64 or the input dtype), plus the final rounding to
    # the output dtype: tolerances from the dtype and the sizes (issue 9, item 12).
    absW = np.abs(W.astype(np.float64))
    n = q if side == "right" else p  # terms of each Gram entry
    G_tol = rounding_tolerance(dtype, n, _reference(absW, s, side)) + rounding_tolerance(
        dtype, 1, np.abs(G_ref)
    )
    P_tol = rounding_tolerance(dtype, inner, _reference(absW, s, side, np.abs(V).astype(float)))
    P_tol = P_tol + rounding_tolerance(dtype, 1, np.abs(P_ref))
    for name, impl, Wb, back in _implementations(W):
        Vb = V if impl != "array_api" or isinstance(Wb, np.ndarray) else torch.from_numpy(V)
        G = back(get_kernel("rearranged_gram", impl, Wb)(Wb, s, side))
        P = back(get_kernel("rearranged_matmul", impl, Wb)(Wb, s, side, Vb))
        assert G.dtype == dtype and P.dtype == dtype, name
        assert G.shape == G_ref.shape and P.shape == P_ref.shape, name
        assert np.all(np.abs(G - G_ref) <= G_tol), name
        assert np.all(np.abs(P - P_ref) <= P_tol), name
        # a Gram matrix returned by tqla is symmetric: the kernels guarantee it exactly
        np.testing.assert_array_equal(G, G.T, err_msg=name)


def test_numba_kernels_read_any_layout():
    rng = np.random.default_rng(0)
    s = KroneckerShape((6, 5), (2, 4))
    W = np.asfortranarray(rng.standard_normal(s.matrix_shape))
    Wv = np.random.default_rng(1).standard_normal((24, 40))[::2, ::2]  # strided view
    for Wx in (W, Wv):
        G = get_kernel("rearranged_gram", "numba", Wx)(Wx, s, "right")
        np.testing.assert_allclose(G, _reference(np.asarray(Wx), s, "right"), rtol=1e-12)


def test_numba_matmul_result_transposes_to_contiguous():
    W = np.random.default_rng(0).standard_normal((768, 3072))
    s = KroneckerShape((384, 768), (2, 4))
    P = get_kernel("rearranged_matmul", "numba", W)(W, s, "right", np.ones((8, 4)))
    assert P.shape == (384 * 768, 4) and P.T.flags.c_contiguous


def test_numba_results_do_not_depend_on_the_thread_count(monkeypatch):
    from tqla._kernels import _numba

    W = np.random.default_rng(0).standard_normal((768, 3072))
    s = KroneckerShape((384, 768), (2, 4))
    V = np.random.default_rng(1).standard_normal((8, 4))
    results = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", threads)
        assert _numba.num_threads() <= int(threads)
        results.append(
            (_numba.rearranged_gram(W, s, "right"), _numba.rearranged_matmul(W, s, "right", V))
        )
    for G, P in results[1:]:
        np.testing.assert_array_equal(G, results[0][0])
        np.testing.assert_array_equal(P, results[0][1])


def test_numba_gram_propagates_nan_and_inf():
    W = np.ones((8, 12))
    s = KroneckerShape((4, 3), (2, 4))
    for bad in (np.nan, np.inf):
        Wb = W.copy()
        Wb[3, 5] = bad
        for side in ("right", "left"):
            G = get_kernel("rearranged_gram", "numba", Wb)(Wb, s, side)
            assert not np.all(np.isfinite(G))


@pytest.mark.parametrize("kernel", ["numpy", "numba", "array_api"])
@pytest.mark.parametrize("shape", [((40, 30), (2, 4)), ((3, 2), (10, 12)), ((9, 7), (3, 5))])
def test_kron_svd_is_the_same_with_every_kernel(kernel, shape):
    s = KroneckerShape.of(shape)
    W = np.random.default_rng(5).standard_normal(s.matrix_shape)
    ref = kron_svd(W, s, 2, method="full")
    K = kron_svd(W, s, 2, method="gram", kernel=kernel)
    assert_kron_close(K, ref, rtol=1e-8, atol=1e-12)


def test_auto_choices():
    W = np.ones((4, 4))
    for name in KERNELS:
        impl, fn = resolve(name, "auto", W)
        assert impl == "numba"  # measured fastest for NumPy input (docs/backends.md)
        assert get_kernel(name, "auto", W) is fn
        impl_t, _ = resolve(name, "auto", torch.ones(4, 4))
        assert impl_t == "array_api"
        assert set(available(name)) == {"numpy", "numba", "array_api"}


def test_get_kernel_errors():
    W = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"kernel must be 'auto' or one of .*got 'fortran'"):
        get_kernel("rearranged_gram", "fortran", W)
    with pytest.raises(ValueError, match=r"no kernel of operation 'no_such_kernel'"):
        get_kernel("no_such_kernel", "auto", W)
    with pytest.raises(ValueError, match=r"has no 'numpy' kernel; available: \[\]"):
        get_kernel("no_such_kernel", "numpy", W)
    for impl in ("numpy", "numba"):
        with pytest.raises(
            ValueError, match=rf"kernel='{impl}' works on NumPy arrays only, got torch"
        ):
            get_kernel("rearranged_gram", impl, torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"kernel='numba' works on NumPy arrays only"):
        kron_svd(
            torch.ones(4, 4, dtype=torch.float64), ((2, 2), (2, 2)), method="gram", kernel="numba"
        )
    with pytest.raises(ValueError, match="side must be 'right' or 'left'"):
        get_kernel("rearranged_gram", "numba", W)(W, KroneckerShape((2, 2), (2, 2)), "up")


def test_missing_numba_raises_an_import_error_naming_the_extra(monkeypatch):
    """Simulate an environment without Numba: the numba modules fail to import."""
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    for mod in ("tqla._kernels._numba", "tqla._kernels._numba_assignment"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(kernels, "_LOADED", {m for m in kernels._LOADED if "_numba" not in m})
    monkeypatch.setattr(kernels, "_MISSING", set())
    table = {
        name: {i: f for i, f in impls.items() if i != "numba"}
        for name, impls in kernels._TABLE.items()
    }
    monkeypatch.setattr(kernels, "_TABLE", table)
    W = np.random.default_rng(0).standard_normal((8, 12))
    with pytest.raises(ImportError, match=r"pip install 'tqla\[numba\]'"):
        get_kernel("rearranged_gram", "numba", W)
    assert "numba" not in available("rearranged_gram")
    # "auto" quietly uses the NumPy implementation instead
    impl, _ = resolve("rearranged_gram", "auto", W)
    assert impl == "numpy"
    K = kron_svd(W, ((4, 3), (2, 4)), 2)
    ref = kron_svd(W, ((4, 3), (2, 4)), 2, method="full")
    assert_kron_close(K, ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [((384, 768), (2, 4)), ((100, 30), (7, 3)), ((64, 1), (8, 128))])
def test_compiled_rearrange_copy_matches_numpy(dtype, shape):
    from tqla.kron import _rearrange_xp

    s = KroneckerShape.of(shape)
    W = np.random.default_rng(0).standard_normal(s.matrix_shape).astype(dtype)
    X = rearrange(W, s)
    np.testing.assert_array_equal(X, _rearrange_xp(np, W, s))
    assert X.dtype == dtype
    np.testing.assert_array_equal(unrearrange(X, s), W)
    impl, _ = resolve("rearrange", "auto", W)
    assert impl == "numba"


@pytest.mark.parametrize("shape", [((40, 30), (16, 20)), ((16, 20), (40, 30))])
def test_numba_kernels_on_a_large_small_side_use_blas(shape):
    """A side above _DIRECT_MAX_SIDE: rearranged copy + BLAS, same results."""
    from tqla._kernels import _numba

    s = KroneckerShape.of(shape)
    assert min(s.rearranged_shape) > _numba._DIRECT_MAX_SIDE
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    side = "right" if s.rearranged_shape[1] <= s.rearranged_shape[0] else "left"
    inner = min(s.rearranged_shape)
    V = np.random.default_rng(1).standard_normal((inner, 3))
    G = _numba.rearranged_gram(W, s, side)
    P = _numba.rearranged_matmul(W, s, side, V)
    np.testing.assert_allclose(G, _reference(W, s, side), rtol=1e-12)
    np.testing.assert_allclose(P, _reference(W, s, side, V), rtol=1e-10, atol=1e-10)
    assert P.T.flags.c_contiguous


def test_preference_table_is_explicit_and_followed():
    """Issue 8: the preference order is a table, not a side effect of imports."""
    assert kernels.KERNELS == ("numpy", "numba", "array_api")
    assert kernels.IMPLEMENTATIONS == kernels.KERNELS  # the former name, kept as an alias
    W = np.ones((4, 4))
    for name, order in kernels.NUMPY_PREFERENCE.items():
        installed = [k for k in order if k in available(name)]
        if installed:
            assert resolve(name, "auto", W)[0] == installed[0], name


def test_resolving_a_kernel_imports_only_its_topic():
    """A fresh interpreter resolving the Gram kernel never imports the assignment
    kernels, nor the Numba module when the NumPy kernel is asked for."""
    import subprocess

    code = (
        "import sys, numpy as np\n"
        "from tqla._kernels import resolve\n"
        "resolve('rearranged_gram', 'numpy', np.ones((2, 2)))\n"
        "print(sorted(m for m in sys.modules if m.startswith('tqla._kernels.')))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "['tqla._kernels._numpy']"
