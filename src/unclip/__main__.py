"""``python -m unclip`` (and ``torchrun -m unclip``): the ``unclip`` command line."""

import sys

from unclip.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
