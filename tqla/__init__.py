"""tqla: structured matrix factorization on any array library."""

from tqla.kron import (
    KroneckerShape,
    KroneckerSum,
    factor_shapes,
    kron_svd,
    rearrange,
    unrearrange,
)

__version__ = "0.1.0"

__all__ = [
    "KroneckerShape",
    "KroneckerSum",
    "factor_shapes",
    "kron_svd",
    "rearrange",
    "unrearrange",
    "__version__",
]

# Permuted Kronecker sums (TQCompressor) and their linear sum assignment.
from tqla.assignment import LSAPResult, assign_cost, lsap, slots_cost  # noqa: E402
from tqla.permuted import (  # noqa: E402
    PermutedKronecker,
    PermutedKroneckerApprox,
    permuted_kron,
)

__all__ += [
    "LSAPResult",
    "PermutedKronecker",
    "PermutedKroneckerApprox",
    "assign_cost",
    "lsap",
    "permuted_kron",
    "slots_cost",
]

# Tensor trains (methods.md §5).
from tqla.tt import TensorTrain, rank_bounds, tt_svd  # noqa: E402
from tqla.tt_matrix import TTMatrix, TTMatrixShape, tt_matrix, tt_matrix_shapes  # noqa: E402
from tqla.tt_permuted import PermutedTT, permuted_tt  # noqa: E402

__all__ += [
    "PermutedTT",
    "TTMatrix",
    "TTMatrixShape",
    "TensorTrain",
    "rank_bounds",
    "tt_matrix",
    "permuted_tt",
    "tt_matrix_shapes",
    "tt_svd",
]
