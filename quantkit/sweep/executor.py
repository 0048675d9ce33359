"""Executors run independent pieces of work (configs, probes, shards).

Library code hands work to an executor and never knows which one runs it. The local executor
(default) runs in-process, in order, or -- with ``processes=N`` -- in a pool of N worker
processes; the Ray executor (:mod:`quantkit.sweep.ray_executor`, extra ``ray``) runs each
piece as a Ray task on a local or remote cluster. :func:`make_executor` builds one from the
CLI's ``--executor`` / ``--ray-address`` values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

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
    """In-process, in order; or, with ``processes=N``, in N worker processes.

    With a process pool, ``fn`` and the items must be picklable (a module-level function or a
    :func:`functools.partial` of one, not a lambda), and results are yielded as they finish.
    """

    name = "local"

    def __init__(self, processes: int | None = None) -> None:
        if processes is not None and processes < 1:
            raise ValueError(f"processes={processes}: must be a positive integer")
        self.processes = processes

    @property
    def parallelism(self) -> int:
        """How many items run at once."""
        return self.processes or 1

    def map_unordered(self, fn: Callable[[T], R],
                      items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to each item; a failing item does not stop the others."""
        if self.processes is not None and self.processes > 1:
            yield from self._pool(fn, items, self.processes)
            return
        for item in items:
            try:
                yield item, fn(item)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:  # recorded by the caller (a failed config)
                yield item, err

    @staticmethod
    def _pool(fn: Callable[[T], R], items: Iterable[T],
              processes: int) -> Iterator[tuple[T, R | BaseException]]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        # spawn: ONNX Runtime's and the calibrators' threads do not survive fork()
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) \
                as pool:
            pending: dict[Future[R], T] = {pool.submit(fn, item): item for item in items}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item = pending.pop(fut)
                    err = fut.exception()
                    yield item, (err if err is not None else fut.result())


def make_executor(name: str = "local", *, address: str | None = None,
                  **options: Any) -> Any:
    """The executor called ``name`` (``local`` or ``ray``), as the CLI's ``--executor`` picks.

    Args:
        name: ``local`` or ``ray``.
        address: the Ray cluster to connect to (``ray`` only; default: start a local one).
        options: keyword arguments of the executor's class.

    Raises:
        InputError: an unknown name, or ``--ray-address`` without ``--executor ray``.
        MissingExtraError: ``ray`` without the ``ray`` module installed.
    """
    from quantkit.errors import InputError

    if name == "local":
        if address is not None:
            raise InputError("address=: only valid with the ray executor.")
        return LocalExecutor(**options)
    if name == "ray":
        from quantkit.sweep.ray_executor import RayExecutor

        return RayExecutor(address=address, **options)
    raise InputError(f"executor={name!r}: unknown executor; use 'local' or 'ray'.")
