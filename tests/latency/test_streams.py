"""Multi-stream engines: the kernel log's signal/wait entries and the timeline over streams."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantkit.backends.engine_log import parse_engine_log
from quantkit.latency.model import timeline_seconds

US = "\x1f"


def _line(name: str, kind: str, stream: int, extra: str = "", meta: str = "") -> str:
    # the format TensorRT-RTX 1.7.1 logs (tensor entries left out where a kernel has none)
    return (f"Name: {name}, LayerType: {kind}, Inputs: [], Constants: [], Outputs: [], "
            f"TacticName: , StreamId: {stream}{extra}, Metadata: {meta}")


def test_parser_reads_streams_and_events() -> None:
    conv = ("Name: /down/Conv_myl0_11, LayerType: correlation, Inputs: [ { Name: a, "
            "Dimensions: [1,64,56,56], Strides: [200704,1,3584,64], StrideOrder: [3,0,2,1], "
            "Datatype: Int8, Format: (NHWC) Channel major format }], Constants: [], Outputs: "
            "[ { Name: b, Dimensions: [1,256,56,56], Datatype: Float, Format: (NHWC) Channel "
            "major format }], TacticName: __myelin_CASK_STUB, StreamId: 1, Metadata: "
            f"[ONNX Layer: /down/Conv]{US}[ONNX Layer: x_DequantizeLinear]")
    text = "\n".join(["Layers:", _line("__mye1_myl0_4", "signal", 0, ", EventId: 1"),
                      _line("__mye2_myl0_10", "wait", 1, ", EventId: 1"), conv, ""])
    kernels = parse_engine_log([text])
    assert kernels is not None
    signal, wait, down = kernels
    assert (signal["type"], signal["stream"], signal["event"]) == ("signal", 0, 1)
    assert (wait["type"], wait["stream"], wait["event"]) == ("wait", 1, 1)
    assert (down["stream"], down["event"]) == (1, None)
    assert down["input_dims"] == [[1, 64, 56, 56]] and down["output_dims"] == [[1, 256, 56, 56]]
    assert down["onnx_layers"] == ["/down/Conv", "x_DequantizeLinear"]


def test_timeline_by_hand() -> None:
    # stream 0: a (3) signal e1, b (5), wait e2, d (1); stream 1: wait e1, c (4), signal e2
    kernels = [(0, "k", None, 3.0), (0, "signal", 1, 0.0), (0, "k", None, 5.0),
               (1, "wait", 1, 0.0), (1, "k", None, 4.0), (1, "signal", 2, 0.0),
               (0, "wait", 2, 0.0), (0, "k", None, 1.0)]
    # c starts at 3 (after a), ends at 7; b ends at 8 > 7, so d runs 8..9
    assert timeline_seconds(kernels) == pytest.approx(9.0)
    # a longer c (6) ends at 9: d must wait for it, 9..10
    kernels[4] = (1, "k", None, 6.0)
    assert timeline_seconds(kernels) == pytest.approx(10.0)
    # one stream: the plain sum
    assert timeline_seconds([(0, "k", None, 2.0), (0, "k", None, 0.5)]) == pytest.approx(2.5)
    assert timeline_seconds([]) == 0.0


def test_multi_stream_int8_engine(tmp_path: Path) -> None:
    """TensorRT-RTX runs a bottleneck's projection shortcut on a second stream at batch 1."""
    from _require import require

    require("tensorrt_rtx_bindings")
    import numpy as np

    from quantkit.capture import calibrate
    from quantkit.latency import estimate_model
    from quantkit.model import load_model, save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from tests.builders import latency as lm

    fp32 = lm.bottleneck(tmp_path / "bn.onnx", c=64, mid=32, out=128, dtype="fp32")
    data = np.random.default_rng(0).standard_normal((8, 64, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=data)
    scales = calibrate(str(fp32), str(tmp_path / "cal.npz"), method="minmax",
                       batch_size=4).scales
    int8 = tmp_path / "bn.int8.onnx"
    save_model(quantize_model(load_model(fp32), scales, PrecisionConfig(), fp16=True,
                              source=str(fp32)).model, int8)
    est = estimate_model(int8, "L4", shapes={"x": (1, 64, 28, 28)})
    streams = {k.stream for k in est.kernels}
    assert streams == {0, 1}
    assert {k.type for k in est.kernels} >= {"signal", "wait"}
    total = sum(k.ms for k in est.kernels)
    per_stream = [sum(k.ms for k in est.kernels if k.stream == s) for s in streams]
    # overlapping streams: faster than one after the other, never faster than either stream
    assert max(per_stream) <= est.latency_ms < total
    assert est.overlap_ms == pytest.approx(total - est.latency_ms)
    assert sum(est.by_precision.values()) == pytest.approx(total)
    assert "2 streams" in est.method
