"""``python -m tqla_torch`` runs the ``tqla`` command."""

import sys

from tqla_torch.cli import main

if __name__ == "__main__":
    sys.exit(main())
