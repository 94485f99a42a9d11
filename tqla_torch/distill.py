"""Deprecated location: use :mod:`tqla_torch.training.distill`.

Kept for one release; re-exports the public names.
"""

from tqla_torch.training.distill import *  # noqa: F403
from tqla_torch.training.distill import __all__  # noqa: F401
