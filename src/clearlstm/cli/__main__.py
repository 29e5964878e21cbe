"""``python -m clearlstm.cli`` (as ``torchrun -m clearlstm.cli`` runs it): the command."""

import sys

from clearlstm.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
