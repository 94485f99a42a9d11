"""tqla.two_sided stated whole against dense references (docs/methods.md, docs/auto.md).

* ``two_sided_whitened_svd``: Ŵ is the dense closed form (Lᵀ)⁺·[Lᵀ·W·R]_r·R⁺ with the damped
  weights P + damp·mean(diag P)·I and C + damp·mean(diag C)·I (any roots: Ŵ does not depend
  on the choice), s are the top singular values of Lᵀ·W·R, the error is ‖LᵀWR‖² − Σ s²,
  inputs of rank r are recovered exactly, a 1-D side is its diagonal, ``method`` reaches
  the solver, the result is in W's library and dtype.
* ``nearest_kron_weight``: P ⊗ C is the brute-force nearest Kronecker product of the dense
  operator Σ_j P_j ⊗ C_j (``kron_svd`` of the mn×mn matrix).
* ``two_sided_error_curve``: entry r is the actual summed error of the rank-r fit, for every
  r, for mixed 1-D/2-D terms and damping; non-increasing for its own weight.
* Argument checks with their whole messages.
Float64; tolerances of a few thousand ulps of the quantities' scale (eigendecompositions).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tqla.two_sided as two
from tqla import kron_svd
from tqla.two_sided import nearest_kron_weight, two_sided_error_curve, two_sided_whitened_svd

torch = pytest.importorskip("torch")

TOL = 1e-8
sizes = st.tuples(st.integers(1, 6), st.integers(1, 6))
seeds = st.integers(0, 2**20)


def _psd(n, rng, rank=None):
    k = n if rank is None else rank
    X = rng.standard_normal((max(k, 1), n)) * np.linspace(0.5, 2.0, n)
    if rank == 0:
        X = 0 * X
    return X.T @ X / max(n, 1)


def _dense(M):
    return np.diag(M) if M.ndim == 1 else M


def _damped(M, damp):
    D = _dense(np.asarray(M, dtype=np.float64))
    n = D.shape[0]
    if M.ndim == 1:
        d = np.clip(M, 0.0, None)
        return np.diag(d + damp * d.mean())
    return D + damp * np.trace(D) / n * np.eye(n)


def _root(M):
    """A root L with L·Lᵀ = M (M PSD): the symmetric one, through eigh."""
    return _roots(M)[0]


def _roots(M):
    """(L, L⁺): the symmetric root and its pseudo-inverse, eigenvalues below 1e-10 of the
    largest counted as zero (the test weights' eigenvalues are 0 or O(1))."""
    lam, Q = np.linalg.eigh((M + M.T) / 2)
    lam = np.clip(lam, 0.0, None)
    keep = lam > 1e-10 * max(lam.max(), 1e-300)
    root = np.sqrt(lam)
    inv = np.where(keep, 1 / np.where(keep, root, 1.0), 0.0)
    return (Q * root) @ Q.T, (Q * inv) @ Q.T


def _reference(W, P, C, r, damp):
    """The dense closed form: Ŵ, s, ‖LᵀWR‖²."""
    (L, Lp), (R, Rp) = _roots(_damped(P, damp)), _roots(_damped(C, damp))
    X = L.T @ W @ R
    U, s, Vh = np.linalg.svd(X)
    Xr = (U[:, :r] * s[:r]) @ Vh[:r]
    return Lp.T @ Xr @ Rp, s[:r], float(np.sum(X**2))


def _err(W, A, terms):
    E = W - A
    return float(sum(np.trace(E.T @ _dense(P) @ E @ _dense(C)) for P, C in terms))


def _weight(n, rng, kind):
    if kind == "diag":
        return rng.uniform(0.2, 2.0, n)
    return _psd(n, rng)


@given(mn=sizes, seed=seeds, kinds=st.sampled_from(["dd", "dD", "Dd", "DD"]), data=st.data())
@settings(max_examples=30)
def test_two_sided_whitened_svd_is_the_dense_closed_form(mn, seed, kinds, data):
    m, n = mn
    rng = np.random.default_rng(seed)
    r = data.draw(st.integers(1, min(m, n)), label="rank")
    damp = data.draw(st.sampled_from([0.0, 0.3]), label="damp")
    W = rng.standard_normal((m, n))
    P = _weight(m, rng, "diag" if kinds[0] == "d" else "dense")
    C = _weight(n, rng, "diag" if kinds[1] == "d" else "dense")
    U, s, Vh = two_sided_whitened_svd(W, P, C, r, damp=damp)
    assert U.shape == (m, r) and s.shape == (r,) and Vh.shape == (r, n)
    want, s_ref, total = _reference(W, P, C, r, damp)
    scale = float(np.max(s_ref)) + 1.0
    np.testing.assert_allclose(s, s_ref, rtol=0, atol=TOL * scale)
    assert np.all(np.diff(s) <= 0)
    full = np.linalg.svd(_root(_damped(P, damp)).T @ W @ _root(_damped(C, damp)), compute_uv=False)
    if r < min(m, n) and full[r - 1] - full[r] < 1e-6 * scale:
        return  # a tie at the cut: Ŵ is not unique
    got = (U * s) @ Vh
    wscale = float(np.abs(want).max()) + 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * wscale)
    # its error in the damped weights is ‖LᵀWR‖² − Σ s²
    terms = [(_damped(P, damp), _damped(C, damp))]
    assert _err(W, got, terms) == pytest.approx(total - float(np.sum(s**2)), abs=1e-7 * total)


