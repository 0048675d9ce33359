"""benchmarks/latency/whatif.py: folding INT8 conv epilogues, on hand-written kernel lists."""

from __future__ import annotations

from _bench import load

whatif = load("whatif")


def _conv(name: str, node: str, cin: int, cout: int) -> dict:
    return {"name": name, "type": "correlation", "precision": "int8", "inputs": ["int8"],
            "input_dims": [[1, cin, 8, 8]], "constants": ["int8", "fp32"],
            "constant_dims": [[cout, cin, 3, 3], [1, cout, 1, 1]], "outputs": ["fp32"],
            "output_dims": [[1, cout, 8, 8]], "onnx_layers": [node, f"{node}_dq"]}


def _kgen(name: str, layers: list[str], ins: list[list[int]], outs: list[list[int]],
          out_types: list[str]) -> dict:
    return {"name": name, "type": "kgen", "precision": "fp32",
            "inputs": ["fp32"] + ["int8"] * (len(ins) - 1), "input_dims": ins,
            "constants": ["fp16"], "constant_dims": [[1, outs[0][1], 1, 1]],
            "outputs": out_types, "output_dims": outs, "onnx_layers": layers}


OPS = {"/c1/Conv": "Conv", "/c2/Conv": "Conv", "/relu": "Relu", "/add": "Add"}


def test_epilogue_with_residual_folds_into_the_conv() -> None:
    conv = _conv("/c1/Conv_k", "/c1/Conv", 4, 16)
    signal = {"name": "sig", "type": "signal", "inputs": [], "input_dims": [], "outputs": [],
              "output_dims": [], "onnx_layers": []}
    epi = _kgen("epi", ["/c1/Conv", "/add", "/relu"], [[1, 16, 8, 8], [1, 16, 8, 8]],
                [[1, 16, 8, 8]], ["int8"])
    sidecar = {"format": "x", "engine_layers": [conv, signal, epi]}
    out, n = whatif.fuse_int8_epilogues(sidecar, OPS)
    assert n == 1
    assert [k["name"] for k in out["engine_layers"]] == ["/c1/Conv_k", "sig"]
    fused = out["engine_layers"][0]
    # reads its int8 input plus the residual, writes the epilogue's int8 tensor
    assert fused["inputs"] == ["int8", "int8"]
    assert fused["input_dims"] == [[1, 4, 8, 8], [1, 16, 8, 8]]
    assert fused["outputs"] == ["int8"] and fused["output_dims"] == [[1, 16, 8, 8]]
    assert fused["constant_dims"] == [[16, 4, 3, 3], [1, 16, 1, 1]]  # the epilogue's left out
    assert fused["onnx_layers"] == ["/c1/Conv", "/c1/Conv_dq", "/add", "/relu"]
    # the input sidecar is untouched
    assert sidecar["engine_layers"][0]["outputs"] == ["fp32"] and len(sidecar["engine_layers"]) == 3


def test_conv_output_stays_first_when_the_epilogue_writes_two_tensors() -> None:
    conv = _conv("k", "/c1/Conv", 4, 16)
    epi = _kgen("epi", ["/c1/Conv", "/relu"], [[1, 16, 8, 8]],
                [[1, 64, 8, 8], [1, 16, 8, 8]], ["int8", "fp16"])
    out, n = whatif.fuse_int8_epilogues({"engine_layers": [conv, epi]}, OPS)
    assert n == 1
    fused = out["engine_layers"][0]
    assert fused["output_dims"] == [[1, 16, 8, 8], [1, 64, 8, 8]]
    assert fused["outputs"] == ["fp16", "int8"]


def test_not_an_epilogue_is_left_alone() -> None:
    conv = _conv("k", "/c1/Conv", 4, 16)
    # runs the next convolution too
    other_conv = _kgen("e1", ["/c1/Conv", "/c2/Conv"], [[1, 16, 8, 8]], [[1, 16, 8, 8]],
                       ["int8"])
    # reshapes (no output of the conv's shape)
    reshape = _kgen("e2", ["/c1/Conv"], [[1, 16, 8, 8]], [[1, 1024]], ["int8"])
    # an FP16 conv is never folded
    fp16 = {**_conv("k16", "/c2/Conv", 4, 16), "precision": "fp16"}
    epi16 = _kgen("e3", ["/c2/Conv"], [[1, 16, 8, 8]], [[1, 16, 8, 8]], ["fp16"])
    for kernels in ([conv, other_conv], [conv, reshape], [fp16, epi16]):
        out, n = whatif.fuse_int8_epilogues({"engine_layers": kernels}, OPS)
        assert n == 0 and out["engine_layers"] == kernels
