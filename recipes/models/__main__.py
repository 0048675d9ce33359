"""``python -m recipes.models prepare``: the old name of ``python -m recipes prepare``."""

import sys

from recipes.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