@given(mn=sizes, seed=seeds, data=st.data())
@settings(max_examples=25)
@example(mn=(3, 4), seed=0, data=None).via("explicit: rank 2 of 3x4")
def test_two_sided_whitened_svd_recovers_inputs_of_the_rank(mn, seed, data):
    m, n = mn
    rng = np.random.default_rng(seed)
    r = data.draw(st.integers(1, min(m, n))) if data is not None else 2
    W = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    for P, C in (
        (_psd(m, rng), _psd(n, rng)),
        (rng.uniform(0.5, 2.0, m), _psd(n, rng)),
        (_psd(m, rng), rng.uniform(0.5, 2.0, n)),
    ):
        U, s, Vh = two_sided_whitened_svd(W, P, C, r)
        np.testing.assert_allclose((U * s) @ Vh, W, rtol=0, atol=1e-7 * (np.abs(W).max() + 1))


def test_a_diagonal_side_is_its_dense_diagonal_and_clipped():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 5))
    p, c = rng.uniform(0.5, 2.0, 4), rng.uniform(0.5, 2.0, 5)
    for damp in (0.0, 0.5):
        got = two_sided_whitened_svd(W, p, c, 2, damp=damp)
        dense = two_sided_whitened_svd(W, np.diag(p), np.diag(c), 2, damp=damp)
        for a, b in zip(got, dense):
            np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-10)
    # a zero entry of a diagonal weight: that row is not seen (its fitted row is zero)
    p0 = p.copy()
    p0[1] = 0.0
    U, s, Vh = two_sided_whitened_svd(W, p0, c, 3)
    np.testing.assert_array_equal(U[1], 0.0)
    want, _, _ = _reference(W, p0, c, 3, 0.0)
    np.testing.assert_allclose((U * s) @ Vh, want, atol=1e-9)


def test_damping_reaches_both_sides():
    """A singular row weight and a singular column weight: without damping the unseen row
    and column of Ŵ are zero; with damping each side is P + damp·mean(diag P)·I."""
    rng = np.random.default_rng(2)
    m, n = 4, 5
    W = rng.standard_normal((m, n))
    P, C = _psd(m, rng, rank=2), _psd(n, rng, rank=3)
    for damp in (0.0, 0.25, 1.0):
        U, s, Vh = two_sided_whitened_svd(W, P, C, 2, damp=damp)
        want, s_ref, _ = _reference(W, P, C, 2, damp)
        np.testing.assert_allclose(s, s_ref, atol=1e-9 * s_ref.max())
        np.testing.assert_allclose((U * s) @ Vh, want, atol=1e-8 * (np.abs(want).max() + 1))
    d0 = two_sided_whitened_svd(W, P, C, 2)  # damp defaults to 0
    d1 = two_sided_whitened_svd(W, P, C, 2, damp=0.0)
    for a, b in zip(d0, d1):
        np.testing.assert_array_equal(a, b)


