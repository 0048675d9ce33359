"""Reading YAML files safely, with errors that name the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantkit.errors import InputError


def load_yaml(path: str | Path, what: str) -> Any:
    """``yaml.safe_load`` a file (never executes anything it reads).

    Args:
        path: the file.
        what: how to name it in errors, e.g. ``"--precision P.yaml"`` or ``"recipe"``.

    Raises:
        InputError: missing/unreadable file, or a syntax error with its line and column.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{what} {p}: cannot read it: {err}") from err
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise InputError(f"{where}: YAML syntax error: {err.problem}.") from err
    except yaml.YAMLError as err:
        raise InputError(f"{p}: YAML error: {err}") from err
    except RecursionError:
        raise InputError(f"{what} {p}: nested too deeply to be a quantkit file.") from None
