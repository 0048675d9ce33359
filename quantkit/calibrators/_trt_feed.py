"""The TensorRT-independent logic of the legacy calibrators (see :mod:`.tensorrt`).

Batch regrouping, name/dtype/contiguity checks, device copies, cache I/O and error capture for
TensorRT's calibrator callbacks. Nothing here imports TensorRT, so it is tested on any machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from quantkit._io import write_bytes_atomic
from quantkit.calibrators.device import DeviceBuffer, DeviceMemory, default_device_memory
from quantkit.errors import InputError, PipelineError, QuantkitError

logger = logging.getLogger("quantkit.calibrators.tensorrt")  # one logger for the adapters

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from quantkit.data.base import DataSource


LastBatch = Literal["drop", "pad"]
_CACHE_HEADER = re.compile(rb"^TRT-(\d{1,8})-([A-Za-z0-9]+)\s*$")


class TensorRTCalibratorBase:
    """The TensorRT-independent part of the legacy calibrators.

    Implements TensorRT's calibrator callbacks (``docs/tensorrt_rules.md#legacy-calibrators``) on
    top of a quantkit :class:`~quantkit.data.base.DataSource`:

    * ``get_batch(names)`` takes the next batch, checks it holds every input TensorRT asks
      for, converts each array to the engine's dtype (float32 unless ``dtypes`` says otherwise)
      in C order, copies it into a device buffer allocated once per input (reallocated if a
      batch is bigger) and returns the pointers in the order of ``names``; ``None`` at the end.
    * TensorRT reads a whole batch from every pointer, so the source's batches (of any size)
      are regrouped into batches of exactly ``batch_size``. The final partial batch is
      **dropped** by default (logged), which leaves every statistic unbiased;
      ``last_batch="pad"`` fills it by repeating its own samples (MinMax is unaffected by
      repeats; histogram methods weight them more). Fewer samples than one batch is an error
      with ``"drop"``.
    * ``read_calibration_cache()`` returns the bytes of ``cache`` if the file exists, so a cache
      from ``quantkit calibrate`` or an earlier TensorRT build makes TensorRT skip calibration;
      ``write_calibration_cache(data)`` writes it atomically.
    * TensorRT swallows exceptions raised in these callbacks and takes them for the end of the
      data, so every callback catches, logs and stores its error and returns ``None``: call
      :meth:`raise_if_failed` after the build, or build inside ``with calibrator.guard():``.

    Args:
        source: where the calibration batches come from.
        batch_size: samples per batch handed to TensorRT. With TensorRT 10 (explicit-batch
            networks) every input's shape must match the calibration profile's (or the static)
            input shape, whose first axis must be ``batch_size``.
        input_names: the network's inputs. If given, TensorRT's request is checked against it
            and other arrays in the data are ignored quietly; if not, the names TensorRT asks
            for are used and other arrays are ignored with a warning.
        cache: calibration cache file, read before calibrating and written after it.
        max_samples: stop after this many samples.
        dtypes: ``{input name: numpy dtype}`` for inputs the engine does not take as float32
            (e.g. int32 token ids). Only safe conversions are done.
        last_batch: ``"drop"`` (default) or ``"pad"`` the final partial batch.
        device: the device-memory layer; default: pycuda if installed, else cuda-python
            (:func:`quantkit.calibrators.device.default_device_memory`).

    Raises:
        InputError: bad ``batch_size``, ``max_samples`` or ``last_batch``.
        MissingExtraError: neither pycuda nor cuda-python is installed.
    """

    #: algorithm written in the header of the cache TensorRT produces with this calibrator.
    cache_algorithm: ClassVar[str] = "EntropyCalibration2"

    def __init__(self, source: DataSource, *, batch_size: int,
                 input_names: Sequence[str] | None = None,
                 cache: str | os.PathLike[str] | None = None, max_samples: int | None = None,
                 dtypes: Mapping[str, npt.DTypeLike] | None = None,
                 last_batch: LastBatch = "drop", device: DeviceMemory | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be a positive integer.")
        if max_samples is not None and max_samples < 1:
            raise InputError(f"max_samples={max_samples!r}: must be a positive integer.")
        if last_batch not in ("drop", "pad"):
            raise InputError(f"last_batch={last_batch!r}: must be 'drop' or 'pad'.")
        self.source = source
        self.batch_size = batch_size
        self.input_names = tuple(input_names) if input_names is not None else None
        self.cache_path = Path(cache) if cache is not None else None
        self.max_samples = max_samples
        self.dtypes = {name: np.dtype(dt) for name, dt in (dtypes or {}).items()}
        self.last_batch: LastBatch = last_batch
        self.device: DeviceMemory = device if device is not None else default_device_memory()
        #: bytes TensorRT last passed to write_calibration_cache (``None`` before).
        self.written_cache: bytes | None = None
        #: whether read_calibration_cache handed TensorRT a cache (calibration skipped).
        self.cache_used = False
        self._buffers: dict[str, DeviceBuffer] = {}
        self.reset()

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start the data from the beginning and forget a stored error (buffers are kept)."""
        self._batches: Iterator[dict[str, np.ndarray]] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._error_callback = ""
        self._sample_shapes: dict[str, tuple[int, ...]] = {}
        self._warned_extra = False
        #: batches handed to TensorRT so far.
        self.batches_served = 0
        #: real samples handed to TensorRT (padding not counted).
        self.samples_served = 0
        #: samples repeated to pad the last batch (``last_batch="pad"``).
        self.samples_padded = 0
        #: samples of a final partial batch that were dropped (``last_batch="drop"``).
        self.samples_dropped = 0

    @property
    def error(self) -> BaseException | None:
        """The first exception a callback caught, or ``None``."""
        return self._error

    def raise_if_failed(self) -> None:
        """Re-raise the error a callback stored, if any.

        Raises:
            PipelineError: wrapping the stored error (its ``__cause__``); it keeps the stored
                error's exit code when that is a quantkit error (e.g. 2 for bad data).
                ``KeyboardInterrupt`` and ``SystemExit`` are re-raised unchanged.
        """
        err = self._error
        if err is None:
            return
        if not isinstance(err, Exception):
            raise err
        wrapped = PipelineError(
            f"TensorRT INT8 calibration failed in {self._error_callback}(): {err} TensorRT takes "
            "an error in a calibrator callback for the end of the data, so an engine built "
            f"anyway saw only {self.batches_served} calibration batch(es): do not use it."
        )
        if isinstance(err, QuantkitError):
            wrapped.exit_code = err.exit_code
        raise wrapped from err

    @contextlib.contextmanager
    def guard(self) -> Iterator[TensorRTCalibratorBase]:
        """Context manager around the build: frees the device buffers, then re-raises.

        ``with calibrator.guard(): plan = builder.build_serialized_network(network, config)``.
        An error stored by a callback is raised on exit (see :meth:`raise_if_failed`), also
        when the block itself raised (the block's exception becomes its ``__context__``).
        """
        try:
            yield self
        except BaseException:
            self.close()
            self.raise_if_failed()
            raise
        self.close()
        self.raise_if_failed()

    def close(self) -> None:
        """Free the device buffers (they are allocated again if TensorRT asks for a batch)."""
        buffers, self._buffers = self._buffers, {}
        for buf in buffers.values():
            self.device.free(buf)

    def __del__(self) -> None:
        # Best effort only: at interpreter exit the CUDA binding may already be gone.
        with contextlib.suppress(Exception):
            if getattr(self, "_buffers", None):
                self.close()

    def _capture(self, callback: str, err: BaseException) -> None:
        """Store and log an error raised inside a TensorRT callback (TensorRT would drop it)."""
        if self._error is None:
            self._error, self._error_callback = err, callback
        logger.error("TensorRT calibrator callback %s() failed: %s (raise_if_failed() re-raises "
                     "it after the build)", callback, err, exc_info=err)

    # -- TensorRT callbacks ---------------------------------------------------------------------
    def get_batch_size(self) -> int:
        """Samples per calibration batch."""
        return self.batch_size

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        """Device pointers to the next batch, one per name in ``names``; ``None`` at the end."""
        if self._done or self._error is not None:
            return None
        try:
            if self._batches is None:
                self._batches = self._exact_batches()
            batch = next(self._batches, None)
            if batch is None:
                self._done = True
                logger.info("calibration data exhausted: %d batch(es) of %d, %d sample(s) (%d "
                            "padded, %d dropped)", self.batches_served, self.batch_size,
                            self.samples_served, self.samples_padded, self.samples_dropped)
                return None
            pointers = self._upload(list(names), batch)
            self.batches_served += 1
            logger.debug("calibration batch %d handed to TensorRT", self.batches_served)
            return pointers
        except BaseException as err:  # TensorRT would swallow it: keep it for raise_if_failed
            self._done = True
            self._capture("get_batch", err)
            return None

    def read_calibration_cache(self) -> bytes | None:
        """The cache file's bytes if it exists (TensorRT then skips calibration), else ``None``."""
        try:
            path = self.cache_path
            if path is None:
                return None
            if not path.is_file():
                logger.info("no calibration cache at %s: TensorRT will calibrate", path)
                return None
            data = path.read_bytes()
            if not data.strip():
                logger.warning("calibration cache %s is empty: ignored, TensorRT will calibrate",
                               path)
                return None
            self._check_cache_header(path, data)
            self.cache_used = True
            logger.info("calibration cache %s read (%d lines): TensorRT skips calibration", path,
                        data.count(b"\n"))
            return data
        except BaseException as err:
            self._capture("read_calibration_cache", err)
            return None

    def write_calibration_cache(self, cache: Buffer) -> None:
        """Keep the cache TensorRT produced and write it atomically to ``cache`` if set."""
        try:
            data = bytes(memoryview(cache))
            self.written_cache = data
            if self.cache_path is None:
                logger.debug("TensorRT produced a calibration cache; no cache path to write it")
                return
            write_bytes_atomic(self.cache_path, data)
            logger.info("calibration cache written to %s", self.cache_path)
        except BaseException as err:
            self._capture("write_calibration_cache", err)

    # -- helpers ----------------------------------------------------------------------------
    def _check_cache_header(self, path: Path, data: bytes) -> None:
        # Cache format: docs/tensorrt_rules.md#calibration-cache-format. TensorRT itself decides
        # whether to use the file; we only warn about a mismatch it may reject or ignore.
        first = data.split(b"\n", 1)[0]
        match = _CACHE_HEADER.match(first)
        if match is None:
            logger.warning("%s does not start with a TensorRT cache header 'TRT-<version>-"
                           "<algorithm>': TensorRT may reject it", path)
        elif match.group(2).decode() != self.cache_algorithm:
            logger.warning("%s holds %s scales but this calibrator is %s: TensorRT may ignore "
                           "the cache, calibrate again and overwrite it", path,
                           match.group(2).decode(), self.cache_algorithm)

    def _exact_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Regroup the source's batches into batches of exactly ``batch_size`` samples."""
        size, desc = self.batch_size, self.source.description
        pending: list[dict[str, np.ndarray]] = []
        n_pending = 0
        keys: tuple[str, ...] | None = None
        for raw in self.source.batches(size, self.max_samples):
            batch = {name: np.asarray(arr) for name, arr in raw.items()}
            if keys is None:
                keys = tuple(batch)
            elif set(batch) != set(keys):
                raise InputError(f"data {desc}: a batch has the arrays {sorted(batch)} but the "
                                 f"first one had {sorted(keys)}; every batch needs the same "
                                 "inputs.")
            n = _num_samples(batch, desc)
            if n == 0:
                continue
            if n_pending == 0 and n == size:
                self.samples_served += size
                yield batch
                continue
            pending.append(batch)
            n_pending += n
            while n_pending >= size:
                merged = {k: np.concatenate([b[k] for b in pending]) for k in batch}
                self.samples_served += size
                yield {k: v[:size] for k, v in merged.items()}
                n_pending -= size
                pending = [{k: v[size:] for k, v in merged.items()}] if n_pending else []
        if not n_pending:
            if self.samples_served == 0:
                raise InputError(f"data {desc}: yielded no samples; TensorRT needs calibration "
                                 "data.")
            return
        tail = {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}
        if self.last_batch == "pad":
            # TensorRT reads a whole batch from each pointer: repeat the tail's own samples.
            index = np.arange(size) % n_pending
            self.samples_padded = size - n_pending
            self.samples_served += n_pending
            logger.info("last calibration batch has %d of %d samples: padded by repeating them",
                        n_pending, size)
            yield {k: v[index] for k, v in tail.items()}
            return
        self.samples_dropped = n_pending
        if self.samples_served == 0:
            raise InputError(
                f"data {desc}: only {n_pending} sample(s), fewer than batch_size={size}; TensorRT "
                "calibrates on whole batches. Lower batch_size (and the calibration profile's "
                "batch dimension) or pass last_batch='pad'."
            )
        logger.info("dropping the last %d sample(s): TensorRT needs whole batches of %d "
                    "(pass last_batch='pad' to use them)", n_pending, size)

    def _upload(self, names: list[str], batch: Mapping[str, np.ndarray]) -> list[int]:
        desc = self.source.description
        if self.input_names is not None and set(names) != set(self.input_names):
            raise InputError(
                f"TensorRT asks for the input(s) {', '.join(names)} but input_names lists "
                f"{', '.join(self.input_names)}. Pass the input names of the network being built."
            )
        for name in names:
            if name not in batch:
                raise InputError(
                    f"data {desc}: TensorRT asks for the input '{name}', which the data does not "
                    f"have (it has: {', '.join(batch) or 'nothing'}). Name the arrays/columns "
                    "after the network's inputs."
                )
        extra = sorted(set(batch) - set(names))
        if extra and self.input_names is None and not self._warned_extra:
            self._warned_extra = True
            logger.warning("data %s: array(s) %s are not network inputs and are ignored", desc,
                           ", ".join(extra))
        pointers = []
        for name in names:
            array = self._prepare(name, batch[name])
            buf = self._buffers.get(name)
            if buf is None or buf.nbytes < array.nbytes:
                if buf is not None:
                    self._buffers.pop(name)
                    self.device.free(buf)
                buf = self._buffers[name] = self.device.alloc(array.nbytes)
                logger.debug("device buffer for '%s': %d bytes", name, buf.nbytes)
            self.device.copy_htod(buf, array)
            pointers.append(buf.ptr)
        # TensorRT reads the buffers on its own stream once get_batch returns.
        self.device.synchronize()
        return pointers

    def _prepare(self, name: str, array: np.ndarray) -> np.ndarray:
        """Convert one input to the engine's dtype, C-contiguous; check its per-sample shape."""
        desc = self.source.description
        want = self.dtypes.get(name, np.dtype(np.float32))
        got = array.dtype
        safe = (
            (want.kind == "f" and got.kind in "fiub")
            or (want.kind in "iu" and got.kind in "iub")
            or (want.kind == "b" and got.kind == "b")
        )
        if not safe:
            raise InputError(f"data {desc}: input '{name}' has dtype {got} but the engine takes "
                             f"{want.name}. Convert the data, or pass dtypes={{'{name}': ...}}.")
        if want.kind in "iu" and got != want and array.size:
            info = np.iinfo(want)
            if array.min() < info.min or array.max() > info.max:
                raise InputError(f"data {desc}: input '{name}' has values outside the range of "
                                 f"{want.name}, the engine's dtype.")
        out = np.ascontiguousarray(array, dtype=want)
        if want.kind == "f" and not np.isfinite(out).all():
            raise InputError(f"data {desc}: input '{name}' holds NaN or Inf values (batch "
                             f"{self.batches_served + 1}); they would corrupt the INT8 scales.")
        shape = tuple(int(d) for d in out.shape[1:])
        first = self._sample_shapes.setdefault(name, shape)
        if shape != first:
            raise InputError(
                f"data {desc}: input '{name}' has samples of shape {shape} in batch "
                f"{self.batches_served + 1} but {first} before; TensorRT calibrates with one fixed "
                "shape per input (the calibration profile's)."
            )
        return out