def test_method_reaches_the_truncated_svd(monkeypatch):
    seen = []
    real = two.truncated_svd

    def spy(X, rank, *, method="auto", **kw):
        seen.append((X.shape, rank, method, X.dtype))
        return real(X, rank, method=method, **kw)

    monkeypatch.setattr(two, "truncated_svd", spy)
    W = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    two_sided_whitened_svd(W, np.ones(5), np.eye(4), 2)
    two_sided_whitened_svd(W, np.ones(5), np.eye(4), 3, method="gram")
    two_sided_whitened_svd(W, np.eye(5), np.ones(4), 1, method="full")
    assert seen == [
        ((5, 4), 2, "auto", np.float64),
        ((5, 4), 3, "gram", np.float64),
        ((5, 4), 1, "full", np.float64),
    ]
    seen.clear()
    two_sided_error_curve(W, np.ones(5), np.ones(4), [(np.ones(5), np.ones(4))])
    assert seen == [((5, 4), 4, "full", np.float64)]


def test_the_result_is_in_ws_library_and_dtype():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 3))
    P, C = _psd(4, rng), rng.uniform(0.5, 2.0, 3)
    ref = two_sided_whitened_svd(W, P, C, 2)
    for dt, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        out = two_sided_whitened_svd(torch.tensor(W, dtype=dt), torch.tensor(P), C, 2)
        for a, b in zip(out, ref):
            assert isinstance(a, torch.Tensor) and a.dtype == dt
            np.testing.assert_allclose(a.numpy(), b, rtol=tol, atol=tol)
    out32 = two_sided_whitened_svd(W.astype(np.float32), P, C, 2)
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in out32)


# --------------------------------------------------------------------------------------
# nearest_kron_weight
# --------------------------------------------------------------------------------------
def _brute_nearest(terms, m, n):
    T = sum(np.kron(_dense(P), _dense(C)) for P, C in terms)
    K = kron_svd(T, ((m, m), (n, n)), 1)
    return np.kron(np.asarray(K.A[0]), np.asarray(K.B[0])), T


@given(
    mn=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=seeds,
    kinds=st.lists(st.sampled_from(["dd", "dD", "Dd", "DD"]), min_size=1, max_size=3),
)
@settings(max_examples=30)
def test_nearest_kron_weight_is_the_brute_force_nearest_kronecker_product(mn, seed, kinds):
    m, n = mn
    rng = np.random.default_rng(seed)
    terms = [
        (
            _weight(m, rng, "diag" if k[0] == "d" else "dense"),
            _weight(n, rng, "diag" if k[1] == "d" else "dense"),
        )
        for k in kinds
    ]
    P, C = nearest_kron_weight(terms, m, n)
    assert isinstance(P, np.ndarray) and P.dtype == np.float64
    assert P.shape == ((m,) if all(k[0] == "d" for k in kinds) else (m, m))
    assert C.shape == ((n,) if all(k[1] == "d" for k in kinds) else (n, n))
    want, T = _brute_nearest(terms, m, n)
    # P = Σ α_j P_j is the unit left factor (u = X·α, ‖u‖ = 1), C carries the scale σ
    assert float(np.sqrt(np.sum(P**2))) == pytest.approx(1.0, rel=1e-9)
    got = np.kron(_dense(P), _dense(C))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(T).max())
    assert np.trace(_dense(P)) >= 0 and np.trace(_dense(C)) >= 0
    for M in (_dense(P), _dense(C)):
        assert np.linalg.eigvalsh((M + M.T) / 2).min() >= -1e-10 * (np.abs(M).max() + 1)


