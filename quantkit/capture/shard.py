"""Sharded calibration: split the data into batch ranges, calibrate them apart, merge.

A shard is ``(data spec, batch range)``: batches ``lo..hi`` of the batch sequence that a
single-process :func:`~quantkit.capture.calibrate` would read (same ``batch_size``,
``max_samples`` and ``seed``). :func:`calibrate_shard` is a pure function of a
:class:`ShardTask` returning the calibrator's mergeable :meth:`~Calibrator.state`, so any
executor (in-process, a process pool, Ray tasks) can run it; it never knows which one does.

Why the result is identical, bit for bit, to one sequential pass:

* Histogram calibrators fix each tensor's bin width from the first batch that has a non-zero
  value (:mod:`quantkit.calibrators.histogram`). The driver therefore calibrates a prefix of
  the data itself -- batch 0, and further batches while a tensor has seen only zeros -- and
  seeds every shard with :meth:`~Calibrator.empty_like` of that calibrator: all shards bin with
  the single-process run's widths, and integer counts add up in any order.
* Min/max statistics merge with ``max``, which is exact.
* Shards are merged into the prefix calibrator in data order, so tensors keep their first-seen
  order (the order of the scales JSON / TensorRT cache).
* The rare case the prefix cannot settle (a tensor all-zero over the whole prefix and given
  different widths by two shards) is detected by :meth:`~Calibrator.merge`, and the run falls
  back to a single pass, so the output is still the single-process one.

Reading a shard's batches: sources of known length read by index (``.npz``, ``.npy``, arrays
in memory, map-style Hugging Face datasets) and image folders (by file list) read only the
shard's samples; other sources of known length are read from the start and the batches before
the shard skipped (not run through the model). Sources of unknown length (streams, generators)
cannot be split: they are calibrated in one pass on the driver, with a warning.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantkit.calibrators import DEFAULT_METHOD
from quantkit.calibrators.base import Calibrator, create_calibrator, get_calibrator_class
from quantkit.calibrators.cache import DEFAULT_TRT_VERSION, ScaleTable
from quantkit.data.base import Batch, DataSource, InputLayout, check_batch_args, validate_batch
from quantkit.errors import InputError, PipelineError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """One shard of a calibration run: everything a worker needs, as plain data.

    Paths (model, data, plugins) must be readable where the task runs: on a multi-node
    cluster, a shared file system or the same paths on every node.
    """

    model: str
    data: Any
    method: str
    batch_range: tuple[int, int]
    batch_size: int = 32
    max_samples: int | None = None
    allow_nonfinite: bool = False
    method_options: Mapping[str, Any] = field(default_factory=dict)
    data_options: Mapping[str, Any] = field(default_factory=dict)
    seed_state: Mapping[str, Any] | None = None
    providers: Sequence[str] | None = None
    threads: int | None = None
    plugins: Sequence[str] = ()
    index: int = 0
    quantized_only: bool = False


def split_batches(lo: int, hi: int, shards: int) -> list[tuple[int, int]]:
    """Split batches ``lo..hi`` into at most ``shards`` contiguous, near-equal ranges."""
    n = hi - lo
    k = max(1, min(shards, n))
    if n <= 0:
        return []
    bounds = [lo + (n * i) // k for i in range(k + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def shard_batches(source: DataSource, batch_size: int, max_samples: int | None,
                  lo: int, hi: int) -> Iterator[Batch]:
    """Batches ``lo..hi`` of ``source.batches(batch_size, max_samples)``, read efficiently.

    Index-addressable sources read only the shard's samples; other sources are read from the
    start and the first ``lo`` batches dropped.
    """
    from quantkit.data.images import ImageFolderSource
    from quantkit.data.rows import ReaderSource, RowReader, iter_chunks, select_indices

    check_batch_args(batch_size, max_samples)
    if isinstance(source, ReaderSource):
        selection = select_indices(source._num, max_samples, source._seed)
        chunks = list(iter_chunks(selection, batch_size))[lo:hi]

        def read_rows() -> Iterator[Batch]:
            with source._open() as readers:
                for chunk in chunks:
                    batch = {name: read.into_buffer(chunk, batch_size)
                             if isinstance(read, RowReader) else read(chunk)
                             for name, read in readers.items()}
                    yield validate_batch(batch, source._inputs, source.description)

        return read_rows()
    if isinstance(source, ImageFolderSource):
        from quantkit.data.images import load_image, stack_samples

        selection = select_indices(len(source.files), max_samples, source._seed)
        file_chunks = list(iter_chunks(selection, batch_size))[lo:hi]

        def read_files() -> Iterator[Batch]:
            for chunk in file_chunks:
                paths = [source.files[int(i)] for i in chunk]
                samples = [source.preprocess.apply(load_image(p, source.description))
                           for p in paths]
                array = stack_samples(samples, paths, source.description, "image")
                yield validate_batch({source._name: array}, source._inputs,
                                     source.description)

        return read_files()
    from quantkit.data.hf import HFSource

    if isinstance(source, HFSource):  # map-style: only the shard's rows are read
        return source.batch_range(batch_size, max_samples, lo, hi)
    return itertools.islice(source.batches(batch_size, max_samples), lo, hi)


def _calibrator_for(task: ShardTask) -> Calibrator:
    from quantkit.calibrators.base import load_calibrator_plugin

    try:
        get_calibrator_class(task.method)
    except InputError:
        if not task.plugins:
            raise
        for plugin in task.plugins:  # a worker process has not loaded the driver's plugins
            load_calibrator_plugin(plugin)
    if task.seed_state is not None:
        # a private, writable copy: from_state keeps the arrays it is given, and the seed is
        # shared by every in-process shard (or read-only when Ray deserializes it)
        return Calibrator.from_state(copy.deepcopy(dict(task.seed_state)))
    return create_calibrator(task.method, allow_nonfinite=task.allow_nonfinite,
                             **dict(task.method_options))


def _run_shard(task: ShardTask, cal: Calibrator) -> int:
    from quantkit.capture.runner import ActivationCapture
    from quantkit.data import open_source

    capture = ActivationCapture(task.model, providers=task.providers, threads=task.threads,
                                layout=InputLayout.from_options(task.data_options),
                                quantized_only=task.quantized_only)
    source = open_source(task.data, capture.inputs, **dict(task.data_options))
    lo, hi = task.batch_range
    batches = shard_batches(source, task.batch_size, task.max_samples, lo, hi)
    return capture.run(batches, cal.update_many, source=source.description,
                       allow_nonfinite=task.allow_nonfinite, total=hi - lo,
                       description=f"shard {task.index}")


def calibrate_shard(task: ShardTask) -> dict[str, Any]:
    """Calibrate one shard; return ``{"index", "state", "samples", "seconds"}`` (plain data).

    The calibrator starts from ``task.seed_state`` (the driver's prefix calibrator, emptied)
    or, without one, fresh from ``task.method``.
    """
    start = time.perf_counter()
    cal = _calibrator_for(task)
    samples = _run_shard(task, cal)
    return {"index": task.index, "state": cal.state(), "samples": samples,
            "seconds": time.perf_counter() - start, "pid": os.getpid()}


def _unsettled(cal: Calibrator) -> bool:
    """Whether some tensor's histogram width is not fixed yet (only zeros seen so far)."""
    return any(isinstance(s, Mapping) and "hi0" in s and s["hi0"] is None
               for s in cal.state()["tensors"].values())


@dataclass
class ShardReport:
    """How a sharded run went (for benchmarks and logs)."""

    prefix_batches: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    fallback: str | None = None


def calibrate_sharded(model: str | os.PathLike[str], data: Any, *, executor: Any,
                      shards: int, method: str = DEFAULT_METHOD, batch_size: int = 32,
                      max_samples: int | None = None, allow_nonfinite: bool = False,
                      method_options: Mapping[str, Any] | None = None,
                      data_options: Mapping[str, Any] | None = None,
                      providers: Sequence[str] | None = None, threads: int | None = None,
                      trt_version: int = DEFAULT_TRT_VERSION,
                      plugins: Sequence[str] = (),
                      report: ShardReport | None = None, quantized_only: bool = False) -> Any:
    """:func:`~quantkit.capture.calibrate` with the data split into ``shards`` shards.

    The shards run on ``executor`` (anything with ``map_unordered``: see
    :mod:`quantkit.sweep.executor`); their states are merged here. The result -- scales,
    sample count, tensor order -- is identical to ``calibrate`` on the same arguments.

    Args:
        model: path of the FP32 ONNX model (readable by the workers).
        data: a path / ``hf:`` string, a :class:`~quantkit.data.DataSource` or arrays in memory.
        executor: runs the shards (``map_unordered``).
        shards: number of shards (fewer when there are fewer batches).
        method: calibration method.
        batch_size: samples per batch (shards are whole batches).
        max_samples: stop after this many samples.
        allow_nonfinite: skip NaN/Inf values instead of failing.
        method_options: options for the method.
        data_options: options for ``open_source``.
        providers: ONNX Runtime execution providers.
        threads: ONNX Runtime intra-op threads per shard (default: ONNX Runtime's choice).
        trt_version: version number written in the TensorRT cache header.
        plugins: calibrator plugin files for workers to load when ``method`` is a plugin's.
        report: filled with per-shard timings.
        quantized_only: only the activations quantized ops read (as ``calibrate``'s).
    """
    from quantkit.capture.runner import ActivationCapture, CalibrationResult, calibrate
    from quantkit.data import open_source

    if shards < 1:
        raise InputError(f"--shards {shards}: must be a positive integer.")
    check_batch_args(batch_size, max_samples)
    report = report if report is not None else ShardReport()
    common: dict[str, Any] = dict(
        method=method, batch_size=batch_size, max_samples=max_samples,
        allow_nonfinite=allow_nonfinite, method_options=dict(method_options or {}),
        data_options=dict(data_options or {}), providers=providers,
        quantized_only=quantized_only)

    def single(reason: str) -> CalibrationResult:
        report.fallback = reason
        logger.warning("calibrating in one pass on the driver: %s", reason)
        return calibrate(model, data, trt_version=trt_version, **common)

    capture = ActivationCapture(model, providers=providers, calibrating=True,
                                layout=InputLayout.from_options(data_options),
                                quantized_only=quantized_only)
    source = open_source(data, capture.inputs, **common["data_options"])
    total = source.num_batches(batch_size, max_samples)
    if isinstance(data, str | os.PathLike):
        spec: Any = str(data)
    elif isinstance(data, DataSource):
        spec = data
    else:  # arrays in memory: ship the opened source (plain arrays) to the workers
        from quantkit.data.rows import ReaderSource

        spec = source if isinstance(source, ReaderSource) else None
    if total is None or spec is None:
        return single("the data's length is unknown or it cannot be re-opened by a worker, "
                      "so it cannot be split into shards")
    base = dict(model=str(model), data=spec, plugins=tuple(plugins), threads=threads, **common)
    # the prefix: batch 0, and more while a histogram has seen only zeros
    cal = create_calibrator(method, allow_nonfinite=allow_nonfinite, **common["method_options"])
    samples, done = 0, 0
    prefix_cap = max(1, total // (2 * shards))
    while done < total and (done == 0 or (done < prefix_cap and _unsettled(cal))):
        samples += capture.run(shard_batches(source, batch_size, max_samples, done, done + 1),
                               cal.update_many, source=source.description,
                               allow_nonfinite=allow_nonfinite, total=1,
                               description="calibrating the first batch")
        done += 1
    report.prefix_batches = done
    seed = cal.empty_like().state()
    tasks = [ShardTask(batch_range=r, seed_state=seed, index=i, **base)
             for i, r in enumerate(split_batches(done, total, shards))]
    results: dict[int, dict[str, Any]] = {}
    for task, result in executor.map_unordered(calibrate_shard, tasks):
        if isinstance(result, BaseException):
            raise result
        results[task.index] = result
        logger.info("shard %d (batches %d-%d) done in %.2f s", task.index,
                    *task.batch_range, result["seconds"])
    try:
        for i in range(len(tasks)):  # data order: tensors keep their first-seen order
            cal.merge(Calibrator.from_state(results[i]["state"]))
            samples += int(results[i]["samples"])
    except PipelineError as err:  # two shards fixed different widths for an all-zero prefix
        return single(str(err))
    report.shards = [{k: v for k, v in results[i].items() if k != "state"}
                     for i in range(len(tasks))]
    if samples == 0:
        raise InputError(f"data {source.description}: contains no samples. Give at least one "
                         "sample.")
    amax = cal.compute_amax()
    table = ScaleTable.from_amax(
        amax, method=cal.method, model=str(model), num_samples=samples,
        algorithm=cal.cache_algorithm, trt_version=trt_version,
        settings={k: v for k, v in cal.settings().items() if k != "num_bins"},
    )
    return CalibrationResult(table, cal, samples, list(amax))
