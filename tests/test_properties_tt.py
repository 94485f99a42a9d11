"""tqla.tt / tqla.tt_matrix: conversions and input checks (found by mutation testing; listed
in benchmarks/results/mutation_2026-11-30.md)."""

from __future__ import annotations

import numpy as np
import pytest

from tqla import tt_svd


def test_astype_converts_every_core_and_keeps_the_values():
    rng = np.random.default_rng(0)
    T = tt_svd(rng.standard_normal((3, 4, 5)), ranks=2)
    T32 = T.astype(np.float32)
    assert [G.dtype for G in T32.cores] == [np.float32] * 3
    for G, G32 in zip(T.cores, T32.cores):
        np.testing.assert_array_equal(G32, G.astype(np.float32))


def test_tt_svd_names_a_non_array_input():
    with pytest.raises(TypeError, match=r"^X must be an array with at least one dimension, "
                                        r"got float64$"):  # fmt: skip
        tt_svd(np.float64(2.0), ranks=1)
    with pytest.raises(TypeError, match=r"^X must be an array .* got list$"):
        tt_svd([[1.0, 2.0]], ranks=1)


def test_tt_matrix_shapes_names_a_bad_rank():
    from tqla import tt_matrix_shapes

    with pytest.raises(TypeError, match=r"^rank must be an int or a sequence of ints, "
                                        r"got float$"):  # fmt: skip
        tt_matrix_shapes(16, 16, 2.5, d=2)
    with pytest.raises(TypeError, match=r"^rank must hold integers, got \[1\.5\]$"):
        tt_matrix_shapes(16, 16, [1.5], d=2)
