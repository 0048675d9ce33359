"""Logging and progress helpers.

Library code logs through ``logging.getLogger(__name__)`` and never installs handlers; the CLI
configures logging. Progress bars go through :func:`track`, which is silent when progress is
disabled (``--quiet``) or stderr is not a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_progress_enabled = True


def set_progress(enabled: bool) -> None:
    """Globally enable or disable progress bars (the CLI's ``--quiet`` turns them off)."""
    global _progress_enabled
    _progress_enabled = enabled


def progress_enabled() -> bool:
    """Whether progress bars would be shown now (enabled and stderr is a terminal)."""
    return _progress_enabled and sys.stderr.isatty()


def track(items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Iterate over ``items``, showing a progress bar on a terminal."""
    if not progress_enabled():
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    from rich.console import Console

    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
