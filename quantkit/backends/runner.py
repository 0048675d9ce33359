"""Run a TensorRT / TensorRT-RTX engine on a GPU: a thin layer over TensorRT's runtime API.

``Runtime.deserialize_cuda_engine`` -> ``create_execution_context`` -> per I/O tensor a device
buffer (through :mod:`quantkit.calibrators.device`: pycuda if installed, else cuda-python) and
``set_tensor_address`` -> ``execute_async_v3`` on a CUDA stream -> copy the outputs back. Latency
is timed with CUDA events around ``execute_async_v3`` (warm-up runs first; p50/p90/p99).

This needs an NVIDIA GPU with a driver and, for TensorRT-RTX engines, a GPU the engine was
built for (compute capability 8.0/8.6/8.9/12.x, not 9.0:
docs/tensorrt_rules.md#running-engines). Engines with data-dependent output shapes (which
need an ``IOutputAllocator``) are not supported.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from quantkit.backends._trt_logging import capturing, error_lines, logger_for
from quantkit.backends.base import LatencyStats, Runner
from quantkit.backends.sidecar import as_shape
from quantkit.calibrators.device import (
    DeviceBuffer,
    DeviceMemory,
    default_device_memory,
    import_cudart,
)
from quantkit.errors import InputError, PipelineError

if TYPE_CHECKING:
    import tensorrt as trt

logger = logging.getLogger(__name__)

__all__ = ["MeasuredLatency", "TrtRunner", "gpu_name", "measure_engine", "open_runner"]


class _CudaPythonStreams:
    """Streams and events through cuda-python's runtime API."""

    def __init__(self) -> None:
        self._rt = import_cudart()

    def _ok(self, result: Any, call: str) -> Any:
        res = tuple(result) if isinstance(result, tuple) else (result,)
        if res[0] != self._rt.cudaError_t.cudaSuccess:
            raise PipelineError(f"CUDA call {call} failed with {getattr(res[0], 'name', res[0])}")
        return res[1] if len(res) > 1 else None

    def stream(self) -> Any:
        return self._ok(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    def handle(self, stream: Any) -> int:
        return int(stream)

    def sync(self, stream: Any) -> None:
        self._ok(self._rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def event(self) -> Any:
        return self._ok(self._rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, event: Any, stream: Any) -> None:
        self._ok(self._rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        self._ok(self._rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(self._ok(self._rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def destroy(self, stream: Any, events: list[Any]) -> None:
        for ev in events:
            self._rt.cudaEventDestroy(ev)
        self._rt.cudaStreamDestroy(stream)


class _PyCudaStreams:
    """Streams and events through pycuda (its context is made current by PyCudaMemory)."""

    def __init__(self) -> None:
        self._drv = importlib.import_module("pycuda.driver")

    def stream(self) -> Any:
        return self._drv.Stream()

    def handle(self, stream: Any) -> int:
        return int(stream.handle)

    def sync(self, stream: Any) -> None:
        stream.synchronize()

    def event(self) -> Any:
        return self._drv.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(start.time_till(end))

    def destroy(self, stream: Any, events: list[Any]) -> None:
        """Nothing to do: pycuda frees streams and events when they are garbage collected."""


class TrtRunner:
    """A deserialized engine with an execution context, ready to run on numpy inputs.

    Args:
        trt_mod: the ``tensorrt`` or ``tensorrt_rtx_bindings`` module.
        engine: path of a serialized engine (or its bytes).
        backend: backend name, for messages.
        device_memory: a :class:`~quantkit.calibrators.device.DeviceMemory`; default pycuda,
            else cuda-python.
    """

    def __init__(self, trt_mod: ModuleType, engine: str | os.PathLike[str] | bytes, *,
                 backend: str = "tensorrt", device_memory: DeviceMemory | None = None) -> None:
        self._trt = trt_mod
        self.backend = backend
        if isinstance(engine, bytes):
            data = engine
        else:
            try:
                data = Path(engine).read_bytes()
            except OSError as err:
                raise InputError(f"{engine}: cannot read the engine: {err}") from err
        self._mem = device_memory or default_device_memory()
        self._cuda: _CudaPythonStreams | _PyCudaStreams = (
            _PyCudaStreams() if self._mem.name == "pycuda" else _CudaPythonStreams())
        log = logger_for(trt_mod)
        with capturing(log) as sink:
            self._runtime: trt.Runtime = trt_mod.Runtime(log)
            engine_obj: trt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(data)
            if engine_obj is None:
                raise PipelineError(
                    f"{backend} could not load the engine: " + "; ".join(error_lines(sink))
                    + ". An engine runs only with the TensorRT version that built it, on a GPU "
                    "it was built for."
                )
            self._engine: trt.ICudaEngine = engine_obj
            self._context: trt.IExecutionContext = engine_obj.create_execution_context()
        names = [engine_obj.get_tensor_name(i) for i in range(engine_obj.num_io_tensors)]
        is_input = {n: engine_obj.get_tensor_mode(n) == trt_mod.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt_mod.nptype(engine_obj.get_tensor_dtype(n)))
                        for n in names}
        self._buffers: dict[str, DeviceBuffer] = {}
        self._stream = self._cuda.stream()
        self._events = [self._cuda.event(), self._cuda.event()]

    # -- running -------------------------------------------------------------------------------

    def _buffer(self, name: str, nbytes: int) -> DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                self._mem.free(buf)
            buf = self._mem.alloc(nbytes)
            self._buffers[name] = buf
            self._context.set_tensor_address(name, buf.ptr)
        return buf

    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the device, set shapes and addresses; return empty output arrays."""
        missing = [n for n in self.inputs if n not in feeds]
        unknown = [n for n in feeds if n not in self.inputs]
        if missing or unknown:
            raise InputError(f"engine inputs are {', '.join(self.inputs)}; missing "
                             f"{missing or 'none'}, unknown {unknown or 'none'}.")
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            if not self._context.set_input_shape(name, arr.shape):
                lo, _, hi = self._engine.get_tensor_profile_shape(name, 0)
                raise InputError(f"input '{name}' shape {list(arr.shape)} is outside the "
                                 f"engine's profile (min {list(as_shape(lo))}, max "
                                 f"{list(as_shape(hi))}).")
            self._mem.copy_htod(self._buffer(name, arr.nbytes), arr)
        outs: dict[str, np.ndarray] = {}
        for name in self.outputs:
            shape = as_shape(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise PipelineError(f"output '{name}' has a data-dependent shape {list(shape)}; "
                                    "the runner does not support such engines.")
            outs[name] = np.empty(shape, dtype=self._dtypes[name])
            self._buffer(name, outs[name].nbytes)
        return outs

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._cuda.handle(self._stream)):
            raise PipelineError(f"{self.backend}: execute_async_v3 failed (see the log above).")

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``feeds`` maps every input name to a host array."""
        outs = self._prepare(feeds)
        self._execute()
        self._cuda.sync(self._stream)
        for name, arr in outs.items():
            self._mem.copy_dtoh(arr, self._buffers[name])
        return outs

    __call__ = infer

    def latency(self, feeds: Mapping[str, np.ndarray], *, warmup: int = 10,
                iterations: int = 100, repeats: int = 1) -> LatencyStats:
        """Time ``execute_async_v3`` with CUDA events (inputs stay on the device).

        ``repeats`` rounds of ``iterations`` timed runs each give the median's spread.
        """
        if iterations < 1 or warmup < 0 or repeats < 1:
            raise InputError("latency needs iterations >= 1, repeats >= 1 and warmup >= 0.")
        self._prepare(feeds)
        for _ in range(warmup):
            self._execute()
        self._cuda.sync(self._stream)
        start, end = self._events
        rounds = []
        for _ in range(repeats):
            times = np.empty(iterations, dtype=np.float64)
            for i in range(iterations):
                self._cuda.record(start, self._stream)
                self._execute()
                self._cuda.record(end, self._stream)
                times[i] = self._cuda.elapsed_ms(start, end)
            rounds.append(times)
        batch = max((int(a.shape[0]) for a in feeds.values() if a.ndim), default=1)
        return LatencyStats.from_repeats(rounds, warmup=warmup, batch_size=batch,
                                         timer="cuda-events")

    def layer_info(self) -> str:
        """The engine inspector's JSON (layer names, precisions, tactics where recorded)."""
        inspector = self._engine.create_engine_inspector()
        inspector.execution_context = self._context
        return str(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Free device buffers, the stream and events, and the TensorRT objects."""
        for buf in self._buffers.values():
            self._mem.free(buf)
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cuda.destroy(self._stream, self._events)
            self._stream = None
        for attr in ("_context", "_engine", "_runtime"):  # context before engine before runtime
            if hasattr(self, attr):
                delattr(self, attr)

    def __enter__(self) -> TrtRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_runner(engine: str | os.PathLike[str], backend: str | None = None,
                **kwargs: Any) -> Runner:
    """Load ``engine`` with the backend its sidecar names (or ``backend``)."""
    from quantkit.backends.base import get_backend
    from quantkit.backends.sidecar import read_sidecar, sidecar_path

    if backend is None:
        if not sidecar_path(engine).exists():
            raise InputError(f"{engine}: no sidecar {sidecar_path(engine).name} to tell which "
                             "backend built it; pass backend='tensorrt' or 'tensorrt-rtx'.")
        backend = str(read_sidecar(engine)["backend"])
    return get_backend(backend).runner(engine, **kwargs)


def gpu_name(device: int = 0) -> str | None:
    """The name of CUDA device ``device`` (``NVIDIA H100 80GB HBM3``), or ``None`` without one.

    Asks pycuda when installed, else cuda-python; any failure (no binding, no driver, no GPU)
    is ``None``. Unverified on real hardware in this repository's CI (no GPU there).
    """
    try:
        drv = importlib.import_module("pycuda.driver")
        drv.init()
        if drv.Device.count() <= device:
            return None
        return str(drv.Device(device).name())
    except Exception:  # noqa: BLE001 - no pycuda, no driver or no GPU: try cuda-python
        pass
    try:
        rt = import_cudart()
        err, count = rt.cudaGetDeviceCount()
        if err != rt.cudaError_t.cudaSuccess or count <= device:
            return None
        err, props = rt.cudaGetDeviceProperties(device)
        if err != rt.cudaError_t.cudaSuccess:
            return None
        name = props.name
        return (name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)).strip()
    except Exception:  # noqa: BLE001 - no binding or no driver
        return None


@dataclass(frozen=True)
class MeasuredLatency:
    """An engine timed on a GPU: the statistics and the GPU's name (``measured`` latency)."""

    stats: LatencyStats
    gpu: str
    backend: str

    @property
    def label(self) -> str:
        """``measured, NVIDIA L4, batch 8``."""
        return f"measured, {self.gpu}, batch {self.stats.batch_size}"


def measure_engine(engine: str | os.PathLike[str], feeds: Mapping[str, np.ndarray], *,
                   warmup: int = 10, iterations: int = 100, repeats: int = 3,
                   backend: str | None = None) -> MeasuredLatency | None:
    """Time a built engine on the GPU with CUDA events, or ``None`` where it cannot run here.

    ``None`` means no GPU (or no CUDA binding); an engine that does not load on the GPU that is
    present raises (:class:`~quantkit.errors.PipelineError`). The batch size is the first axis
    of ``feeds``. Not yet verified on a GPU by quantkit's own tests (``@pytest.mark.gpu``).
    """
    name = gpu_name()
    if name is None:
        return None
    runner = open_runner(engine, backend)
    try:
        if not isinstance(runner, TrtRunner):
            raise PipelineError(f"{engine}: the backend's runner cannot time engines.")
        stats = runner.latency(feeds, warmup=warmup, iterations=iterations, repeats=repeats)
        return MeasuredLatency(stats, name, runner.backend)
    finally:
        runner.close()
