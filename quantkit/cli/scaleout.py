"""``--executor local|ray``, ``--ray-address``, ``--shards``: scale-out options.

See docs/cli.md#scale-out.

Shared by ``calibrate``, ``sweep`` and ``sensitivity``. Nothing here imports ray: the Ray
executor is loaded only when ``--executor ray`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
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


def calibrate_on_executor(model: str, data: Any, executor: str, ray_address: str | None,
                          shards: int | None, *, method: str, batch_size: int,
                          max_samples: int | None, allow_nonfinite: bool,
                          method_options: Mapping[str, Any], data_options: Mapping[str, Any],
                          trt_version: int, plugins: Sequence[str] = (),
                          quantized_only: bool = False) -> Any:
    """Sharded calibration: ``local`` runs the shards in a process pool, ``ray`` as tasks."""
    from quantkit.capture.shard import calibrate_sharded

    if shards is not None and shards < 1:
        raise InputError(f"--shards {shards}: must be a positive integer.")
    ex = build_executor(executor, ray_address,
                        processes=shards if executor == "local" else None)
    try:
        n = shards if shards is not None else (ex.parallelism if executor == "ray"
                                               else (os.cpu_count() or 1))
        # one ONNX Runtime thread per shard when shards fill the machine (no oversubscription)
        threads = 1 if executor == "ray" else max(1, (os.cpu_count() or 1) // n)
        return calibrate_sharded(
            model, data, executor=ex, shards=n, method=method, batch_size=batch_size,
            max_samples=max_samples, allow_nonfinite=allow_nonfinite,
            method_options=method_options, data_options=data_options, threads=threads,
            trt_version=trt_version, plugins=plugins, quantized_only=quantized_only)
    finally:
        close = getattr(ex, "close", None)
        if close is not None:
            close()