def _num_samples(batch: Mapping[str, np.ndarray], desc: str) -> int:
    sizes = {}
    for name, arr in batch.items():
        if arr.ndim == 0:
            raise InputError(f"data {desc}: input '{name}' is a scalar; the first axis of every "
                             "array must be the sample axis.")
        sizes[name] = int(arr.shape[0])
    if len(set(sizes.values())) > 1:
        raise InputError(f"data {desc}: the arrays of one batch have different sample counts "
                         f"{sizes}; they must agree on the first axis.")
    return next(iter(sizes.values()), 0)


class LegacyCalibratorBase(TensorRTCalibratorBase):
    """:class:`TensorRTCalibratorBase` plus the legacy calibrator's extra callbacks.

    Args:
        quantile: ``get_quantile()``, in [0, 1].
        regression_cutoff: ``get_regression_cutoff()``, in [0, 1].
        **kwargs: as :class:`TensorRTCalibratorBase`.

    The histogram cache is not supported: ``read_histogram_cache`` returns ``None``.
    """

    cache_algorithm: ClassVar[str] = "LegacyCalibration"

    def __init__(self, source: DataSource, *, quantile: float = 0.5,
                 regression_cutoff: float = 0.5, **kwargs: Any) -> None:
        for flag, value in (("quantile", quantile), ("regression_cutoff", regression_cutoff)):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{flag}={value!r}: must be between 0 and 1.")
        self.quantile = float(quantile)
        self.regression_cutoff = float(regression_cutoff)
        super().__init__(source, **kwargs)

    def get_quantile(self) -> float:
        """The quantile TensorRT's legacy calibrator uses."""
        return self.quantile

    def get_regression_cutoff(self) -> float:
        """The regression cutoff TensorRT's legacy calibrator uses."""
        return self.regression_cutoff

    def read_histogram_cache(self, length: int) -> None:
        """No histogram cache: TensorRT computes the histograms."""
        return None

    def write_histogram_cache(self, ptr: int, length: int) -> None:
        """Histogram caches are not kept."""
        logger.debug("legacy calibrator: histogram cache (%d bytes) not kept", length)
