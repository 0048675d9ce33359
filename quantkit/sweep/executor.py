"""Executors run independent pieces of work (configs, probes, shards).

Library code hands work to an executor and never knows which one runs it. The local executor
(default) runs in-process, in order; a Ray executor for sweeps that outgrow one machine plugs
in behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn`` over items, yielding ``(item, result or exception)`` as they finish."""

    name: str

    def map_unordered(self, fn: Callable[[T], R],
                      items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to each item; exceptions are returned, not raised."""
        ...


class LocalExecutor:
    """In-process, in order."""

    name = "local"

    def map_unordered(self, fn: Callable[[T], R],
                      items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to each item in turn; a failing item does not stop the others."""
        for item in items:
            try:
                yield item, fn(item)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:  # recorded by the caller (a failed config)
                yield item, err
