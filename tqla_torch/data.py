"""Deprecated location: use :mod:`tqla_torch.training.data`.

Kept for one release; re-exports the public names.
"""

from tqla_torch.training.data import *  # noqa: F403
from tqla_torch.training.data import __all__  # noqa: F401
