"""One calibration workflow: a single pass, or shards on an executor, chosen by ``scale_out``.

Both give identical scales (:mod:`quantkit.capture.shard` explains why); the command line
(``calibrate``, ``sensitivity``, ``autotune``) and the library call this one function, so the
choice and its checks live here only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantkit.capture import CalibrationResult
from quantkit.capture import calibrate as calibrate_once
from quantkit.capture.shard import ShardReport, calibrate_sharded
from quantkit.errors import InputError
from quantkit.options import CalibrationOptions, DataOptions, RuntimeOptions


@dataclass(frozen=True)
class ScaleOut:
    """Sharded calibration on an executor.

    Attributes:
        executor: runs the shards (anything with ``map_unordered`` and ``parallelism``:
            :mod:`quantkit.sweep.executor`), or a zero-argument callable returning one,
            called only once the run's options passed their checks (starting a cluster is
            slow); an executor made that way is closed when the calibration ends.
        shards: number of shards (default: the executor's parallelism).
        remote: the shards run on other processes of a cluster (Ray): one ONNX Runtime thread
            each; locally the machine's cores are shared out between the shards.
        plugins: calibrator plugin files for the workers to load.
        report: filled with per-shard timings.
    """

    executor: Any
    shards: int | None = None
    remote: bool = False
    plugins: tuple[str, ...] = ()
    report: ShardReport | None = None

    def open(self) -> tuple[Any, int, int]:
        """``(executor, shards, ONNX Runtime threads per shard)``; see :attr:`executor`."""
        if self.shards is not None and self.shards < 1:
            raise InputError(f"shards={self.shards}: must be a positive integer.")
        ex = self.executor
        if callable(ex) and not hasattr(ex, "map_unordered"):
            ex = ex()
        n = self.shards if self.shards is not None else int(
            getattr(ex, "parallelism", None) or os.cpu_count() or 1)
        # one thread per shard when shards fill the machine (no oversubscription)
        threads = 1 if self.remote else max(1, (os.cpu_count() or 1) // n)
        return ex, n, threads


def calibrate(model: str | os.PathLike[str], data: Any, *,
              calibration: CalibrationOptions | None = None,
              data_options: DataOptions | Mapping[str, Any] | None = None,
              runtime: RuntimeOptions | None = None, scale_out: ScaleOut | None = None,
              checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
              keep_checkpoint: bool = False) -> CalibrationResult:
    """Calibrate ``model`` on ``data``: in this process, or sharded when ``scale_out`` is given.

    Args:
        model: path of the FP32 ONNX model.
        data: anything :func:`quantkit.data.open_source` accepts.
        calibration: method and settings (default ``auto``).
        data_options: how the data is read.
        runtime: ONNX Runtime providers and threads (threads: per shard when sharded, else
            computed from the machine's cores).
        scale_out: run the data in shards on an executor; the scales are identical.
        checkpoint: resumable single-pass runs (:func:`quantkit.capture.calibrate`).
        checkpoint_every: batches between checkpoint saves.
        keep_checkpoint: keep the checkpoint file after success.

    Raises:
        InputError: ``checkpoint`` or ``allow_cast`` with ``scale_out`` (not supported: a
            failed shard is re-run, and the workers validate the data themselves).
    """
    data_opts = DataOptions.coerce(data_options)
    if scale_out is None:
        return calibrate_once(model, data, calibration=calibration, data_options=data_opts,
                              runtime=runtime, checkpoint=checkpoint,
                              checkpoint_every=checkpoint_every,
                              keep_checkpoint=keep_checkpoint)
    if data_opts.allow_cast:
        raise InputError("allow_cast=True: not supported with scale_out= (sharded "
                         "calibration); convert the data to the model's float type, or "
                         "calibrate in one pass.")
    if checkpoint is not None:
        raise InputError("checkpoint=: not supported with scale_out= (sharded calibration; a "
                         "failed shard is re-run); give one of them.")
    executor, shards, threads = scale_out.open()
    run = RuntimeOptions.of(runtime, threads=threads)
    try:
        result: CalibrationResult = calibrate_sharded(
            model, data, executor=executor, shards=shards, plugins=scale_out.plugins,
            report=scale_out.report, calibration=calibration, data_options=data_opts,
            runtime=run)
    finally:
        close = getattr(executor, "close", None)
        if executor is not scale_out.executor and close is not None:
            close()
    return result
