"""``python -m recipes COMMAND``: helpers for the real-model recipes.

Commands:
    prepare   write the models, data and labels that ``recipes/*/*.yaml`` read
              (see :mod:`recipes.prepare`; ``prepare --help`` for options)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "prepare":
        from recipes.prepare import main as prepare_main

        return prepare_main(rest)
    print(f"python -m recipes: unknown command {command!r}; commands: prepare",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
