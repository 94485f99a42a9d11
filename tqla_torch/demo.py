"""Deprecated location: use :mod:`tqla_torch.training.demo`.

Kept for one release; re-exports the public names.
"""

from tqla_torch.training.demo import *  # noqa: F403
from tqla_torch.training.demo import __all__  # noqa: F401
