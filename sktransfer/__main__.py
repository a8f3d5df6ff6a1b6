"""``python -m sktransfer``: the ``sktransfer`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # imported by tools that list modules: nothing runs
    sys.exit(main())
