"""Parse and build ONNX models with TensorRT-RTX on the CPU (the real builder, no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt_rtx_bindings")

_COMPUTE = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")
#: layers the parser inserts between a DQ and its consumer (e.g. a broadcast of a 2-D MatMul
#: weight) that do not change values: TensorRT still fuses the DQ into the consumer.
_PASS_THROUGH = ("SHUFFLE", "SQUEEZE", "UNSQUEEZE", "IDENTITY")


def parse_layers(path: Path) -> dict[str, dict[str, object]]:
    """``{layer name: {type, inputs, outputs}}`` of the parsed (strongly typed) network."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError(f"TensorRT-RTX rejected {path}: {errors}")
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer = {layer.get_output(k).name: layer for layer in layers
                for k in range(layer.num_outputs)}

    def from_int8_dq(name: str) -> bool:
        for _ in range(8):  # a short chain of pass-through layers at most
            layer = producer.get(name)
            if layer is None:
                return False
            kind = str(layer.type).split(".")[-1]
            if kind == "DEQUANTIZE":
                return str(layer.get_input(0).dtype).endswith("INT8")
            if kind not in _PASS_THROUGH or layer.get_input(0) is None:
                return False
            name = layer.get_input(0).name
        return False

    int8_dq_outputs = {name for name in producer if from_int8_dq(name)}
    out: dict[str, dict[str, object]] = {}
    for layer in layers:
        ins = [layer.get_input(k) for k in range(layer.num_inputs)]
        out[layer.name] = {
            "type": str(layer.type).split(".")[-1],
            "inputs": [str(t.dtype).split(".")[-1] if t is not None else None for t in ins],
            "outputs": [str(layer.get_output(k).dtype).split(".")[-1]
                        for k in range(layer.num_outputs)],
            "dq_inputs": [t is not None and t.name in int8_dq_outputs for t in ins],
        }
    return out


def layer_precision(info: dict[str, object]) -> str:
    """int8 when a compute layer's data and weight inputs come from INT8 DQ; else its type."""
    dq = info["dq_inputs"]
    assert isinstance(dq, list)
    if info["type"] in _COMPUTE and dq and all(dq[:2]) and len(dq) >= 2:
        return "int8"
    ins = [t for t in info["inputs"] if t in ("FLOAT", "HALF")]  # type: ignore[union-attr]
    return "fp16" if ins and ins[0] == "HALF" else "fp32"


def build(path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]]) -> int:
    """Build an engine; returns its size in bytes."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None, f"TensorRT-RTX could not build {path}"
    return int(engine.nbytes)
