"""The overlapped calibration loop: read, run and histogram three batches at once.

:meth:`ActivationCapture.run <quantkit.capture.runner.ActivationCapture.run>` with
``overlap=True`` (what :func:`quantkit.capture.calibrate` uses) hands the work to
:func:`run_overlapped`:

* a reader thread reads and validates batch N+2 (``.npz``/``.npy`` reads and the input
  checks release the GIL) and waits in a queue of one batch;
* the calling thread runs ONNX Runtime on batch N+1;
* a sink thread folds batch N's activations into the statistics (the histogram threads).

A capture that runs in stages (:mod:`quantkit.capture.staged`) overlaps the same way, one
stage at a time: stage k of a batch is folded while ONNX Runtime runs stage k+1 (or the next
batch's first stage). So at most two parts of activations exist at once -- the one being
folded and the one ONNX Runtime is producing, each a whole batch's in one pass or a stage's --
and each part takes at most half the memory budget
(:data:`quantkit.capture.staged.STAGE_SHARE`; a stage also keeps the boundary tensors that
later stages read, as the plain loop does). One thread folds the parts, in the order ONNX
Runtime produced them, so each tensor still sees its batches in data order, one at a time: the
statistics -- and the scales -- are bit-identical to the plain loop's
(``tests/capture/test_speed.py``).

Threads (:func:`split_threads`): ONNX Runtime keeps its intra-op threads, and the statistics
are folded by ``cpus - ort_threads`` threads, at least one, so the two pools together stay at
the CPU count plus at most one.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from quantkit._log import track
from quantkit.calibrators import expect_binned_values
from quantkit.data.base import InputSpec, batch_samples, static_batch_chunks, validate_batch
from quantkit.errors import InputError

#: batches read ahead of the one ONNX Runtime runs (each is one batch of inputs in memory)
READ_AHEAD = 1


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def split_threads(ort_threads: int | None, cpus: int | None = None) -> int:
    """Threads that fold statistics while ONNX Runtime runs with ``ort_threads`` threads.

    ``QUANTKIT_UPDATE_THREADS`` wins when set; else the CPUs ONNX Runtime leaves free, at
    least one (ONNX Runtime's default is one thread per CPU).
    """
    env = os.environ.get("QUANTKIT_UPDATE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = cpu_count() if cpus is None else cpus
    return max(1, cpus - (ort_threads or cpus))


def check_inputs(batch: Mapping[str, np.ndarray], source: str, allow_nonfinite: bool,
                 samples: int) -> None:
    """Refuse NaN/Inf in float inputs (unless allowed); ``samples``: good samples before."""
    if allow_nonfinite:
        return
    for name, arr in batch.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(
                f"data {source}: input '{name}' contains NaN or Inf values (after {samples} "
                "good samples). Clean the data, or pass allow_nonfinite=True to skip non-finite "
                "values during calibration."
            )


class _Reader:
    """Reads and validates batches in a thread, one batch ahead (a bounded queue)."""

    _END = object()

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], inputs: list[InputSpec],
                 source: str, allow_nonfinite: bool) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD)
        self._stop = threading.Event()
        self._args = (batches, inputs, source, allow_nonfinite)
        # the caller's context: validate_batch reads context variables (allow_cast)
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._work,),
                                        name="quantkit-read", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        batches, inputs, source, allow_nonfinite = self._args
        samples = 0
        iterator = iter(batches)
        try:
            for raw in iterator:
                batch = validate_batch(raw, inputs, source)
                check_inputs(batch, source, allow_nonfinite, samples)
                samples += batch_samples(batch, inputs, fed=True)
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as err:  # handed to the consumer, raised there in order
            self._put(err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _in_order(reader: _Reader, pending: list[Future[None]]
              ) -> Iterator[dict[str, np.ndarray]]:
    """The reader's batches, its errors raised after the folding batch's own.

    A batch being folded comes first in data order, so its error wins, as in the plain loop.
    """
    try:
        yield from reader
    except BaseException:
        for folding in pending:
            folding.result()
        raise


def run_overlapped(capture: Any, batches: Iterable[Mapping[str, np.ndarray]],
                   sink: Callable[..., None], *, source: str, allow_nonfinite: bool,
                   total: int | None, description: str, threads: int | None = None) -> int:
    """The loop of ``capture.run`` with reading, inference and folding overlapped.

    Args:
        capture: the :class:`~quantkit.capture.runner.ActivationCapture`.
        batches: the data, batch by batch (each batch a new array: nothing may reuse a
            buffer that a batch still being folded holds).
        sink: ``sink(activations, threads=n)`` (:meth:`Calibrator.update_many`).
        source: the data's description for messages.
        allow_nonfinite: let NaN/Inf inputs through.
        total: number of batches, for the progress bar.
        description: progress bar label.
        threads: threads that fold statistics (default :func:`split_threads`).

    Returns:
        The number of samples.
    """
    folders = split_threads(capture.threads) if threads is None else threads
    reader = _Reader(batches, capture.inputs, source, allow_nonfinite)
    pending: list[Future[None]] = []  # the batch or stage being folded (at most one)
    samples = first_values = 0
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="quantkit-fold") as folding:
            for batch in track(_in_order(reader, pending), total=total,
                               description=description):
                for chunk in static_batch_chunks(batch, capture.inputs):
                    capture.chunk_samples = batch_samples(chunk, capture.inputs, fed=True)
                    for part in capture.parts(chunk):  # ONNX Runtime runs here ...
                        while pending:  # ... while the previous batch or stage is folded
                            pending.pop().result()
                        if total is not None and not samples:  # first batch: the run's size
                            first_values += sum(a.size for a in part.values())  # all stages
                            expect_binned_values(total * first_values)
                        pending.append(folding.submit(sink, part, threads=folders))
                    samples += capture.chunk_samples
            while pending:
                pending.pop().result()
    finally:
        reader.close()
        expect_binned_values(None)
    return samples
