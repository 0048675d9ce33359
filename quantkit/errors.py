"""Errors raised by quantkit.

Every error quantkit raises on purpose derives from :class:`QuantkitError`; anything else is a
bug. The command line turns these into a one-paragraph message on stderr and an exit code::

    QuantkitError                 base class; never raised directly
    ├── InputError                exit 2: bad file, flag, tensor, data or config
    │   └── MissingExtraError     an optional dependency is not installed
    └── PipelineError             exit 1: a run failed although its inputs looked valid

Messages say what failed, where (file, tensor, flag) and what to do about it.
"""

from __future__ import annotations


class QuantkitError(Exception):
    """Base class of every error quantkit raises on purpose."""

    exit_code: int = 1


class InputError(QuantkitError):
    """A user-supplied input (file, flag, data, config) is unusable. Exit code 2."""

    exit_code = 2


class MissingExtraError(InputError):
    """An optional dependency needed for the requested feature is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the Python module '{module}', which is not installed. "
            f"Install it with: pip install 'quantkit[{extra}]'"
        )
        self.extra = extra
        self.module = module


class PipelineError(QuantkitError):
    """A stage failed at run time although its inputs passed validation. Exit code 1."""

    exit_code = 1