def test_nearest_kron_weight_of_one_term_is_it_and_of_zeros_is_zero():
    rng = np.random.default_rng(4)
    P0, C0 = _psd(3, rng), rng.uniform(0.5, 2, 2)
    P, C = nearest_kron_weight([(P0, C0)], 3, 2)
    np.testing.assert_allclose(np.kron(P, np.diag(C)), np.kron(P0, np.diag(C0)), atol=1e-12)
    # the scale sits on C: P = α·P₀ with ‖P‖ = ‖P₀‖/‖..‖ as the algorithm defines; the
    # product is what is defined, and both sides keep their library-independent float64
    for terms, shapes in (
        ([(np.zeros(3), np.zeros(2))], ((3,), (2,))),
        ([(np.zeros((3, 3)), np.ones(2))], ((3, 3), (2,))),
        ([(np.ones(3), np.zeros((2, 2)))], ((3,), (2, 2))),
        ([(np.zeros(3), np.ones(2)), (np.zeros((3, 3)), np.eye(2))], ((3, 3), (2, 2))),
    ):
        P, C = nearest_kron_weight(terms, 3, 2)
        assert (P.shape, C.shape) == shapes
        np.testing.assert_array_equal(P, 0.0)
        np.testing.assert_array_equal(C, 0.0)
    # negated weights: the common sign is chosen so that both traces are >= 0
    P, C = nearest_kron_weight([(-np.eye(2), -np.ones(2))], 2, 2)
    np.testing.assert_allclose(np.kron(P, np.diag(C)), np.eye(4), atol=1e-12)
    assert np.trace(P) > 0 and C.sum() > 0
    # torch weights are read as float64
    P, C = nearest_kron_weight([(torch.eye(2), torch.ones(3))], 2, 3)
    assert P.dtype == np.float64 and C.dtype == np.float64
    np.testing.assert_allclose(np.kron(P, np.diag(C)), np.eye(6), atol=1e-6)


@given(seed=seeds, kinds=st.sampled_from(["dd", "DD", "dD"]), scale=st.sampled_from([1.0, 1e-3]))
@settings(max_examples=15)
def test_nearest_kron_weight_of_dependent_terms_is_their_exact_sum(seed, kinds, scale):
    """Linearly dependent terms (a rank-deficient J×J Gram matrix): the dropped null
    directions must not blow up; Σ c_j·P ⊗ C = (Σ c_j)·P ⊗ C is its own nearest product."""
    rng = np.random.default_rng(seed)
    P0 = scale * _weight(3, rng, "diag" if kinds[0] == "d" else "dense")  # small: λ_max < 1
    C0 = _weight(2, rng, "diag" if kinds[1] == "d" else "dense")
    c = rng.uniform(0.5, 2.0, 3)
    terms = [(c[0] * P0, C0), (P0, c[1] * C0), (c[2] * P0, C0)]
    P, C = nearest_kron_weight(terms, 3, 2)
    want = c.sum() * np.kron(_dense(P0), _dense(C0))
    np.testing.assert_allclose(
        np.kron(_dense(P), _dense(C)), want, rtol=0, atol=1e-11 * np.abs(want).max()
    )


def test_nearest_kron_weight_projects_an_indefinite_answer_onto_the_psd_cone():
    """Σ_j P_j ⊗ C_j with a negative coefficient direction: the nearest product may be
    indefinite; the returned sides are clipped (diagonal: entries; dense: eigenvalues)."""
    terms = [(np.array([1.0, -1.0]), np.array([1.0, 1.0]))]
    P, C = nearest_kron_weight(terms, 2, 2)
    assert P.ndim == 1 and np.all(P >= 0) and P[1] == 0.0 and P[0] > 0
    # trace(P) = 0 exactly: the sign is then that of C (kept positive, small or not)
    for c in (0.1, 0.6, 3.0):
        P, C = nearest_kron_weight([(np.array([1.0, -1.0]), c * np.ones(2))], 2, 2)
        assert C.sum() > 0 and np.all(C >= 0)
        np.testing.assert_allclose(np.kron(np.diag(P), np.diag(C)), np.diag([c, c, 0, 0]))
        P, C = nearest_kron_weight([(np.diag([1.0, -1.0]), c * np.eye(2))], 2, 2)
        np.testing.assert_allclose(np.kron(P, C), np.diag([c, c, 0, 0]), atol=1e-12)
    terms = [(np.diag([1.0, -1.0]), np.eye(2))]
    P, C = nearest_kron_weight(terms, 2, 2)
    lam = np.linalg.eigvalsh(P)
    assert lam.min() >= -1e-12 and lam.max() > 0.5
    np.testing.assert_allclose(P[1, 1], 0.0, atol=1e-12)


