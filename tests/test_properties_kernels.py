"""Partial tiles, segments and chunks of the compiled kernels, on every run.

The Numba kernels of ``tqla/_kernels/_numba.py`` walk W in tiles whose sizes are set by
constants of that module:

* side="right", generic n2: tiles of ``_TILE_ENTRIES // (m2·n2)`` block-columns;
* side="right", n2 ∈ {2, 4} (specialised): tiles of ``_SPEC_TILE`` = 2048 block-columns,
  and X·V four columns of V per pass;
* side="left": segments of ``_SEG`` = 2048 entries of n2;
* every kernel: tasks cut into at most ``_MAX_CHUNKS`` = 16 chunks, threads from
  ``_MIN_PARALLEL`` = 65536 entries of W on.

Hypothesis' strategies stay small, so the explicit ``@example``s below fix shapes with
several tiles and a remainder (and several 4-column groups of V plus a remainder), and
non-square factors (m1 > n1, m2 ≠ n2), for every kernel; they run on every test run.
The references are plain NumPy reshapes and products, independent of the kernels.
Checked to fail when the last partial tile / segment / V group is dropped.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tqla import KroneckerShape, kron_svd
from tqla._kernels import available, get_kernel
from tqla.assignment import slots_cost

numba = pytest.importorskip("numba")
_nb = pytest.importorskip("tqla._kernels._numba")

KS = KroneckerShape


def _R(W: np.ndarray, s: KroneckerShape) -> np.ndarray:
    """R(W) in float64 by reshapes only."""
    W = np.asarray(W, dtype=np.float64)
    return W.reshape(s.m1, s.m2, s.n1, s.n2).transpose(0, 2, 1, 3).reshape(s.rearranged_shape)


def _Rinv(X: np.ndarray, s: KroneckerShape) -> np.ndarray:
    X = np.asarray(X)
    return X.reshape(s.m1, s.n1, s.m2, s.n2).transpose(0, 2, 1, 3).reshape(s.matrix_shape)


def _tol(dtype) -> float:
    return 1e-11 if dtype == np.float64 else 3e-5


def _close(got, ref, dtype, scale_len: int, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), 1.0)
    atol = _tol(dtype) * scale * max(1.0, np.sqrt(scale_len))
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol, err_msg=what)


small_shapes = st.builds(
    lambda m1, n1, m2, n2: KS((m1, n1), (m2, n2)),
    st.integers(1, 9),
    st.integers(1, 40),
    st.integers(1, 5),
    st.integers(1, 6),
)

# (shape, side, r): several tiles + a remainder, and non-square factors, per code path.
TILED = [
    (KS((2, 553), (3, 5)), "right", 3),  # generic: tile 4096//15 = 273 → 273, 273, 7
    (KS((36, 35), (15, 17)), "right", 2),  # generic: tile 4096//255 = 16 → 16, 16, 3; m1 > n1
    (KS((2, 4101), (3, 2)), "right", 6),  # n2 = 2: tile 2048 → 2048, 2048, 5; V 4 + 2
    (KS((2, 4101), (3, 4)), "right", 5),  # n2 = 4, threads (98k entries); V 4 + 1
    (KS((7, 3), (3, 2)), "right", 7),  # m1 > n1, m2 ≠ n2, n2 = 2
    (KS((9, 2), (5, 4)), "right", 6),  # m1 > n1, m2 ≠ n2, n2 = 4
    (KS((5, 3), (2, 4099)), "left", 3),  # seg 2048 → 2048, 2048, 3; q = 15 odd; m1 > n1
    (KS((3, 2), (5, 4099)), "left", 2),  # threads (123k entries), m2 ≠ n2
    (KS((37, 3), (5, 3)), "right", 4),  # 37 tasks in 16 chunks; q = 111 > p (odd p)
    (KS((37, 3), (2, 3)), "left", 3),  # q = 111 odd, 2 tasks
    (KS((3, 2), (37, 3)), "left", 2),  # 37 tasks in 16 chunks: a chunk sums several tasks
]


def _products(W, s, side, r, seed):
    rng = np.random.default_rng(seed)
    q, p = s.rearranged_shape
    inner = p if side == "right" else q
    V = rng.standard_normal((inner, r))
    X = _R(W, s)
    G = X.T @ X if side == "right" else X @ X.T
    P = X @ V if side == "right" else X.T @ V
    return V, G, P


def _check_gram_and_matmul(s, side, r, dtype, seed):
    W = np.random.default_rng(seed).standard_normal(s.matrix_shape).astype(dtype)
    V, G_ref, P_ref = _products(W, s, side, r, seed + 1)
    inner = V.shape[0]
    L = s.rearranged_shape[0 if side == "right" else 1]
    for impl in available("rearranged_gram"):
        G = get_kernel("rearranged_gram", impl, W)(W, s, side)
        _close(G, G_ref, dtype, L, f"{impl} gram {s} {side}")
        P = get_kernel("rearranged_matmul", impl, W)(W, s, side, V.astype(dtype))
        _close(P, P_ref, dtype, inner, f"{impl} matmul {s} {side} r={r}")
        # one column of V at a time: the same as the matching column of the full product
        p1 = get_kernel("rearranged_matmul", impl, W)(W, s, side, V[:, -1].astype(dtype))
        _close(p1, P_ref[:, -1], dtype, inner, f"{impl} matvec {s} {side}")


@given(
    s=small_shapes,
    side=st.sampled_from(["right", "left"]),
    r=st.integers(1, 9),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
@example(s=TILED[0][0], side=TILED[0][1], r=TILED[0][2], dtype=np.float64, seed=0)
@example(s=TILED[1][0], side=TILED[1][1], r=TILED[1][2], dtype=np.float64, seed=1)
@example(s=TILED[2][0], side=TILED[2][1], r=TILED[2][2], dtype=np.float64, seed=2)
@example(s=TILED[3][0], side=TILED[3][1], r=TILED[3][2], dtype=np.float32, seed=3)
@example(s=TILED[4][0], side=TILED[4][1], r=TILED[4][2], dtype=np.float64, seed=4)
@example(s=TILED[5][0], side=TILED[5][1], r=TILED[5][2], dtype=np.float64, seed=5)
@example(s=TILED[6][0], side=TILED[6][1], r=TILED[6][2], dtype=np.float64, seed=6)
@example(s=TILED[7][0], side=TILED[7][1], r=TILED[7][2], dtype=np.float32, seed=7)
@example(s=TILED[8][0], side=TILED[8][1], r=TILED[8][2], dtype=np.float64, seed=8)
@example(s=TILED[9][0], side=TILED[9][1], r=TILED[9][2], dtype=np.float64, seed=9)
@example(s=TILED[10][0], side=TILED[10][1], r=TILED[10][2], dtype=np.float64, seed=10)
def test_gram_and_matmul_kernels_cover_partial_tiles(s, side, r, dtype, seed):
    _check_gram_and_matmul(s, side, r, dtype, seed)


def test_tiled_examples_really_have_several_tiles_and_a_remainder():
    """Guards the examples above against a change of the tile constants."""
    for s, _side, r in TILED[:4]:
        if s.n2 in _nb._SPECIALISED_N2:
            tile = min(s.n1, _nb._SPEC_TILE)
            assert r % 4 and r > 4, (s, r)
        else:
            tile = max(1, min(s.n1, _nb._TILE_ENTRIES // (s.m2 * s.n2)))
        assert s.n1 // tile >= 2 and s.n1 % tile, (s, tile)
        assert s.m2 * s.n2 <= _nb._DIRECT_MAX_SIDE
    for s, _side, _r in TILED[6:8]:
        seg = min(s.n2, _nb._SEG)
        assert s.n2 // seg >= 2 and s.n2 % seg and s.m1 * s.n1 <= _nb._DIRECT_MAX_SIDE
    assert TILED[3][0].matrix_shape[0] * TILED[3][0].matrix_shape[1] >= _nb._MIN_PARALLEL
    assert TILED[8][0].m1 > _nb._MAX_CHUNKS and TILED[8][0].m1 % _nb._MAX_CHUNKS
    s = TILED[10][0]  # side="left": one task per (i2, segment of n2)
    assert s.m2 * -(-s.n2 // _nb._SEG) > _nb._MAX_CHUNKS and s.m1 * s.n1 <= _nb._DIRECT_MAX_SIDE


COPY_SHAPES = [
    KS((37, 300), (3, 4)),  # n2 = 4 specialised copy, 37 block-rows in 16 chunks, threads
    KS((41, 120), (5, 2)),  # n2 = 2, threads
    KS((37, 100), (4, 5)),  # generic n2, threads, m2 ≠ n2
    KS((9, 2), (3, 7)),  # m1 > n1, m2 ≠ n2, one thread
]


@given(s=small_shapes, dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 99))
@example(s=COPY_SHAPES[0], dtype=np.float32, seed=0)
@example(s=COPY_SHAPES[1], dtype=np.float64, seed=1)
@example(s=COPY_SHAPES[2], dtype=np.float64, seed=2)
@example(s=COPY_SHAPES[3], dtype=np.float32, seed=3)
def test_copy_kernels_move_every_entry(s, dtype, seed):
    W = np.random.default_rng(seed).standard_normal(s.matrix_shape).astype(dtype)
    X = get_kernel("rearrange", "numba", W)(W, s)
    np.testing.assert_array_equal(X, _R(W, s).astype(dtype))
    assert X.dtype == dtype and X.flags.c_contiguous
    Wb = get_kernel("unrearrange", "numba", X)(X, s)
    np.testing.assert_array_equal(Wb, W)
    np.testing.assert_array_equal(_Rinv(X, s), W)


@given(
    s=st.builds(
        lambda m1, n1, m2, n2: KS((m1, n1), (m2, n2)),
        st.integers(2, 9),
        st.integers(1, 6),
        st.integers(1, 5),
        st.integers(1, 6),
    ),
    rank=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
@example(s=KS((9, 2), (3, 5)), rank=4, seed=0)  # m1 > n1, m2 ≠ n2
@example(s=KS((8, 3), (2, 4)), rank=3, seed=1)
def test_slots_cost_kernels_agree_on_non_square_factors(s, rank, seed):
    rank = min(rank, s.max_rank)
    W = np.random.default_rng(seed).standard_normal(s.matrix_shape)
    K = kron_svd(W, s, rank)
    for slot in range(s.m2):
        ref = slots_cost(W, s, K, slot, kernel="numpy")
        for impl in available("slots_cost"):
            got = slots_cost(W, s, K, slot, kernel=impl)
            _close(got, np.asarray(ref), np.float64, s.n1 * rank, f"{impl} slot {slot}")


def test_array_api_slots_cost_refuses_mixed_libraries():
    """Every operand's library is checked, the basis Vs included: a torch Vs with NumPy C
    and Y would otherwise be converted silently by NumPy (third mutation pass)."""
    torch = pytest.importorskip("torch")
    f = get_kernel("slots_cost", "array_api")
    C, Y = np.ones((3, 2, 4)), np.ones((3, 2, 2))
    with pytest.raises(TypeError, match="arrays of one array library"):
        f(C, torch.ones(4, 2, dtype=torch.float64), Y)
    cost, P = f(C, np.ones((4, 2)), Y)
    assert cost.shape == (3, 3) and P.shape == (3, 2, 2)
