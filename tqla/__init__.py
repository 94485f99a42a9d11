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