# --------------------------------------------------------------------------------------
# two_sided_error_curve
# --------------------------------------------------------------------------------------
@given(
    mn=sizes,
    seed=seeds,
    fit=st.sampled_from(["dd", "dD", "Dd", "DD"]),
    kinds=st.lists(st.sampled_from(["dd", "dD", "Dd", "DD"]), min_size=1, max_size=3),
    damp=st.sampled_from([0.0, 0.2]),
)
@settings(max_examples=30)
def test_error_curve_is_the_actual_error_at_every_rank(mn, seed, fit, kinds, damp):
    m, n = mn
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))

    def side(k, size):
        return _weight(size, rng, "diag" if k == "d" else "dense")

    P, C = side(fit[0], m), side(fit[1], n)
    terms = [(side(k[0], m), side(k[1], n)) for k in kinds]
    curve = two_sided_error_curve(W, P, C, terms, damp=damp)
    K = min(m, n)
    assert isinstance(curve, np.ndarray) and curve.dtype == np.float64
    assert curve.shape == (K + 1,)
    assert np.all(curve >= 0)
    scale = _err(W, 0 * W, terms)
    assert curve[0] == pytest.approx(scale, rel=1e-10)
    for r in range(1, K + 1):
        U, s, Vh = two_sided_whitened_svd(W, P, C, r, damp=damp, method="full")
        want = _err(W, (U * s) @ Vh, terms)
        assert curve[r] == pytest.approx(want, rel=1e-7, abs=1e-9 * scale)
    top = int(rng.integers(0, K + 1))
    part = two_sided_error_curve(W, P, C, terms, damp=damp, max_rank=top)
    assert part.shape == (top + 1,)
    np.testing.assert_array_equal(part, curve[: top + 1])


@given(mn=sizes, seed=seeds, damp=st.sampled_from([0.0, 0.1]))
@settings(max_examples=20)
def test_error_curve_of_its_own_weight_is_nonincreasing_and_ends_at_zero(mn, seed, damp):
    m, n = mn
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    P, C = _psd(m, rng), rng.uniform(0.5, 2.0, n)
    curve = two_sided_error_curve(W, P, C, [(_damped(P, damp), _damped(C, damp))], damp=damp)
    assert np.all(np.diff(curve) <= 1e-9 * curve[0])
    assert curve[-1] <= 1e-9 * curve[0]
    # the decrease at rank r is s_r² (the closed form's error in its own weights)
    _, s, _ = two_sided_whitened_svd(W, P, C, min(m, n), damp=damp)
    np.testing.assert_allclose(-np.diff(curve), s**2, rtol=1e-7, atol=1e-9 * curve[0])


def test_error_curve_of_a_float32_matrix_is_computed_in_float64():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((5, 4)).astype(np.float32)
    P, C = _psd(5, rng), rng.uniform(0.5, 2.0, 4)
    terms = [(_psd(5, rng), _psd(4, rng))]
    want = two_sided_error_curve(W.astype(np.float64), P, C, terms)
    for X in (W, torch.tensor(W)):
        got = two_sided_error_curve(X, P, C, terms)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * want[0])


