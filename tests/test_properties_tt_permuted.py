"""tqla.tt_permuted against its definitions (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqla import PermutedKronecker, PermutedTT, kron_svd, permuted_tt, tt_matrix


@given(seed=st.integers(0, 2**16), rule=st.sampled_from(["slots", "assign", "slots+assign"]),
       stop=st.integers(0, 3))  # fmt: skip
@settings(max_examples=6, deadline=None)
def test_callback_sees_each_iteration_and_its_error_and_may_stop(seed, rule, stop):
    W = np.random.default_rng(seed).standard_normal((8, 8))
    seen = []

    def callback(it, err):
        seen.append((it, err))
        return True if it == stop else None

    P = permuted_tt(W, (2, 4), (4, 2), ranks=2, rule=rule, n_iter=6, tol=0.0,
                    callback=callback)  # fmt: skip
    # one call per iteration, with the error that iteration reached (errors[it + 1])
    assert [it for it, _ in seen] == list(range(len(seen)))
    assert [e for _, e in seen] == P.errors[1:]
    assert len(seen) <= stop + 1 and P.n_iter == len(seen)


def test_mode_counts_must_match_and_the_message_says_so():
    W = np.zeros((8, 8))
    with pytest.raises(ValueError, match=r"row_modes \(2, 4\) and col_modes \(2, 2, 2\) must have"):
        permuted_tt(W, (2, 4), (2, 2, 2), ranks=2)


def test_permuted_results_name_the_bad_permutation():
    W = np.random.default_rng(0).standard_normal((6, 4))
    inner = [kron_svd(W, ((3, 2), (2, 2)), 1), tt_matrix(W, (3, 2), (2, 2), ranks=1)]
    for cls, K in zip((PermutedKronecker, PermutedTT), inner, strict=True):
        with pytest.raises(ValueError, match="col_perm must be a permutation"):
            cls(K, np.arange(6), np.array([0, 0, 1, 2]), [0.1], 0)
        with pytest.raises(ValueError, match=r"row_perm must have shape \(6,\)"):
            cls(K, np.arange(5), np.arange(4), [0.1], 0)
