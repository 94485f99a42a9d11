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
    "moment_root",
    "nearest_kron_moment",
    "whitened_error",
    "whitened_kron_spectrum",
    "whitened_kron_svd",
    "whitened_permuted_kron",
    "whitened_spectrum",
    "whitened_svd",
]