def test_error_curve_docstring_example_and_a_torch_input():
    W = np.diag([3.0, 2.0, 1.0])
    one = np.ones(3)
    np.testing.assert_allclose(
        two_sided_error_curve(W, one, one, [(one, one)]), [14.0, 5.0, 1.0, 0.0], atol=1e-12
    )
    got = two_sided_error_curve(torch.tensor(W, dtype=torch.float32), one, one, [(one, one)])
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, [14.0, 5.0, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(
        two_sided_error_curve(W, one, one, [(one, one)], max_rank=0), [14.0], atol=1e-12
    )


# --------------------------------------------------------------------------------------
# Argument checks (whole messages)
# --------------------------------------------------------------------------------------
def _raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message


def test_arguments_are_checked_with_their_whole_messages():
    W = np.ones((3, 4))
    one3, one4 = np.ones(3), np.ones(4)
    _raises(
        ValueError,
        "row_moment: row_moment must be the (cols × cols) = (3, 3) second moment of the "
        "inputs, "
        "got shape (2, 2)",
        two_sided_whitened_svd,
        W,
        np.eye(2),
        np.eye(4),
        1,
    )
    _raises(
        ValueError,
        "col_moment: col_moment must be the (cols × cols) = (4, 4) second moment of the "
        "inputs, "
        "got shape (3, 3)",
        two_sided_whitened_svd,
        W,
        np.eye(3),
        np.eye(3),
        1,
    )
    _raises(
        ValueError,
        "col_moment: C: a diagonal moment must have one entry per column of W (4), got shape (3,)",
        two_sided_whitened_svd,
        W,
        np.eye(3),
        one3,
        1,
    )
    _raises(
        ValueError,
        "row_moment: C: a diagonal moment must have one entry per column of W (3), got shape (4,)",
        two_sided_whitened_svd,
        W,
        one4,
        one4,
        1,
    )
    _raises(
        ValueError,
        "row_moment: C must be finite",
        two_sided_whitened_svd,
        W,
        np.array([1.0, np.inf, 1.0]),
        one4,
        1,
    )
    _raises(
        TypeError,
        "C must be a real array, got dtype bool",
        two_sided_whitened_svd,
        W,
        one3,
        np.ones(4, dtype=bool),
        1,
    )
    for bad in (-1.0, float("nan"), float("inf"), True, "0"):
        _raises(
            ValueError,
            f"damp must be a finite number >= 0, got {bad!r}",
            two_sided_whitened_svd,
            W,
            one3,
            one4,
            1,
            damp=bad,
        )
        _raises(
            ValueError,
            f"damp must be a finite number >= 0, got {bad!r}",
            two_sided_error_curve,
            W,
            one3,
            one4,
            [(one3, one4)],
            damp=bad,
        )
    _raises(
        ValueError,
        "terms must hold at least one (row_moment, col_moment) pair",
        nearest_kron_weight,
        [],
        3,
        4,
    )
    _raises(
        ValueError,
        "terms must hold at least one (row_moment, col_moment) pair",
        two_sided_error_curve,
        W,
        one3,
        one4,
        (),
    )
    for bad in ((one3,), (one3, one4, one4), one3, "ab"):
        _raises(
            ValueError,
            "terms[1] must be a (row_moment, col_moment) pair",
            nearest_kron_weight,
            [(one3, one4), bad],
            3,
            4,
        )
    nearest_kron_weight([[one3, one4]], 3, 4)  # a list pair is a pair
    _raises(
        ValueError,
        "terms[0] col weight must have shape (4,) or (4, 4), got (5,)",
        nearest_kron_weight,
        [(one3, np.ones(5))],
        3,
        4,
    )
    _raises(
        ValueError,
        "terms[1] row weight must have shape (3,) or (3, 3), got (3, 4)",
        nearest_kron_weight,
        [(one3, one4), (np.ones((3, 4)), one4)],
        3,
        4,
    )
    bad = one4.copy()
    bad[2] = np.inf
    _raises(
        ValueError, "terms[0] col weight must be finite", nearest_kron_weight, [(one3, bad)], 3, 4
    )
    _raises(
        ValueError,
        "terms[0] row weight must be finite",
        two_sided_error_curve,
        W,
        one3,
        one4,
        [(np.full(3, np.nan), one4)],
    )
    for top in (-1, 4, 5):
        _raises(
            ValueError,
            f"max_rank must be in [0, 3], got {top!r}",
            two_sided_error_curve,
            W,
            one3,
            one4,
            [(one3, one4)],
            max_rank=top,
        )
    assert two_sided_error_curve(W, one3, one4, [(one3, one4)], max_rank=3).shape == (4,)


def test_float32_weights_of_the_terms_are_read_in_float64():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((4, 3))
    t32 = [
        (_psd(4, rng).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)),
        (rng.uniform(0.5, 2, 4).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)),
        (rng.uniform(0.5, 2, 4).astype(np.float32), _psd(3, rng).astype(np.float32)),
    ]
    t64 = [(P.astype(np.float64), C.astype(np.float64)) for P, C in t32]
    tt = [(torch.tensor(P), torch.tensor(C)) for P, C in t32]
    want = nearest_kron_weight(t64, 4, 3)
    want_curve = two_sided_error_curve(W, np.ones(4), np.ones(3), t64)
    for terms in (t32, tt):
        got = nearest_kron_weight(terms, 4, 3)
        for a, b in zip(got, want):
            assert a.dtype == np.float64
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        curve = two_sided_error_curve(W, np.ones(4), np.ones(3), terms)
        np.testing.assert_allclose(curve, want_curve, rtol=1e-12, atol=1e-12 * want_curve[0])


