"""tqla: structured matrix factorization on any array library.

Kronecker sums (Frobenius and spectral norm, heterogeneous shapes), permuted Kronecker sums
(TQCompressor), tensor trains, the linear sum assignment problems they use, and truncated SVDs.
"""

from tqla._array import check_permutation
from tqla.assignment import LSAPResult, assign_cost, lsap, slots_cost
from tqla.batch import permuted_kron_many
from tqla.hetero import HeteroKronecker, HeteroKroneckerApprox, HeteroKroneckerSum, kron_hetero
from tqla.kron import (
    KroneckerShape,
    KroneckerSum,
    factor_shapes,
    kron_svd,
    rearrange,
    unrearrange,
)
from tqla.norms import NormEstimate, as_operator, residual, spectral_norm
from tqla.permuted import PermutedKronecker, PermutedKroneckerApprox, permuted_kron
from tqla.spectral import (
    SpectralHistory,
    SpectralKronecker,
    SpectralKroneckerApprox,
    kron_spectral,
)
from tqla.spectral_permuted import permuted_kron_spectral
from tqla.svd import truncated_svd
from tqla.tt import TensorTrain, rank_bounds, tt_svd
from tqla.tt_matrix import TTMatrix, TTMatrixShape, tt_matrix, tt_matrix_shapes
from tqla.tt_permuted import PermutedTT, permuted_tt
from tqla.two_sided import nearest_kron_weight, two_sided_error_curve, two_sided_whitened_svd
from tqla.whiten import (
    moment_root,
    nearest_kron_moment,
    whitened_error,
    whitened_kron_spectrum,
    whitened_kron_svd,
    whitened_permuted_kron,
    whitened_spectrum,
    whitened_svd,
)
from tqla.whiten_structured import kron_moment_factors, whitened_kron_spectral, whitened_tt_matrix

__version__ = "0.1.0"

__all__ = [
    "HeteroKronecker",
    "HeteroKroneckerApprox",
    "HeteroKroneckerSum",
    "KroneckerShape",
    "KroneckerSum",
    "LSAPResult",
    "NormEstimate",
    "PermutedKronecker",
    "PermutedKroneckerApprox",
    "PermutedTT",
    "SpectralHistory",
    "SpectralKronecker",
    "SpectralKroneckerApprox",
    "TTMatrix",
    "TTMatrixShape",
    "TensorTrain",
    "__version__",
    "as_operator",
    "assign_cost",
    "check_permutation",
    "factor_shapes",
    "kron_hetero",
    "kron_spectral",
    "kron_svd",
    "lsap",
    "permuted_kron",
    "permuted_kron_many",
    "permuted_kron_spectral",
    "permuted_tt",
    "rank_bounds",
    "rearrange",
    "residual",
    "slots_cost",
    "spectral_norm",
    "truncated_svd",
    "tt_matrix",
    "tt_matrix_shapes",
    "tt_svd",
    "unrearrange",
    "moment_root",
    "nearest_kron_moment",
    "nearest_kron_weight",
    "two_sided_error_curve",
    "two_sided_whitened_svd",
    "whitened_error",
    "whitened_kron_spectrum",
    "whitened_kron_svd",
    "whitened_permuted_kron",
    "whitened_spectrum",
    "whitened_svd",
    "kron_moment_factors",
    "whitened_kron_spectral",
    "whitened_tt_matrix",
]
