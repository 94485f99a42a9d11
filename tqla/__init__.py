"""tqla: structured matrix factorization on any array library."""

from tqla._array import check_permutation
from tqla.assignment import LSAPResult, assign_cost, lsap, slots_cost
from tqla.kron import (
    KroneckerShape,
    KroneckerSum,
    factor_shapes,
    kron_svd,
    rearrange,
    unrearrange,
)
from tqla.permuted import PermutedKronecker, PermutedKroneckerApprox, permuted_kron
from tqla.svd import truncated_svd

__version__ = "0.1.0"

__all__ = [
    "KroneckerShape",
    "KroneckerSum",
    "LSAPResult",
    "PermutedKronecker",
    "PermutedKroneckerApprox",
    "__version__",
    "assign_cost",
    "check_permutation",
    "factor_shapes",
    "kron_svd",
    "lsap",
    "permuted_kron",
    "rearrange",
    "slots_cost",
    "truncated_svd",
    "unrearrange",
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

# Spectral-norm Kronecker sums, certified spectral norms, heterogeneous Kronecker sums.
from tqla.hetero import (  # noqa: E402
    HeteroKronecker,
    HeteroKroneckerApprox,
    HeteroKroneckerSum,
    kron_hetero,
)
from tqla.norms import NormEstimate, as_operator, residual, spectral_norm  # noqa: E402
from tqla.spectral_permuted import permuted_kron_spectral  # noqa: E402
from tqla.spectral import (  # noqa: E402
    SpectralHistory,
    SpectralKronecker,
    SpectralKroneckerApprox,
    kron_spectral,
)

__all__ += [
    "HeteroKronecker",
    "HeteroKroneckerApprox",
    "HeteroKroneckerSum",
    "NormEstimate",
    "SpectralHistory",
    "SpectralKronecker",
    "SpectralKroneckerApprox",
    "as_operator",
    "kron_hetero",
    "kron_spectral",
    "permuted_kron_spectral",
    "residual",
    "spectral_norm",
]
