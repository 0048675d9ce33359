"""The one-call :func:`calibrate`: capture activations, collect statistics, compute scales.

Resumable with a checkpoint (:mod:`quantkit.capture.checkpoint`); the scales of a resumed run
are bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quantkit.calibrators.base import Calibrator, create_calibrator
from quantkit.calibrators.cache import ScaleTable
from quantkit.calibrators.methods import HistogramCalibrator
from quantkit.capture.resume import Resume, open_checkpoint
from quantkit.capture.runner import ActivationCapture, warn_heavy_clipping
from quantkit.capture.staged import default_memory_budget, parse_memory
from quantkit.data.base import DataSource, InputLayout, check_batch_args
from quantkit.data.rows import ReaderSource
from quantkit.options import (
    CalibrationOptions,
    DataOptions,
    RunOptions,
    RuntimeOptions,
    refuse_unknown,
    resolve_options,
)

logger = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    """What :func:`calibrate` produced."""

    scales: ScaleTable
    calibrator: Calibrator
    num_samples: int
    tensors: list[str] = field(default_factory=list)


def calibrate(model: str | os.PathLike[str], data: Any, *,
              calibration: CalibrationOptions | None = None,
              data_options: DataOptions | Mapping[str, Any] | None = None,
              runtime: RuntimeOptions | None = None, calibrator: Calibrator | None = None,
              checkpoint: str | os.PathLike[str] | None = None,
              **settings: Any) -> CalibrationResult:
    """Calibrate every floating-point activation of ``model`` on ``data``.

    Args:
        model: path of the FP32 ONNX model.
        data: anything :func:`quantkit.data.open_source` accepts (a path, ``hf:...``, a
            :class:`~quantkit.data.DataSource`, an iterable of batches).
        calibration: the method and its settings (:class:`~quantkit.options.CalibrationOptions`;
            default ``auto``, ``docs/calibration_methods.md``).
        data_options: how the data is read (:class:`~quantkit.options.DataOptions`, or a
            mapping of its fields such as ``{"seed": 5, "preprocess": ...}``).
        runtime: ONNX Runtime providers and threads (:class:`~quantkit.options.RuntimeOptions`).
        calibrator: use this calibrator instead of creating one from the method.
        checkpoint: save the statistics to this file every ``checkpoint_every`` batches (and
            on Ctrl-C); if it exists, resume from it. The scales are bit-identical to an
            uninterrupted run. A checkpoint of a run with another model, data or settings is
            refused (:mod:`quantkit.capture.checkpoint`).
        **settings: any field of the three option groups as a keyword, overriding the objects
            (``method="entropy"``, ``batch_size=32``, ``max_samples``, ``allow_nonfinite``,
            ``method_options``, ``memory_budget``, ``trt_version``, ``allow_cast``,
            ``providers``, ``threads``); and ``checkpoint_every`` (batches between checkpoint
            saves, default 10) and ``keep_checkpoint`` (keep the checkpoint file after success;
            by default it is deleted before returning).

    Returns:
        The scales (TensorRT cache / JSON ready) and the calibrator with its statistics.
    """
    from quantkit.data import allow_cast as allowing_cast

    every = int(settings.pop("checkpoint_every", 10))
    keep = bool(settings.pop("keep_checkpoint", False))
    rest = {**settings, "calibration": calibration, "data_options": data_options,
            "runtime": runtime}
    opts = resolve_options(rest, "calibrate")
    refuse_unknown(rest, "calibrate")
    with allowing_cast(opts.data.allow_cast):
        return _calibrate(model, data, opts, calibrator, _Checkpointing(checkpoint, every, keep))


@dataclass(frozen=True)
class _Checkpointing:
    path: str | os.PathLike[str] | None
    every: int = 10
    keep: bool = False


def _calibrate(model: str | os.PathLike[str], data: Any, opts: RunOptions,
               calibrator: Calibrator | None, checkpointing: _Checkpointing,
               ) -> CalibrationResult:
    from quantkit.data import open_source

    options, data_opts, runtime = opts
    batch_size, max_samples = data_opts.batch_size, data_opts.max_samples
    allow_nonfinite = options.allow_nonfinite
    memory_budget = options.memory_budget
    check_batch_args(batch_size, max_samples)
    cal = calibrator or create_calibrator(options.method, allow_nonfinite=allow_nonfinite,
                                          **options.method_options)
    # overlapped runs fold batch N while batch N+1 is read: every batch needs its own arrays;
    # they load the binning kernel at their first batch, when the run's size is known
    overlap = checkpointing.path is None and type(cal).update_many is Calibrator.update_many
    capture = ActivationCapture(model, providers=runtime.provider_list, threads=runtime.threads,
                                calibrating=True,
                                histograms=isinstance(cal, HistogramCalibrator) and not overlap,
                                layout=InputLayout.from_options(data_opts.open_kwargs()),
                                memory_budget=default_memory_budget() if memory_budget is None
                                else parse_memory(memory_budget),
                                quantized_only=options.quantized_only)
    source = open_source(data, capture.inputs, **data_opts.open_kwargs())
    desc = source.description if isinstance(source, DataSource) else str(data)
    ckpt, resume = None, Resume()
    if checkpointing.path is not None:
        ckpt, resume, cal = open_checkpoint(
            checkpointing.path, checkpointing.every, cal, model, data, batch_size=batch_size,
            max_samples=max_samples, data_options=data_opts.open_kwargs(),
            **({"quantized_only": True} if options.quantized_only else {}))
    # Plain runs consume each batch before the next is read: array sources reuse one buffer.
    batches = (source.batches(batch_size, max_samples, reuse_buffers=not overlap)
               if isinstance(source, ReaderSource) else source.batches(batch_size, max_samples))
    n = capture.run(
        batches, cal.update_many, source=desc, resume=resume, overlap=overlap,
        allow_nonfinite=allow_nonfinite, total=source.num_batches(batch_size, max_samples),
    )
    if ckpt is not None:
        ckpt.check_complete()  # a checkpoint claiming more batches than the data holds
    amax = cal.compute_amax()
    if ckpt is not None and not checkpointing.keep:
        ckpt.remove()
    warn_heavy_clipping(cal, amax)
    choice_counts = getattr(cal, "choice_counts", None)
    if callable(choice_counts) and amax:
        logger.info("auto calibration: %s", ", ".join(
            f"{n} tensor(s) took the {c} threshold" for c, n in choice_counts().items()))
    table = ScaleTable.from_amax(
        amax, method=cal.method, model=str(model), num_samples=n,
        algorithm=cal.cache_algorithm, trt_version=options.trt_version,
        settings={k: v for k, v in cal.settings().items() if k != "num_bins"},
    )
    return CalibrationResult(table, cal, n, list(amax))
