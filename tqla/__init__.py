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
