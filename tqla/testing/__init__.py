"""Testing utilities for code built on tqla: Hypothesis strategies and assertions.

Strategies (functions returning a Hypothesis ``SearchStrategy``; ``xp=``/``device=``
select the array library, or bind them once with :func:`make_strategies_namespace`):

* :func:`kronecker_shapes` — factor shapes ``KroneckerShape((m1, n1), (m2, n2))``;
* :func:`matrices` — real matrices with finite, bounded entries (or generic Gaussian ones);
* :func:`kronecker_sums` — :class:`~tqla.KroneckerSum` of any rank;
* :func:`kronecker_structured` — matrices with planted (optionally permuted, noisy)
  Kronecker structure, with the truth;
* :func:`permutations` — permutations of ``range(n)``;
* :func:`tensor_trains`, :func:`tt_matrices` — tensor trains and TT-matrices with Gaussian
  cores at reachable ranks (their exact TT ranks).

Assertions (any array library; compared on the host in float64; messages say what was
expected, what was found and the tolerance):

* :func:`assert_reconstructs`, :func:`assert_kron_optimal`, :func:`assert_kron_close`;
* :func:`assert_nonincreasing`, :func:`assert_valid_permutation`;
* :func:`assert_same_array_type`, :func:`assert_same_result_across_backends`.
* :func:`spectral_error`, :func:`assert_certified_bound`, :func:`assert_spectral_not_worse`,
  :func:`assert_hetero_consistent` — spectral-norm results and heterogeneous sums
  (strategy: :func:`hetero_kronecker_sums`).

Hypothesis is needed for the strategies only (``pip install 'tqla[test]'``); see
``docs/testing.md``.
"""

from tqla.testing.assertions import (
    as_numpy,
    assert_kron_close,
    assert_kron_optimal,
    assert_nonincreasing,
    assert_reconstructs,
    assert_same_array_type,
    assert_same_result_across_backends,
    assert_valid_permutation,
    kron_error,
    rounding_tolerance,
)
from tqla.testing.spectral_checks import (
    assert_certified_bound,
    assert_hetero_consistent,
    assert_spectral_not_worse,
    spectral_error,
)

__all__ = [
    "PlantedKronecker",
    "as_numpy",
    "assert_certified_bound",
    "assert_hetero_consistent",
    "assert_kron_close",
    "assert_kron_optimal",
    "assert_nonincreasing",
    "assert_reconstructs",
    "assert_same_array_type",
    "assert_same_result_across_backends",
    "assert_spectral_not_worse",
    "assert_valid_permutation",
    "convert",
    "hetero_kronecker_sums",
    "kron_error",
    "kronecker_shapes",
    "kronecker_structured",
    "kronecker_sums",
    "make_strategies_namespace",
    "matrices",
    "permutations",
    "rounding_tolerance",
    "tensor_trains",
    "tt_matrices",
    "spectral_error",
]

_STRATEGIES = {
    "PlantedKronecker",
    "convert",
    "kronecker_shapes",
    "kronecker_structured",
    "kronecker_sums",
    "make_strategies_namespace",
    "matrices",
    "permutations",
    "tensor_trains",
    "tt_matrices",
}


def __getattr__(name: str):
    # The strategies import Hypothesis, an optional test dependency: load them on use.
    if name in _STRATEGIES or name == "strategies":
        import importlib

        strategies = importlib.import_module("tqla.testing.strategies")
        return strategies if name == "strategies" else getattr(strategies, name)
    if name == "hetero_kronecker_sums":
        from tqla.testing.spectral_checks import hetero_kronecker_sums

        return hetero_kronecker_sums
    raise AttributeError(f"module 'tqla.testing' has no attribute {name!r}")
