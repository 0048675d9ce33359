"""``--executor local|ray``, ``--ray-address``, ``--shards``: scale-out options.

See docs/cli.md#scale-out.

Shared by ``calibrate``, ``sweep`` and ``sensitivity``. Nothing here imports ray: the Ray
executor is loaded only when ``--executor ray`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from quantkit.cli.options import Bounded
from quantkit.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def executor_options(func: F) -> F:
    """Add ``--executor``, ``--ray-address`` and ``--shards``."""
    opts = [
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                     show_default=True,
                     help="Where the work runs: in this process, or as Ray tasks (extra ray)."),
        click.option("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to connect to (default: start a local one)."),
        click.option("--shards", type=Bounded(int, 1), default=None, metavar="N",
                     help="Split the calibration data into N shards (default with ray: the "
                          "cluster's CPU count). Output identical to one pass."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def build_executor(executor: str, ray_address: str | None,
                   processes: int | None = None) -> Any:
    """The executor the options name (``processes`` only for ``local``)."""
    from quantkit.sweep.executor import make_executor

    if executor == "local":
        if ray_address is not None:
            raise InputError("--ray-address: only valid with --executor ray.")
        return make_executor("local", processes=processes)
    return make_executor(executor, address=ray_address)


def scale_out(executor: str, ray_address: str | None, shards: int | None,
              plugins: tuple[str, ...] = ()) -> Any:
    """The ``scale_out`` of :func:`quantkit.workflows.calibrate` the options ask for.

    ``None`` (one pass in this process) for ``--executor local`` without ``--shards`` or
    ``--ray-address``; else a :class:`~quantkit.workflows.ScaleOut` whose executor (a process
    pool, or Ray tasks) is started when the shards run and closed after them.
    """
    from quantkit.workflows.calibration import ScaleOut

    if executor == "local" and shards is None and ray_address is None:
        return None
    if executor == "local" and ray_address is not None:
        raise InputError("--ray-address: only valid with --executor ray.")

    def start() -> Any:
        return build_executor(executor, ray_address,
                              processes=shards if executor == "local" else None)

    return ScaleOut(start, shards, remote=executor == "ray", plugins=plugins)
