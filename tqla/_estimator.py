"""What the estimator-style wrappers share (``PermutedKroneckerApprox``,
``SpectralKroneckerApprox``, ``HeteroKroneckerApprox``): a subclass's ``fit`` sets
``result_``; :meth:`transform` and :meth:`fit_transform` follow from it.
"""

from __future__ import annotations

from typing import Any

from tqla.shapes import KroneckerShape


class _ApproxEstimator:
    """``transform`` / ``fit_transform`` over the ``result_`` a subclass's ``fit`` sets."""

    result_: Any

    def fit(self, W: Any) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def transform(self) -> Any:
        """The fitted approximation as a dense matrix."""
        return self.result_.to_dense()

    def fit_transform(self, W: Any) -> Any:
        return self.fit(W).transform()


class _KronEstimator(_ApproxEstimator):
    """An estimator of one Kronecker shape and rank; ``kwargs`` go to the fitting function."""

    def __init__(self, shape: Any, rank: int = 1, **kwargs: Any):
        self.shape = KroneckerShape.of(shape)
        self.rank = rank
        self.kwargs = kwargs
