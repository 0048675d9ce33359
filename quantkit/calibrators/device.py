"""A thin device-memory layer for the legacy TensorRT calibrators.

TensorRT's ``get_batch`` callback wants device pointers
(``docs/tensorrt_rules.md#legacy-calibrators``), so the calibrators need to allocate device
memory and copy host arrays into it; the GPU runner of :mod:`quantkit.backends` needs the same.
This module hides the two Python CUDA bindings behind one small interface,
:class:`DeviceMemory` (``alloc``, ``copy_htod``, ``copy_dtoh``, ``synchronize``, ``free``):

* ``pycuda`` when it is installed (what many TensorRT users have), else
* ``cuda-python`` (``from cuda.bindings import runtime``, or ``from cuda import cudart`` for
  cuda-python < 12.6), which NVIDIA's own samples use since TensorRT 8.6/10.

Both are imported lazily, on the first call of :func:`default_device_memory`, never when this
module is imported. Every cuda-python call's return code is checked; a failure raises
:class:`~quantkit.errors.PipelineError` naming the CUDA error (``cudaErrorMemoryAllocation``...).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from quantkit.errors import MissingExtraError, PipelineError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "pycuda", "cuda-python"]


@dataclass(frozen=True)
class DeviceBuffer:
    """One device allocation.

    Attributes:
        ptr: the device address, as TensorRT wants it in ``get_batch``'s result.
        nbytes: the allocation's size in bytes.
        handle: whatever owns the allocation in the binding (a pycuda ``DeviceAllocation``;
            nothing for cuda-python, whose pointers are plain ints). Kept so the allocation
            lives as long as this object.
    """

    ptr: int
    nbytes: int
    handle: Any = field(default=None, repr=False, compare=False)


@runtime_checkable
class DeviceMemory(Protocol):
    """What the calibrators need from a CUDA binding."""

    #: short name for logs: ``"pycuda"``, ``"cuda-python"``, ...
    name: str

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """Allocate ``nbytes`` of device memory."""
        ...

    def copy_htod(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        """Copy the C-contiguous host ``array`` to the start of ``buf``."""
        ...

    def copy_dtoh(self, out: np.ndarray, buf: DeviceBuffer) -> None:
        """Copy ``out.nbytes`` bytes from the start of ``buf`` into the C-contiguous ``out``."""
        ...

    def synchronize(self) -> None:
        """Wait until every copy issued so far has reached the device."""
        ...

    def free(self, buf: DeviceBuffer) -> None:
        """Release ``buf``; it must not be used afterwards."""
        ...


def _check_copy(buf: DeviceBuffer, array: np.ndarray) -> None:
    # Programming errors, not user errors: the calibrator sizes buffers itself.
    if not array.flags.c_contiguous:
        raise ValueError("device copies need a C-contiguous host array")
    if array.nbytes > buf.nbytes:
        raise ValueError(
            f"copy of {array.nbytes} bytes does not fit the {buf.nbytes}-byte device buffer"
        )


class CudaPythonMemory:
    """:class:`DeviceMemory` through cuda-python's runtime API (``cudaMalloc``/``cudaMemcpy``).

    The runtime API works in the device's primary context, the one TensorRT, PyTorch and CuPy
    use, so no context handling is needed.

    Args:
        cudart: the imported ``cuda.bindings.runtime`` (or old ``cuda.cudart``) module.
    """

    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self._rt = cudart

    def _check(self, result: Any, call: str) -> tuple[Any, ...]:
        """Raise :class:`PipelineError` unless ``result[0]`` is ``cudaSuccess``."""
        rt = self._rt
        res = tuple(result) if isinstance(result, tuple) else (result,)
        err = res[0]
        if err == rt.cudaError_t.cudaSuccess:
            return res[1:]
        name = getattr(err, "name", None) or f"CUDA error {int(err)}"
        desc = ""
        try:
            got = rt.cudaGetErrorString(err)
            text = got[1] if isinstance(got, tuple) else got
            desc = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the error name alone is still a useful message
            desc = ""
        detail = f" ({desc})" if desc else ""
        raise PipelineError(
            f"CUDA call {call} failed with {name}{detail}. Check that an NVIDIA GPU and driver "
            "are present (nvidia-smi) and that the GPU has enough free memory."
        )

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """Allocate ``nbytes`` (at least 1) with ``cudaMalloc``."""
        size = max(int(nbytes), 1)
        (ptr,) = self._check(self._rt.cudaMalloc(size), f"cudaMalloc({size})")
        return DeviceBuffer(ptr=int(ptr), nbytes=size)

    def copy_htod(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        """Copy ``array`` to ``buf`` with a synchronous ``cudaMemcpy``."""
        _check_copy(buf, array)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._rt.cudaMemcpy(buf.ptr, array.ctypes.data, array.nbytes, kind),
            f"cudaMemcpy(HostToDevice, {array.nbytes} bytes)",
        )

    def copy_dtoh(self, out: np.ndarray, buf: DeviceBuffer) -> None:
        """Copy ``buf`` into ``out`` with a synchronous ``cudaMemcpy``."""
        _check_copy(buf, out)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self._rt.cudaMemcpy(out.ctypes.data, buf.ptr, out.nbytes, kind),
            f"cudaMemcpy(DeviceToHost, {out.nbytes} bytes)",
        )

    def synchronize(self) -> None:
        """``cudaDeviceSynchronize``."""
        self._check(self._rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize()")

    def free(self, buf: DeviceBuffer) -> None:
        """``cudaFree``."""
        self._check(self._rt.cudaFree(buf.ptr), "cudaFree()")


class PyCudaMemory:
    """:class:`DeviceMemory` through pycuda's driver API.

    pycuda needs a current CUDA context. If none is current, the device's primary context is
    made current (``pycuda.autoprimaryctx``, shared with TensorRT and the runtime API); very old
    pycuda without it falls back to ``pycuda.autoinit``.

    Args:
        driver: the imported ``pycuda.driver`` module.
    """

    name = "pycuda"

    def __init__(self, driver: Any) -> None:
        self._drv = driver
        driver.init()
        if driver.Context.get_current() is None:
            try:
                importlib.import_module("pycuda.autoprimaryctx")
            except ImportError:
                importlib.import_module("pycuda.autoinit")

    def _wrap(self, err: Exception, call: str) -> PipelineError:
        return PipelineError(
            f"pycuda call {call} failed: {err}. Check that an NVIDIA GPU and driver are present "
            "(nvidia-smi) and that the GPU has enough free memory."
        )

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """Allocate ``nbytes`` (at least 1) with ``pycuda.driver.mem_alloc``."""
        size = max(int(nbytes), 1)
        try:
            handle = self._drv.mem_alloc(size)
        except self._drv.Error as err:
            raise self._wrap(err, f"mem_alloc({size})") from err
        return DeviceBuffer(ptr=int(handle), nbytes=size, handle=handle)

    def copy_htod(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        """``pycuda.driver.memcpy_htod``."""
        _check_copy(buf, array)
        try:
            self._drv.memcpy_htod(buf.ptr, array)
        except self._drv.Error as err:
            raise self._wrap(err, "memcpy_htod") from err

    def copy_dtoh(self, out: np.ndarray, buf: DeviceBuffer) -> None:
        """``pycuda.driver.memcpy_dtoh``."""
        _check_copy(buf, out)
        try:
            self._drv.memcpy_dtoh(out, buf.ptr)
        except self._drv.Error as err:
            raise self._wrap(err, "memcpy_dtoh") from err

    def synchronize(self) -> None:
        """``pycuda.driver.Context.synchronize``."""
        try:
            self._drv.Context.synchronize()
        except self._drv.Error as err:
            raise self._wrap(err, "Context.synchronize") from err

    def free(self, buf: DeviceBuffer) -> None:
        """Free the ``DeviceAllocation`` behind ``buf``."""
        if buf.handle is None:
            return
        try:
            buf.handle.free()
        except self._drv.Error as err:
            raise self._wrap(err, "DeviceAllocation.free") from err


def import_cudart() -> Any:
    """Import cuda-python's runtime module (new layout first, then cuda-python < 12.6).

    Raises:
        ImportError: cuda-python is not installed (or has neither layout).
    """
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def default_device_memory(backend: Backend = "auto") -> DeviceMemory:
    """Pick the CUDA binding for device buffers: pycuda if installed, else cuda-python.

    Args:
        backend: ``"auto"`` (pycuda, then cuda-python), ``"pycuda"`` or ``"cuda-python"``.

    Raises:
        MissingExtraError: neither binding (or not the one asked for) is installed.
        PipelineError: the binding is installed but could not start (e.g. no CUDA driver).
    """
    if backend not in ("auto", "pycuda", "cuda-python"):
        raise ValueError(f"unknown device-memory backend {backend!r}")
    failures: list[str] = []
    if backend in ("auto", "pycuda"):
        try:
            driver = importlib.import_module("pycuda.driver")
        except ImportError as err:
            failures.append(f"pycuda: {err}")
        else:
            try:
                mem: DeviceMemory = PyCudaMemory(driver)
            except Exception as err:
                raise PipelineError(
                    f"pycuda is installed but could not initialise CUDA: {err}. Check that an "
                    "NVIDIA GPU and driver are present (nvidia-smi)."
                ) from err
            logger.debug("device buffers through pycuda")
            return mem
    if backend in ("auto", "cuda-python"):
        try:
            cudart = import_cudart()
        except ImportError as err:
            failures.append(f"cuda-python: {err}")
        else:
            logger.debug("device buffers through cuda-python (%s)", cudart.__name__)
            return CudaPythonMemory(cudart)
    logger.debug("no CUDA binding: %s", "; ".join(failures))
    if backend == "pycuda":
        raise MissingExtraError("TensorRT calibration's device memory", "tensorrt", "pycuda")
    raise MissingExtraError(
        "TensorRT calibration's device memory (pycuda, or cuda-python instead; neither is "
        "installed)",
        "cuda-python",
        "cuda-python",
    )
