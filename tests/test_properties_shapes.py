"""KroneckerShape and factor_shapes against their definitions (found by mutation testing).

Every derived quantity is compared with the formula written out here, factor_shapes with a
brute-force enumeration of the divisor pairs, and every validation with its exact message
(argument name and rule).  Pure integer arithmetic: exact comparisons throughout.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tqla import KroneckerShape, factor_shapes

dims = st.integers(1, 7)


@given(m1=dims, n1=dims, m2=dims, n2=dims, r=st.integers(0, 4), k=st.integers(0, 5))
@example(m1=3, n1=2, m2=5, n2=7, r=2, k=3)  # every side distinct
def test_derived_quantities_follow_the_definitions(m1, n1, m2, n2, r, k):
    s = KroneckerShape((m1, n1), (m2, n2))
    assert (s.m1, s.n1, s.m2, s.n2) == (m1, n1, m2, n2)
    assert s.matrix_shape == (m1 * m2, n1 * n2)
    assert s.rearranged_shape == (m1 * n1, m2 * n2)
    assert s.max_rank == min(m1 * n1, m2 * n2)
    assert s.T == KroneckerShape((n1, m1), (n2, m2))
    assert s.n_params(r) == r * (m1 * n1 + m2 * n2)
    assert s.n_params() == m1 * n1 + m2 * n2
    a_first = r * k * (m1 * n1 * n2 + m1 * n2 * m2)  # A X_t, then · Bᵀ
    b_first = r * k * (n1 * n2 * m2 + m1 * n1 * m2)  # X_t Bᵀ, then A ·
    assert s.matmat_costs(r, k) == (a_first, b_first)
    assert s.matmat_costs(r) == s.matmat_costs(r, 1)
    assert s.matmat_order(r, k) == ("b_first" if b_first <= a_first else "a_first")
    assert s.matmat_order(r) == s.matmat_order(r, 1)
    (a, b) = s
    assert (a, b) == ((m1, n1), (m2, n2))
    assert KroneckerShape.of(((m1, n1), (m2, n2))) == s and KroneckerShape.of(s) is s
    assert KroneckerShape.from_matrix((m1 * m2, n1 * n2), (m1, n1)) == s
    t = KroneckerShape((np.int64(m1), n1), (m2, np.int32(n2)))
    assert t == s and all(type(v) is int for v in (*t.a, *t.b))
    if r:
        assert s.check_rank(min(r, s.max_rank)) == min(r, s.max_rank)
    assert s.check_rank(np.int64(s.max_rank), "k") == s.max_rank
    assert s.check_rank(1) == 1


def test_validation_names_the_argument_and_the_rule():
    s = KroneckerShape((3, 2), (2, 4))
    with pytest.raises(ValueError, match=r"^KroneckerShape\.a must be a pair \(rows, cols\), "
                                         r"got \(3, 2, 1\)$"):  # fmt: skip
        KroneckerShape((3, 2, 1), (2, 4))
    with pytest.raises(ValueError, match=r"^KroneckerShape\.b must be a pair \(rows, cols\), "
                                         r"got \[2, 4\]$"):  # fmt: skip
        KroneckerShape((3, 2), [2, 4])
    for bad in ((0, 2), (True, 2), (2.0, 2)):
        with pytest.raises(ValueError, match=r"^KroneckerShape\.b must hold positive integers, "
                                             r"got \(.*\)$"):  # fmt: skip
            KroneckerShape((3, 2), bad)
    with pytest.raises(ValueError, match=r"^KroneckerShape\.a must hold positive integers"):
        KroneckerShape((3, -1), (2, 4))
    with pytest.raises(ValueError, match=r"^shape must be a KroneckerShape or \(\(m1, n1\), "
                                         r"\(m2, n2\)\), got \(3, 2\)$"):  # fmt: skip
        KroneckerShape.of((3, 2))
    with pytest.raises(ValueError, match=r"^shape must be a KroneckerShape"):
        KroneckerShape.of(5)
    msg = r"^factor A of shape \(4, 2\) must divide the matrix shape \(6, 8\) \(M % m1 == 0"
    with pytest.raises(ValueError, match=msg + r" and N % n1 == 0\)$"):
        KroneckerShape.from_matrix((6, 8), (4, 2))
    for a in ((3, 3), (0, 2), (3, 0)):
        with pytest.raises(ValueError, match=r"^factor A of shape"):
            KroneckerShape.from_matrix((6, 8), a)
    with pytest.raises(TypeError, match=r"^rank must be an integer, got bool True$"):
        s.check_rank(True)
    with pytest.raises(TypeError, match=r"^k must be an integer, got float 2\.0$"):
        s.check_rank(2.0, "k")
    rule = r"min\(m1·n1, m2·n2\) = min\(6, 8\) = 6 for A \(3, 2\) ⊗ B \(2, 4\)"
    with pytest.raises(ValueError, match=rf"^rank must satisfy 1 <= rank <= {rule}, got 7$"):
        s.check_rank(7)
    with pytest.raises(ValueError, match=rf"^k must satisfy 1 <= k <= {rule}, got 0$"):
        s.check_rank(0, "k")
    s.check_matrix(np.zeros((6, 8)))
    msg = (r"^W of shape \(8, 6\) does not match the Kronecker shape A \(3, 2\) ⊗ B \(2, 4\), "
           r"which needs \(3·2, 2·4\) = \(6, 8\)$")  # fmt: skip
    with pytest.raises(ValueError, match=msg):
        s.check_matrix(np.zeros((8, 6)))
    with pytest.raises(ValueError, match=r"^weight of shape \(6, 7\)"):
        s.check_matrix(np.zeros((6, 7)), "weight")
    with pytest.raises(TypeError, match=r"^rank must be an integer"):
        s.matmat_costs(1.5)
    with pytest.raises(ValueError, match=r"^k must be >= 0, got -1$"):
        s.matmat_costs(1, -1)
    with pytest.raises(ValueError, match=r"^rank must be >= 0, got -1$"):
        s.matmat_costs(-1)


def _brute(M: int, N: int, rank: int, trivial: bool) -> list[tuple]:
    out = []
    for m1 in range(1, M + 1):
        for n1 in range(1, N + 1):
            if M % m1 or N % n1:
                continue
            a, b = (m1, n1), (M // m1, N // n1)
            if not trivial and (a == (1, 1) or b == (1, 1)):
                continue
            bound = min(m1 * n1, b[0] * b[1])
            if bound >= rank:
                out.append((rank * (m1 * n1 + b[0] * b[1]), a, b, bound))
    return sorted(out)


@given(M=st.integers(1, 40), N=st.integers(1, 40), rank=st.integers(1, 5), trivial=st.booleans())
@example(M=36, N=36, rank=1, trivial=False)  # a square number: the divisor √36 once
@example(M=12, N=18, rank=4, trivial=True)
def test_factor_shapes_is_every_divisor_pair_in_order(M, N, rank, trivial):
    got = factor_shapes(M, N, rank, trivial=trivial)
    assert [(f.n_params, f.shape.a, f.shape.b, f.max_rank) for f in got] == _brute(
        M, N, rank, trivial
    )
    if not trivial:
        assert factor_shapes(M, N, rank) == got


def test_factor_shapes_validates_its_arguments():
    with pytest.raises(ValueError, match=r"^M must be >= 1, got 0$"):
        factor_shapes(0, 4)
    with pytest.raises(ValueError, match=r"^N must be >= 1, got 0$"):
        factor_shapes(4, 0)
    with pytest.raises(ValueError, match=r"^rank must be >= 1, got 0$"):
        factor_shapes(4, 4, 0)
    with pytest.raises(TypeError, match=r"^M must be an integer"):
        factor_shapes(4.0, 4)
