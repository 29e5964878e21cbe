"""``python -m clearlstm``: the ``clearlstm`` command."""

import sys

from clearlstm.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