def test_gram_factor_drops_eigenvalues_up_to_j_eps_of_the_largest():
    """Fᵀ·F = G on the eigenvalues above J·eps·λ_max (LAPACK's usual rank threshold), F⁺
    its pseudo-inverse; the others are dropped."""
    eps = float(np.finfo(np.float64).eps)
    for J, ratio, kept in ((2, 1.5, 1), (2, 2.5, 2), (3, 2.5, 2), (3, 3.5, 3)):
        lam = np.ones(J)
        lam[-1] = ratio * eps
        F, Finv = two._gram_factor(np.diag(lam))
        assert F.shape == (kept, J) and Finv.shape == (J, kept)
        np.testing.assert_allclose(F @ Finv, np.eye(kept), atol=1e-12)
    G = _psd(3, np.random.default_rng(0))
    F, Finv = two._gram_factor(G)
    np.testing.assert_allclose(F.T @ F, G, atol=1e-12)


def test_the_sign_is_decided_by_the_trace_of_p_not_its_sum():
    """P₀ = [[1, −2], [−2, 1]] has trace 2 but entry sum −2: the returned P keeps the sign
    with trace >= 0 and is then projected onto the PSD cone (its eigenvalue-3 part)."""
    P0 = np.array([[1.0, -2.0], [-2.0, 1.0]])
    v = np.array([1.0, -1.0]) / np.sqrt(2)
    for C0 in (np.eye(2), np.ones(2)):
        P, C = nearest_kron_weight([(P0, C0)], 2, 2)
        np.testing.assert_allclose(
            np.kron(P, _dense(C)), np.kron(3 * np.outer(v, v), np.eye(2)), atol=1e-12
        )


def test_when_c_is_negative_p_keeps_its_positive_trace():
    """Σ P_j ⊗ C_j = I ⊗ (−I): P (trace > 0) decides the sign; C's negative part is clipped."""
    for P0, C0 in ((np.eye(2), -np.eye(3)), (np.ones(2), -np.ones(3))):
        P, C = nearest_kron_weight([(P0, C0)], 2, 3)
        np.testing.assert_allclose(_dense(P), np.eye(2) / np.sqrt(2), atol=1e-12)
        np.testing.assert_array_equal(C, 0.0)


def test_w_is_named_in_the_errors_of_both_functions():
    one3, one4 = np.ones(3), np.ones(4)
    _raises(
        ValueError,
        "W must be 2-D, got 1-D array of shape (4,)",
        two_sided_whitened_svd,
        one4,
        one3,
        one4,
        1,
    )
    _raises(
        ValueError,
        "W must be 2-D, got 1-D array of shape (4,)",
        two_sided_error_curve,
        one4,
        one3,
        one4,
        [(one3, one4)],
    )
