"""Tests of the legacy TensorRT calibrator adapters (quantkit.calibrators.tensorrt).

No TensorRT and no GPU exist on CI machines, so most tests drive the TensorRT-independent logic
(TensorRTCalibratorBase) the way TensorRT would, with a "device" layer made of host numpy buffers
(HostMemory below): the pointers it returns are host addresses, read back with ctypes. The thin
TensorRT subclasses are checked against a fake ``tensorrt`` module. The tests marked ``gpu`` use
real device memory through cuda-python and skip cleanly without cuda-python, a driver or a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from quantkit.calibrators import device as device_layer
from quantkit.calibrators import tensorrt as qtrt
from quantkit.calibrators.device import CudaPythonMemory, DeviceBuffer, default_device_memory
from quantkit.data.base import Batch, DataSource
from quantkit.errors import InputError, MissingExtraError, PipelineError


# -- helpers ------------------------------------------------------------------------------------
class ArraySource(DataSource):
    """A DataSource over in-memory arrays; ``chunks`` forces irregular batch sizes."""

    def __init__(self, arrays: dict[str, np.ndarray], chunks: list[int] | None = None,
                 fail_after: int | None = None, fail_with: BaseException | None = None) -> None:
        self.arrays = arrays
        self.chunks = chunks
        self.fail_after = fail_after
        self.fail_with = fail_with
        self.description = "test-arrays"

    @property
    def num_samples(self) -> int | None:
        return len(next(iter(self.arrays.values())))

    def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
        n = self.num_samples or 0
        if max_samples is not None:
            n = min(n, max_samples)
        sizes = list(self.chunks) if self.chunks else [batch_size] * (-(-n // batch_size))
        start = 0
        for i, size in enumerate(sizes):
            if self.fail_after is not None and i == self.fail_after:
                raise self.fail_with or RuntimeError("boom")
            stop = min(start + size, n)
            if start >= stop:
                return
            yield {k: v[start:stop] for k, v in self.arrays.items()}
            start = stop


class HostMemory:
    """A DeviceMemory whose "device" buffers are host numpy buffers (no GPU here)."""

    name = "host-test"

    def __init__(self) -> None:
        self.live: dict[int, np.ndarray] = {}
        self.allocs = 0
        self.frees = 0
        self.syncs = 0

    def alloc(self, nbytes: int) -> DeviceBuffer:
        mem = np.zeros(max(nbytes, 1), dtype=np.uint8)
        self.allocs += 1
        self.live[mem.ctypes.data] = mem
        return DeviceBuffer(ptr=mem.ctypes.data, nbytes=mem.nbytes, handle=mem)

    def copy_htod(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        assert array.flags.c_contiguous
        self.live[buf.ptr][: array.nbytes] = array.reshape(-1).view(np.uint8)

    def copy_dtoh(self, out: np.ndarray, buf: DeviceBuffer) -> None:
        out.reshape(-1).view(np.uint8)[:] = self.live[buf.ptr][: out.nbytes]

    def synchronize(self) -> None:
        self.syncs += 1

    def free(self, buf: DeviceBuffer) -> None:
        del self.live[buf.ptr]
        self.frees += 1


def read_host(ptr: int, like: np.ndarray) -> np.ndarray:
    """Copy ``like.nbytes`` bytes at host address ``ptr`` into an array shaped like ``like``."""
    out = np.empty_like(like)
    ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
    return out


def make(arrays: dict[str, np.ndarray], *, batch_size: int = 4, chunks: list[int] | None = None,
         **kwargs: Any) -> tuple[qtrt.TensorRTCalibratorBase, HostMemory]:
    mem = HostMemory()
    cal = qtrt.TensorRTCalibratorBase(ArraySource(arrays, chunks), batch_size=batch_size,
                                      device=mem, **kwargs)
    return cal, mem


def rng_arrays(n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, 3, 2)), "ids": rng.integers(0, 100, (n, 5))}


# -- import behaviour ---------------------------------------------------------------------------
def test_import_does_not_import_tensorrt_or_cuda() -> None:
    code = (
        "import sys, quantkit.calibrators.tensorrt as m\n"
        "bad = [k for k in ('tensorrt', 'pycuda', 'cuda', 'cuda.bindings') if k in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'EntropyCalibrator2' in m.__all__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # and in this process (nothing above or in this module imported it either)
    assert "tensorrt" not in sys.modules


def test_missing_tensorrt_raises_on_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    cls = qtrt.EntropyCalibrator2  # attribute access itself works
    with pytest.raises(MissingExtraError) as info:
        cls(ArraySource(rng_arrays()), batch_size=2, device=HostMemory())
    assert info.value.extra == "tensorrt" and info.value.module == "tensorrt"
    assert "TensorRT implicit INT8 calibration" in str(info.value)
    for name in ("MinMaxCalibrator", "EntropyCalibrator", "LegacyCalibrator"):
        with pytest.raises(MissingExtraError):
            getattr(qtrt, name)(ArraySource(rng_arrays()), batch_size=2, device=HostMemory())


def test_stub_only_namespace_package_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorrt-stubs installs a tensorrt/ folder with only .pyi files: it imports as an empty
    # namespace package, which must not be mistaken for TensorRT.
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(MissingExtraError):
        qtrt.MinMaxCalibrator(ArraySource(rng_arrays()), batch_size=2, device=HostMemory())


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = qtrt.NoSuchCalibrator  # type: ignore[attr-defined]
    with pytest.raises(InputError):
        qtrt.calibrator_class("Percentile")


# -- thin TensorRT subclasses against a fake tensorrt module -------------------------------------
def fake_tensorrt(with_calibrators: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0" if with_calibrators else "11.0.0"  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]
    if not with_calibrators:
        return trt

    class CalibrationAlgoType(enum.Enum):
        LEGACY_CALIBRATION = 0
        ENTROPY_CALIBRATION = 1
        ENTROPY_CALIBRATION_2 = 2
        MINMAX_CALIBRATION = 3

    class IInt8Calibrator:
        def __init__(self) -> None:
            self.trt_base_initialised = True

        def get_batch(self, names: list[str]) -> str:  # must be overridden by quantkit's
            return "base"

    trt.CalibrationAlgoType = CalibrationAlgoType  # type: ignore[attr-defined]
    trt.IInt8Calibrator = IInt8Calibrator  # type: ignore[attr-defined]
    for name in ("IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator",
                 "IInt8LegacyCalibrator"):
        setattr(trt, name, type(name, (IInt8Calibrator,), {}))
    return trt


@pytest.mark.parametrize(("public", "base", "algo", "header"), [
    ("EntropyCalibrator2", "IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2",
     "EntropyCalibration2"),
    ("EntropyCalibrator", "IInt8EntropyCalibrator", "ENTROPY_CALIBRATION", "EntropyCalibration"),
    ("MinMaxCalibrator", "IInt8MinMaxCalibrator", "MINMAX_CALIBRATION", "MinMaxCalibration"),
    ("LegacyCalibrator", "IInt8LegacyCalibrator", "LEGACY_CALIBRATION", "LegacyCalibration"),
])
def test_tensorrt_subclasses(monkeypatch: pytest.MonkeyPatch, public: str, base: str, algo: str,
                             header: str) -> None:
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cls = getattr(qtrt, public)
    assert cls is qtrt.calibrator_class(header)  # built once, found by cache algorithm too
    assert cls.__name__ == public and cls.__module__ == "quantkit.calibrators.tensorrt"
    arrays = rng_arrays(8)
    cal = cls(ArraySource(arrays), batch_size=4, device=HostMemory())
    assert isinstance(cal, getattr(trt, base)) and isinstance(cal, qtrt.TensorRTCalibratorBase)
    assert cal.trt_base_initialised
    assert cal.get_algorithm() is getattr(trt.CalibrationAlgoType, algo)
    assert cal.cache_algorithm == header
    assert cal.get_batch_size() == 4
    ptrs = cal.get_batch(["x"])  # quantkit's get_batch wins over the TensorRT base's
    assert isinstance(ptrs, list) and len(ptrs) == 1
    np.testing.assert_array_equal(read_host(ptrs[0], arrays["x"][:4].astype(np.float32)),
                                  arrays["x"][:4].astype(np.float32))


def test_tensorrt_11_without_calibrators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(with_calibrators=False))
    with pytest.raises(InputError, match="removed in TensorRT 11"):
        qtrt.EntropyCalibrator2(ArraySource(rng_arrays()), batch_size=2, device=HostMemory())


def test_legacy_extras() -> None:
    mem = HostMemory()
    cal = qtrt.LegacyCalibratorBase(ArraySource(rng_arrays()), batch_size=2, device=mem,
                                    quantile=0.9, regression_cutoff=0.25)
    assert (cal.get_quantile(), cal.get_regression_cutoff()) == (0.9, 0.25)
    assert cal.read_histogram_cache(0) is None
    cal.write_histogram_cache(0, 10)
    with pytest.raises(InputError, match="quantile"):
        qtrt.LegacyCalibratorBase(ArraySource(rng_arrays()), batch_size=2, device=mem,
                                  quantile=1.5)


# -- batches ------------------------------------------------------------------------------------
def test_batches_roundtrip_and_drop_last(caplog: pytest.LogCaptureFixture) -> None:
    arrays = rng_arrays(10)
    cal, mem = make(arrays, dtypes={"ids": np.int32})
    seen = []
    with caplog.at_level(logging.INFO, logger="quantkit.calibrators.tensorrt"):
        while (ptrs := cal.get_batch(["x", "ids"])) is not None:
            # read before the next get_batch: the buffers are reused for every batch
            i = len(seen)
            want_x = arrays["x"][4 * i: 4 * i + 4].astype(np.float32)
            want_ids = arrays["ids"][4 * i: 4 * i + 4].astype(np.int32)
            assert read_host(ptrs[0], want_x).tobytes() == want_x.tobytes()  # bit for bit
            assert read_host(ptrs[1], want_ids).tobytes() == want_ids.tobytes()
            seen.append(ptrs)
    assert len(seen) == 2 and cal.error is None
    assert seen[0] == seen[1]  # one buffer per input, allocated once
    assert mem.allocs == 2 and mem.syncs == 2
    assert (cal.batches_served, cal.samples_served, cal.samples_dropped) == (2, 8, 2)
    assert "dropping the last 2 sample(s)" in caplog.text
    assert cal.get_batch(["x", "ids"]) is None  # stays at the end
    cal.raise_if_failed()
    cal.close()
    assert mem.frees == 2 and not mem.live


def test_pad_last_batch_repeats_its_samples() -> None:
    arrays = {"x": np.arange(10, dtype=np.float32).reshape(10, 1)}
    cal, _ = make(arrays, last_batch="pad")
    got = []
    while (ptrs := cal.get_batch(["x"])) is not None:
        got.append(read_host(ptrs[0], np.empty((4, 1), np.float32)).ravel().tolist())
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    assert (cal.samples_served, cal.samples_padded, cal.samples_dropped) == (10, 2, 0)


def test_irregular_source_batches_are_regrouped() -> None:
    arrays = {"x": np.arange(10, dtype=np.float32).reshape(10, 1)}
    cal, _ = make(arrays, chunks=[3, 3, 1, 3])
    got = []
    while (ptrs := cal.get_batch(["x"])) is not None:
        got.append(read_host(ptrs[0], np.empty((4, 1), np.float32)).ravel().tolist())
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cal.samples_dropped == 2


def test_max_samples_and_names_order() -> None:
    arrays = {"a": np.zeros((12, 2)), "b": np.ones((12, 3))}
    cal, _ = make(arrays, max_samples=8)
    pb, pa = cal.get_batch(["b", "a"]) or []
    assert read_host(pb, np.empty((4, 3), np.float32)).tolist() == np.ones((4, 3)).tolist()
    assert read_host(pa, np.empty((4, 2), np.float32)).tolist() == np.zeros((4, 2)).tolist()
    assert cal.get_batch(["b", "a"]) is not None
    assert cal.get_batch(["b", "a"]) is None and cal.samples_served == 8


def test_non_contiguous_input_is_copied_in_c_order() -> None:
    base = np.arange(4 * 6 * 2, dtype=np.float64).reshape(4, 6, 2)
    x = base[:, ::2, :].transpose(0, 2, 1)  # strided and transposed view
    assert not x.flags.c_contiguous
    cal, _ = make({"x": x})
    (ptr,) = cal.get_batch(["x"]) or []
    want = np.ascontiguousarray(x, dtype=np.float32)
    assert read_host(ptr, want).tobytes() == want.tobytes()


def test_iterable_source_dataloader_batches() -> None:
    iterable = pytest.importorskip("quantkit.data.iterable")
    from quantkit.data.base import InputSpec

    items = [{"x": np.full((n, 2), i, np.float32)} for i, n in enumerate([3, 5, 2])]
    src = iterable.IterableSource(items, [InputSpec("x", np.dtype(np.float32), (None, 2))])
    mem = HostMemory()
    cal = qtrt.TensorRTCalibratorBase(src, batch_size=4, device=mem, last_batch="pad")
    got = []
    while (ptrs := cal.get_batch(["x"])) is not None:
        got.append(read_host(ptrs[0], np.empty((4, 2), np.float32))[:, 0].tolist())
    assert got == [[0, 0, 0, 1], [1, 1, 1, 1], [2, 2, 2, 2]]


def test_bigger_batch_after_reset_reallocates() -> None:
    cal, mem = make({"x": np.zeros((4, 2))})
    assert cal.get_batch(["x"]) is not None and mem.allocs == 1
    cal.source = ArraySource({"x": np.zeros((4, 8))})
    cal.reset()
    assert cal.get_batch(["x"]) is not None
    assert mem.allocs == 2 and mem.frees == 1 and len(mem.live) == 1


# -- errors are captured, then re-raised ----------------------------------------------------------
def test_missing_name_is_captured_and_reraised(caplog: pytest.LogCaptureFixture) -> None:
    cal, _ = make(rng_arrays())
    with caplog.at_level(logging.ERROR, logger="quantkit.calibrators.tensorrt"):
        assert cal.get_batch(["images"]) is None  # TensorRT would see "end of data"
    assert "images" in caplog.text
    assert cal.get_batch(["x"]) is None  # stays stopped after an error
    with pytest.raises(PipelineError, match="'images'") as info:
        cal.raise_if_failed()
    assert isinstance(info.value.__cause__, InputError)
    assert info.value.exit_code == 2  # an input problem keeps its exit code


def test_guard_reraises_and_frees() -> None:
    cal, mem = make(rng_arrays())
    with pytest.raises(PipelineError) as info, cal.guard():
        assert cal.get_batch(["x", "ids"]) is not None
        assert cal.get_batch(["nope"]) is None
    assert isinstance(info.value.__cause__, InputError)
    assert not mem.live  # buffers freed on exit


def test_guard_without_error_and_with_body_error() -> None:
    cal, mem = make(rng_arrays())
    with cal.guard():
        cal.get_batch(["x", "ids"])
    assert not mem.live
    cal2, _ = make(rng_arrays())
    with pytest.raises(PipelineError) as info, cal2.guard():
        cal2.get_batch(["zzz"])
        raise RuntimeError("build returned None")
    assert isinstance(info.value.__context__, RuntimeError)
    with pytest.raises(ValueError, match="plain"), cal.guard():
        raise ValueError("plain")


def test_input_names_checked() -> None:
    cal, _ = make(rng_arrays(), input_names=["x"])
    assert cal.get_batch(["x", "ids"]) is None
    with pytest.raises(PipelineError, match="input_names"):
        cal.raise_if_failed()


@pytest.mark.parametrize(("arrays", "kwargs", "match"), [
    ({"x": np.array([[1.0, np.nan]] * 4)}, {}, "NaN"),
    ({"x": np.ones((4, 2))}, {"dtypes": {"x": np.int32}}, "dtype float64"),
    ({"x": np.full((4, 2), 2**40)}, {"dtypes": {"x": np.int32}}, "outside the range"),
    ({"x": np.array(["a"] * 4)}, {}, "dtype <U1"),
    ({"x": np.ones(2)}, {"batch_size": 4}, "fewer than batch_size"),
    ({"x": np.ones((0, 2))}, {}, "no samples"),
])
def test_bad_data(arrays: dict[str, np.ndarray], kwargs: dict[str, Any], match: str) -> None:
    cal, _ = make(arrays, **kwargs)
    assert cal.get_batch(["x"]) is None
    with pytest.raises(PipelineError, match=match):
        cal.raise_if_failed()


def _changing(*batches: dict[str, np.ndarray]) -> ArraySource:
    class Changing(ArraySource):
        def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
            yield from batches

    return Changing({})


@pytest.mark.parametrize(("batches", "match"), [
    (({"x": np.zeros((4, 2))}, {"x": np.zeros((4, 3))}), r"shape \(3,\) in batch 2 but \(2,\)"),
    (({"x": np.zeros((4, 2))}, {"x": np.zeros((4, 2)), "y": np.zeros((4, 1))}),
     "same inputs"),
    (({"x": np.zeros((4, 2))}, {"x": np.zeros((4, 2)), "y": np.zeros((3, 1))}),
     "same inputs"),
    (({"x": np.zeros((4, 2)), "y": np.zeros((4, 1))},
      {"x": np.zeros((4, 2)), "y": np.zeros((3, 1))}), "different sample counts"),
    (({"x": np.zeros((4, 2))}, {"x": np.float32(1.0)}), "scalar"),
])
def test_inconsistent_batches(batches: tuple[dict[str, np.ndarray], ...], match: str) -> None:
    cal = qtrt.TensorRTCalibratorBase(_changing(*batches), batch_size=4, device=HostMemory())
    assert cal.get_batch(["x"]) is not None
    assert cal.get_batch(["x"]) is None
    with pytest.raises(PipelineError, match=match):
        cal.raise_if_failed()


def test_source_errors_are_captured() -> None:
    src = ArraySource(rng_arrays(), fail_after=1, fail_with=OSError("disk gone"))
    cal = qtrt.TensorRTCalibratorBase(src, batch_size=4, device=HostMemory())
    assert cal.get_batch(["x", "ids"]) is not None
    assert cal.get_batch(["x", "ids"]) is None
    with pytest.raises(PipelineError, match="disk gone") as info:
        cal.raise_if_failed()
    assert info.value.exit_code == 1 and isinstance(info.value.__cause__, OSError)


def test_keyboard_interrupt_is_reraised_unchanged() -> None:
    src = ArraySource(rng_arrays(), fail_after=0, fail_with=KeyboardInterrupt())
    cal = qtrt.TensorRTCalibratorBase(src, batch_size=4, device=HostMemory())
    assert cal.get_batch(["x"]) is None
    with pytest.raises(KeyboardInterrupt):
        cal.raise_if_failed()


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2, "max_samples": 0},
                                    {"batch_size": 2, "last_batch": "wrap"}])
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        qtrt.TensorRTCalibratorBase(ArraySource(rng_arrays()), device=HostMemory(), **kwargs)


# -- cache --------------------------------------------------------------------------------------
CACHE = b"TRT-101300-EntropyCalibration2\nx: 3caa54fc\n(Unnamed Layer* 0) [Conv]_output: 0\n"


def test_cache_read_write(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "model.cache"
    cal, _ = make(rng_arrays(), cache=path)
    assert cal.read_calibration_cache() is None and not cal.cache_used
    cal.write_calibration_cache(memoryview(CACHE))  # TensorRT passes a memoryview
    assert path.read_bytes() == CACHE and cal.written_cache == CACHE
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left behind
    cal.write_calibration_cache(bytearray(b"TRT-101300-EntropyCalibration2\n"))
    assert path.read_bytes() == b"TRT-101300-EntropyCalibration2\n"
    cal.write_calibration_cache(CACHE)
    fresh, _ = make(rng_arrays(), cache=str(path))
    assert fresh.read_calibration_cache() == CACHE and fresh.cache_used
    minmax = qtrt.TensorRTCalibratorBase(ArraySource(rng_arrays()), batch_size=2,
                                         device=HostMemory(), cache=path)
    minmax.cache_algorithm = "MinMaxCalibration"
    with caplog.at_level(logging.WARNING, logger="quantkit.calibrators.tensorrt"):
        assert minmax.read_calibration_cache() == CACHE  # TensorRT decides; we warn
    assert "EntropyCalibration2 scales but this calibrator is MinMaxCalibration" in caplog.text
    for cal_ in (cal, fresh, minmax):
        cal_.raise_if_failed()


def test_cache_without_path_and_empty_file(tmp_path: Any) -> None:
    cal, _ = make(rng_arrays())
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(memoryview(CACHE))
    assert cal.written_cache == CACHE
    empty = tmp_path / "empty.cache"
    empty.write_bytes(b"")
    cal2, _ = make(rng_arrays(), cache=empty)
    assert cal2.read_calibration_cache() is None
    cal.raise_if_failed()
    cal2.raise_if_failed()


def test_cache_write_failure_is_captured(tmp_path: Any) -> None:
    cal, _ = make(rng_arrays(), cache=tmp_path / "missing-dir" / "x.cache")
    cal.write_calibration_cache(memoryview(CACHE))
    with pytest.raises(PipelineError, match="write_calibration_cache"):
        cal.raise_if_failed()


# -- the CUDA layer without a GPU ---------------------------------------------------------------
def test_no_cuda_binding_raises_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.runtime",
                 "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError) as info:
        default_device_memory()
    assert "pycuda" in str(info.value) and "cuda-python" in str(info.value)
    with pytest.raises(MissingExtraError):
        qtrt.TensorRTCalibratorBase(ArraySource(rng_arrays()), batch_size=2)


def fake_cudart(fail: str | None = None) -> types.SimpleNamespace:
    class cudaError_t(enum.IntEnum):  # noqa: N801 - as cuda-python names it
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    ok = cudaError_t.cudaSuccess
    bad = cudaError_t.cudaErrorMemoryAllocation

    def call(name: str, *result: Any) -> Any:
        return (bad, *result) if name == fail else (ok, *result)

    return types.SimpleNamespace(
        cudaError_t=cudaError_t, cudaMemcpyKind=cudaMemcpyKind,
        cudaMalloc=lambda n: call("cudaMalloc", 1234),
        cudaMemcpy=lambda *a: call("cudaMemcpy"),
        cudaFree=lambda p: call("cudaFree"),
        cudaDeviceSynchronize=lambda: call("cudaDeviceSynchronize"),
        cudaGetErrorString=lambda e: (ok, b"out of memory"),
    )


@pytest.mark.parametrize("fail", ["cudaMalloc", "cudaMemcpy", "cudaDeviceSynchronize", "cudaFree"])
def test_cuda_python_return_codes_are_checked(fail: str) -> None:
    mem = CudaPythonMemory(fake_cudart(fail))
    with pytest.raises(PipelineError, match=f"{fail}.*cudaErrorMemoryAllocation.*out of memory"):
        buf = mem.alloc(16)
        mem.copy_htod(buf, np.zeros(4, np.float32))
        mem.synchronize()
        mem.free(buf)


def test_cuda_python_copy_size_checked() -> None:
    mem = CudaPythonMemory(fake_cudart())
    buf = mem.alloc(8)
    assert buf == DeviceBuffer(ptr=1234, nbytes=8)
    with pytest.raises(ValueError, match="does not fit"):
        mem.copy_htod(buf, np.zeros(4, np.float32))


# -- real device memory (marked gpu; skipped without cuda-python, a driver or a GPU) ------------
def _gpu_skip_reason() -> str | None:
    try:
        rt = device_layer.import_cudart()
    except ImportError:
        return "cuda-python is not installed"
    try:
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # a broken or missing driver library
        return f"cudaGetDeviceCount failed: {exc}"
    if err != rt.cudaError_t.cudaSuccess or count < 1:
        return f"no CUDA device ({getattr(err, 'name', err)})"
    return None


@pytest.fixture
def cudart() -> Any:
    reason = _gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    return device_layer.import_cudart()


def _dtoh(rt: Any, ptr: int, like: np.ndarray) -> np.ndarray:
    """Read a device buffer back with a raw cudaMemcpy (independent of the layer under test)."""
    out = np.empty_like(like)
    (err,) = rt.cudaMemcpy(out.ctypes.data, ptr, out.nbytes,
                           rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
    assert err == rt.cudaError_t.cudaSuccess, err
    return out


@pytest.mark.gpu
def test_gpu_device_memory_roundtrip(cudart: Any) -> None:
    mem = CudaPythonMemory(cudart)
    data = np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32)
    data[:4] = [np.float32(-0.0), np.float32(1e-45), np.inf, np.nan]  # odd bit patterns
    buf = mem.alloc(data.nbytes)
    try:
        mem.copy_htod(buf, data)
        mem.synchronize()
        back = _dtoh(cudart, buf.ptr, data)
        assert back.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()
        out = np.empty_like(data)
        mem.copy_dtoh(out, buf)
        assert out.tobytes() == data.tobytes()
    finally:
        mem.free(buf)
    auto = default_device_memory()
    assert auto.name in ("pycuda", "cuda-python")


@pytest.mark.gpu
def test_gpu_calibrator_batches_bit_for_bit(cudart: Any) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 3, 8, 8))[:, :, ::-1, :]  # float64, non-contiguous
    ids = rng.integers(-1000, 1000, (11, 7))
    src = ArraySource({"x": x, "ids": ids, "label": np.zeros(11)}, chunks=[3, 5, 3])
    cal = qtrt.TensorRTCalibratorBase(src, batch_size=4, device=CudaPythonMemory(cudart),
                                      dtypes={"ids": np.int32}, last_batch="pad",
                                      input_names=["ids", "x"])
    index = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 8])
    batches = []
    with cal.guard():
        while (ptrs := cal.get_batch(["x", "ids"])) is not None:
            b = len(batches)
            rows = index[4 * b: 4 * b + 4]
            want_x = np.ascontiguousarray(x[rows], dtype=np.float32)
            want_ids = ids[rows].astype(np.int32)
            assert _dtoh(cudart, ptrs[0], want_x).tobytes() == want_x.tobytes()
            assert _dtoh(cudart, ptrs[1], want_ids).tobytes() == want_ids.tobytes()
            batches.append(ptrs)
    assert len(batches) == 3 and batches[0] == batches[1] == batches[2]
    assert (cal.samples_served, cal.samples_padded) == (11, 1)
    assert not cal._buffers  # guard freed them


@pytest.mark.gpu
def test_gpu_allocation_failure_names_cuda_error(cudart: Any) -> None:
    mem = CudaPythonMemory(cudart)
    with pytest.raises(PipelineError, match="cudaErrorMemoryAllocation"):
        mem.alloc(1 << 50)  # 1 PiB
    buf = mem.alloc(16)  # the context is still usable afterwards
    mem.free(buf)
