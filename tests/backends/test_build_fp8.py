"""FP8 models quantkit writes, built with TensorRT-RTX on the CPU for FP8 targets (SM89, SM120).

Every planned layer must be read back in its precision from the parsed network and from the
compiled-kernel listing; an FP8 model for a target without FP8 (SM86) is refused before the
build with exit 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit.backends import BuildOptions, get_backend
from quantkit.capture import calibrate
from quantkit.errors import InputError
from quantkit.model import save_model
from quantkit.qdq.fp8 import check_fp8_targets
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from tests.builders.cnn import small_cnn

pytest.importorskip("tensorrt_rtx_bindings")

X = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
MIXED = {"default": "int8", "overrides": [{"name": "/conv1/Conv", "precision": "fp8"},
                                          {"op_type": "Gemm", "precision": "fp8"}]}


def _write(tmp_path: Path, config: PrecisionConfig) -> tuple[Path, dict[str, str]]:
    path = small_cnn(tmp_path / "m.onnx")
    scales = calibrate(path, [{"x": X}], method="minmax").scales
    res = quantize_model(onnx.load(str(path)), scales, config)
    out = tmp_path / "q.onnx"
    save_model(res.model, out)
    return out, {n.name: n.precision for n in res.plan.nodes.values()}


@pytest.mark.parametrize("target", ["SM89", "SM120"])
@pytest.mark.parametrize("config", [{"default": "fp8"}, MIXED,
                                    {"default": "fp8", "default_float": "fp16"}],
                         ids=["all-fp8", "int8-fp8", "fp8-fp16"])
def test_fp8_builds_with_every_layer_in_its_planned_precision(
        tmp_path: Path, target: str, config: dict) -> None:
    model, plan = _write(tmp_path, PrecisionConfig.from_mapping(config))
    result = get_backend("tensorrt-rtx").build(
        model, tmp_path / "q.engine",
        BuildOptions(shapes={"x": (1, 3, 8, 8)}, compute_capabilities=(target,)))
    doc = result.sidecar
    assert doc["builder"]["compute_capabilities"] == [target]
    quantized = {n: p for n, p in plan.items() if p in ("int8", "fp8")}
    assert "fp8" in quantized.values()
    compute = {x["onnx_node"]: x for x in doc["layers"]
               if x.get("onnx_node") in quantized and x["type"] in (
                   "CONVOLUTION", "MATRIX_MULTIPLY")}
    assert set(compute) == set(quantized)
    for node, want in quantized.items():
        assert compute[node]["precision"] == want, node  # parsed network
        assert compute[node]["plan_precision"] == want, node
        assert compute[node]["engine_precision"] == want, node  # compiled kernel
    assert [d for d in doc["disagreements"] if d["kind"] == "plan"] == []
    for node, want in quantized.items():  # a compiled kernel of the node reads FP8 / INT8
        assert any(k["precision"] == want and want in k["inputs"] for k in doc["engine_layers"]
                   if node in k["onnx_layers"]), node


def test_fp8_model_for_a_target_without_fp8_exits_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from quantkit.cli.main import main

    model, _ = _write(tmp_path, PrecisionConfig(default="fp8"))
    engine = tmp_path / "q.engine"
    code = main(["build", str(model), "-o", str(engine), "--backend", "tensorrt-rtx",
                 "--shapes", "x:1x3x8x8", "--compute-capability", "SM89,SM86"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "SM86" in err and "FP8" in err and "8.9" in err and "Traceback" not in err
    assert not engine.exists() and not Path(f"{engine}.json").exists()


def test_fp8_target_check(tmp_path: Path) -> None:
    fp8, _ = _write(tmp_path, PrecisionConfig(default="fp8"))
    int8_dir = tmp_path / "int8"
    int8_dir.mkdir()
    int8, _ = _write(int8_dir, PrecisionConfig(default="int8"))
    for target in ("SM75", "sm80", "8.6", "86"):
        with pytest.raises(InputError, match="compute capability 8.9"):
            check_fp8_targets(fp8, [target])
    for target in ("SM89", "SM120", "CURRENT"):
        check_fp8_targets(fp8, [target])  # FP8-capable (or unknown until build): passes
    check_fp8_targets(int8, ["SM86"])  # no FP8 in the model
    check_fp8_targets(fp8, [])  # the portable default builds an FP8 model (verified)


def test_fp8_conv_transpose_shows_as_an_engine_disagreement(tmp_path: Path) -> None:
    """TensorRT-RTX parses an FP8 ConvTranspose as fp8 but compiles an FP32 kernel."""
    from tests.builders.fp8 import fp8_cnn

    path = tmp_path / "convt.onnx"
    onnx.save(fp8_cnn(conv_transpose=True), str(path))
    doc = get_backend("tensorrt-rtx").build(
        path, tmp_path / "convt.engine", BuildOptions(compute_capabilities=("SM89",))).sidecar
    layers = {x["name"]: x for x in doc["layers"]}
    assert layers["conv2"]["precision"] == "fp8" and layers["conv2"]["engine_precision"] == "fp32"
    assert layers["conv1"]["engine_precision"] == "fp8"
    assert [(d["layer"], d["kind"]) for d in doc["disagreements"]] == [("conv2", "engine")]


def test_library_build_refuses_fp8_for_a_target_without_fp8(tmp_path: Path) -> None:
    # the sweep and notebooks call the backend directly, not the CLI: the check is the backend's
    model, _ = _write(tmp_path, PrecisionConfig(default="fp8"))
    engine = tmp_path / "q.engine"
    options = BuildOptions(shapes={"x": (1, 3, 8, 8)}, compute_capabilities=["SM86"])
    with pytest.raises(InputError, match="compute_capabilities names SM86"):
        get_backend("tensorrt-rtx").build(model, engine, options)
    assert not engine.exists() and not Path(f"{engine}.json").exists()
