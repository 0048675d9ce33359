"""The GPU runner: build, load, run, time. Needs an NVIDIA GPU the engine can run on.

Marked ``gpu`` (skipped without a GPU and driver). TensorRT-RTX engines run only on compute
capability 8.0/8.6/8.9/12.x, not on 9.0 (H100/H200), so with only TensorRT-RTX installed these
tests also skip on such GPUs (docs/tensorrt_rules.md#running-engines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit.backends import BuildOptions, LatencyStats, Runner, get_backend
from quantkit.backends.runner import TrtRunner, open_runner
from tests.builders.qdq import fp16_cnn, int8_cnn

pytestmark = pytest.mark.gpu


def _compute_capability() -> tuple[int, int] | None:
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return int(major), int(minor)
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def backend_name() -> str:
    if get_backend("tensorrt").available():
        return "tensorrt"
    if not get_backend("tensorrt-rtx").available():
        pytest.skip("neither TensorRT nor TensorRT-RTX is installed")
    cc = _compute_capability()
    if cc is not None and cc[0] == 9:
        pytest.skip(f"TensorRT-RTX engines do not run on compute capability {cc[0]}.{cc[1]}")
    return "tensorrt-rtx"


def test_runner_matches_onnxruntime_and_times(tmp_path: Path, backend_name: str) -> None:
    import onnxruntime as ort

    model, _ = int8_cnn(tmp_path / "m.onnx")
    get_backend(backend_name).build(model, tmp_path / "m.engine",
                                    BuildOptions(shapes={"x": (4, 3, 8, 8)},
                                                 min_shapes={"x": (1, 3, 8, 8)},
                                                 max_shapes={"x": (8, 3, 8, 8)}))
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    reference = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    with open_runner(tmp_path / "m.engine") as runner:  # backend read from the sidecar
        assert isinstance(runner, TrtRunner) and isinstance(runner, Runner)
        assert runner.inputs == ["x"] and runner.outputs == ["logits"]
        got = runner.infer({"x": x})["logits"]
        assert got.shape == (4, 10)
        np.testing.assert_allclose(got, reference, atol=0.1)
        got2 = runner.infer({"x": x[:2]})["logits"]  # another shape inside the profile
        assert got2.shape == (2, 10)
        stats = runner.latency({"x": x}, warmup=3, iterations=20)
        assert isinstance(stats, LatencyStats) and stats.iterations == 20
        assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
        assert '"Layers"' in runner.layer_info() or runner.layer_info()


def test_runner_fp16_engine(tmp_path: Path, backend_name: str) -> None:
    model, _ = fp16_cnn(tmp_path / "m.onnx")
    backend = get_backend(backend_name)
    backend.build(model, tmp_path / "m.engine")
    with backend.runner(tmp_path / "m.engine") as runner:
        out = runner.infer({"x": np.ones((1, 3, 8, 8), np.float32)})
        assert out["logits"].dtype == np.float32 and np.isfinite(out["logits"]).all()
