"""Deprecated location: use :mod:`tqla_torch.training.evaluate`.

Kept for one release; re-exports the public names.
"""

from tqla_torch.training.evaluate import *  # noqa: F403
from tqla_torch.training.evaluate import __all__  # noqa: F401
