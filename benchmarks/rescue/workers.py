"""Workers of ``rescue/peers.py``: each quantizes one model inside its own child process.

Run as ``python -m benchmarks.rescue.peers --worker NAME --params JSON --result PATH``, with
the Python of the tool's own venv. Only the standard library (and ``benchmarks._harness``,
itself standard library only) is imported at module level, so the peer venvs, which have no
quantkit, can run their worker.

Every quantizer gets the same inputs: the FP32 ONNX path and a calibration file exported by
the parent (EfficientNet-Lite0: ``.npy`` [66, 3, 224, 224] float32; MiniLM: ``.npz`` with one
int64 [128, 64] array per model input). The data is loaded before the clock starts; the clock
stops when the output model is on disk. Each worker returns what it did (settings, versions,
what its rescue features changed where the tool reports it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO, serve

MB = 1024 * 1024


def _load_cal(p: dict) -> Any:
    """``np.ndarray`` (EfficientNet) or ``{input name: int64 array}`` (MiniLM)."""
    import numpy as np

    if p["cal"].endswith(".npz"):
        with np.load(p["cal"]) as z:
            return {k: np.ascontiguousarray(z[k]) for k in z.files}
    return np.load(p["cal"])


def _samples(p: dict, cal: Any, batch: int) -> list[dict]:
    """The calibration set as ``[{input: batch}]`` in file order (last batch may be short)."""
    if isinstance(cal, dict):
        n = len(next(iter(cal.values())))
        return [{k: v[i: i + batch] for k, v in cal.items()} for i in range(0, n, batch)]
    return [{p["input"]: cal[i: i + batch]} for i in range(0, len(cal), batch)]


# --------------------------------------------------------------------------- quantkit
def w_quantkit(p: dict) -> dict:
    """quantkit (dev venv): optional transforms -> calibrate -> Q/DQ writer, as docs/transforms.md.

    EfficientNet: ``measure_accuracy.variant`` of tests/transforms (the pipeline behind the
    docs' tables: equalize -> calibrate (batches of 16) -> bias_correct with those scales on
    every Conv/Gemm/MatMul -> quantize_model). MiniLM: the pipeline of
    tests/transforms/measure_smoothquant.py (smoothquant on batches of 32 -> calibrate the
    smoothed model -> quantize_model).
    """
    import tempfile

    import onnx

    from quantkit.model import save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.transforms import applied_transforms

    model = onnx.load(p["model"])
    cal = _load_cal(p)
    config = PrecisionConfig.from_mapping(p["plan"])
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if p["kind"] == "effnet":
            _, q = _measure_accuracy().variant(model, cal, p["input"], p["method"],
                                               p["variant"], config, Path(tmp),
                                               **p.get("method_options", {}))
        else:
            from quantkit.capture import calibrate
            from quantkit.qdq.writer import quantize_model
            from quantkit.transforms import smoothquant
            from recipes import minilm as ml

            batches = ml.batches(cal, 32)
            m = model
            if p["variant"].startswith("sq"):
                m, rep = smoothquant(model, batches, alpha=float(p["alpha"]))
                out["smoothquant"] = rep.summary()
            path = Path(tmp) / "m.onnx"
            save_model(m, path)
            scales = calibrate(path, batches, method=p["method"],
                               method_options=p.get("method_options")).scales
            q = quantize_model(m, scales, config).model
        save_model(q, p["output"])
        out["time_s"] = time.perf_counter() - t0
    out["transforms_recorded"] = [
        {"transform": t.get("transform"), "changed": len(t.get("changed", [])),
         "skipped": len(t.get("skipped", []))} for t in applied_transforms(q)]
    return out


def _measure_accuracy() -> Any:
    """tests/transforms/measure_accuracy.py as a module (``tests`` is not a package)."""
    import importlib.util

    path = REPO / "tests" / "transforms" / "measure_accuracy.py"
    spec = importlib.util.spec_from_file_location("_rescue_measure_accuracy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- NNCF
def w_nncf(p: dict) -> dict:
    """NNCF ``nncf.quantize`` on the ONNX model (its ONNX backend).

    TensorRT-like where NNCF allows it: ``preset=PERFORMANCE`` (symmetric activations),
    activations per tensor, weights symmetric per channel (NNCF's default for Conv/MatMul
    weights; int8, narrow range). NNCF's ``target_device=ANY`` hardware config does not accept
    ``signedness_to_force=True`` for activations, so non-negative activations (after ReLU6,
    Softmax) get an unsigned [0, 255] scale: recorded by the parent. Calibration statistics:
    NNCF's defaults (activations: mean over samples of per-sample min/max; weights: min/max).
    Rescue on: fast bias correction (NNCF's default), and for MiniLM ``model_type=TRANSFORMER``
    with SmoothQuant (alpha ``p["sq_alpha"]``, NNCF's default 0.95 for MatMul). Rescue off:
    ``disable_bias_correction=True`` and SmoothQuant off (alpha -1), placement unchanged.
    """
    import nncf
    import onnx
    import onnxruntime
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        QuantizationParameters,
    )

    model = onnx.load(p["model"])
    items = _samples(p, _load_cal(p), 1)  # one sample per item: NNCF counts items
    transformer = p["kind"] == "minilm"
    sq = float(p.get("sq_alpha", -1)) if transformer and p["rescue"] else -1.0
    adv = AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(
            mode=QuantizationScheme.SYMMETRIC, per_channel=False),
        weights_quantization_params=QuantizationParameters(
            mode=QuantizationScheme.SYMMETRIC, per_channel=True),
        disable_bias_correction=not p["rescue"],
        smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=sq))
    kwargs = {"preset": nncf.QuantizationPreset.PERFORMANCE, "subset_size": len(items),
              "fast_bias_correction": True,
              "model_type": nncf.ModelType.TRANSFORMER if transformer else None,
              "advanced_parameters": adv}
    t0 = time.perf_counter()
    q = nncf.quantize(model, nncf.Dataset(items), **kwargs)
    onnx.save(q, p["output"])
    dt = time.perf_counter() - t0
    return {"time_s": dt, "versions": {"nncf": nncf.__version__, "onnx": onnx.__version__,
                                       "onnxruntime": onnxruntime.__version__},
            "settings": {"preset": "PERFORMANCE", "activations": "symmetric, per tensor",
                         "weights": "symmetric, per channel", "subset_size": len(items),
                         "model_type": "TRANSFORMER" if transformer else None,
                         "fast_bias_correction": bool(p["rescue"]),
                         "smooth_quant_matmul_alpha": sq if sq >= 0 else None}}


# --------------------------------------------------------------------------- AIMET
def w_aimet(p: dict) -> dict:
    """AIMET-ONNX: (``equalize_model``) -> ``QuantizationSimModel`` -> ``compute_encodings``.

    Exported with ``sim.to_onnx_qdq(force_activation_as="signed")`` (ONNX QuantizeLinear /
    DequantizeLinear, runnable in ONNX Runtime). The quantsim config (``p["config"]``, written
    by the parent) is AIMET's ``default_config_per_channel.json`` with symmetric, strict
    symmetric (zero offset, [-127, 127]) activations, i.e. TensorRT-like scales; AIMET's own
    placement (every op output quantized, Conv+Clip/Relu supergroups) is kept. aimet-onnx has
    no bias correction API (``aimet_onnx`` 2.x ships CLE, AdaRound, SeqMSE, AMP, QuantAnalyzer;
    bias correction exists in aimet-torch / aimet-tensorflow only): rescue = CLE
    (``equalize_model``: BN fold, ReLU6 -> ReLU where it finds it, cross-layer scaling,
    high-bias fold). The equalized FP32 model is saved too (``*.fp32.onnx``) so that the
    parent can show what CLE alone does to the FP32 function.
    """
    import aimet_onnx
    import numpy as np
    import onnx
    import onnxruntime
    from aimet_onnx.quantsim import QuantizationSimModel

    model = onnx.load(p["model"])
    cal = _load_cal(p)
    batches = _samples(p, cal, 16 if p["kind"] == "effnet" else 32)
    dummy = {k: np.ascontiguousarray(v[:1]) for k, v in batches[0].items()}
    out: dict[str, Any] = {"versions": {"aimet_onnx": aimet_onnx.__version__,
                                        "onnx": onnx.__version__,
                                        "onnxruntime": onnxruntime.__version__}}
    t0 = time.perf_counter()
    if p["rescue"]:
        from aimet_onnx.cross_layer_equalization import equalize_model

        before = {i.name: i.raw_data for i in model.graph.initializer}
        ops_before = sorted(n.op_type for n in model.graph.node)
        equalize_model(model)
        out["cle_changed_initializers"] = sum(
            1 for i in model.graph.initializer if before.get(i.name) != i.raw_data)
        out["cle_op_types_changed"] = ops_before != sorted(n.op_type for n in model.graph.node)
        t1 = time.perf_counter()
        onnx.save(model, p["output"].replace(".onnx", ".fp32.onnx"))
        t0 += time.perf_counter() - t1  # saving the diagnostic FP32 copy is not timed
    sim = QuantizationSimModel(model, config_file=p["config"], dummy_input=dummy,
                               quant_scheme=p.get("quant_scheme", "min_max"))
    sim.compute_encodings(batches)
    q = sim.to_onnx_qdq(force_activation_as="signed")
    onnx.save(q, p["output"])
    out["time_s"] = time.perf_counter() - t0
    out["settings"] = {"quant_scheme": p.get("quant_scheme", "min_max"),
                       "config": Path(p["config"]).name, "export": "to_onnx_qdq(signed)",
                       "cle": bool(p["rescue"]), "bias_correction": "not in aimet-onnx"}
    return out


# --------------------------------------------------------------------------- PPQ
def w_ppq(p: dict) -> dict:
    """PPQ ``quantize_onnx_model(platform=TRT_INT8, device="cpu")``, exported as ONNX Q/DQ.

    PPQ's TensorRT quantizer: symmetric per-tensor activations (percentile 99.99 observer),
    symmetric per-channel weights (min/max), int8. Rescue on: ``setting.equalization = True``
    (PPQ's layer-wise equalization) and ``setting.bias_correct = True``. Export with PPQ's
    ONNX Runtime exporter (``TargetPlatform.ONNXRUNTIME``: QuantizeLinear/DequantizeLinear),
    since its TRT_INT8 exporter writes a float model plus a JSON of scales. PPQ traces with
    a fixed batch of 1 (``input_shape``), so the exported model has batch 1. Calibration: one
    sample per step, every calibration sample. Two repairs, recorded: before parsing, trailing
    empty optional inputs (``Pad(x, pads, "")``) are dropped from the FP32 model (identical
    ONNX semantics; PPQ 0.6.6's bias correction fails on them with "Tensor is empty"); after
    export, the source's opset / IR version are put back in the header (PPQ writes opset 13).
    """
    import onnx
    import ppq
    import torch
    from ppq import QuantizationSettingFactory, TargetPlatform
    from ppq.api import export_ppq_graph, quantize_onnx_model

    model = onnx.load(p["model"])
    dropped = 0
    for n in model.graph.node:
        while len(n.input) and n.input[-1] == "":
            n.input.pop()
            dropped += 1
    src = p["output"].replace(".onnx", ".ppq-input.onnx")
    onnx.save(model, src)
    cal = _load_cal(p)
    items = _samples(p, cal, 1)
    if isinstance(cal, dict):
        data = [{k: torch.from_numpy(v) for k, v in it.items()} for it in items]
        shape_kw: dict[str, Any] = {"input_shape": None,
                                    "inputs": [data[0][i.name] for i in model.graph.input]}
    else:
        data = [torch.from_numpy(it[p["input"]]) for it in items]
        shape_kw = {"input_shape": list(items[0][p["input"]].shape)}
    setting = QuantizationSettingFactory.trt_setting()
    if p["rescue"]:
        setting.equalization = True
        setting.bias_correct = True
    t0 = time.perf_counter()
    graph = quantize_onnx_model(onnx_import_file=src, calib_dataloader=data,
                                calib_steps=len(data), platform=TargetPlatform.TRT_INT8,
                                setting=setting, device="cpu", verbose=0, **shape_kw)
    export_ppq_graph(graph=graph, platform=TargetPlatform.ONNXRUNTIME,
                     graph_save_to=p["output"])
    dt = time.perf_counter() - t0
    Path(src).unlink(missing_ok=True)
    # PPQ's exporter writes opset 13 (ir 7) whatever the source: an opset-17 graph
    # (LayerNormalization, Shape(start=...)) is then invalid. Restore the source's header;
    # nothing else changes (the ops PPQ writes mean the same in 13 and 17).
    q = onnx.load(p["output"])
    def dom(d: str) -> str:
        return "" if d == "ai.onnx" else d

    src_opset = {dom(o.domain): o.version for o in model.opset_import}
    header = {"exported_opset": {o.domain: o.version for o in q.opset_import},
              "exported_ir": q.ir_version}
    if any(src_opset.get(dom(o.domain), 0) > o.version for o in q.opset_import):
        for o in q.opset_import:
            o.version = max(o.version, src_opset.get(dom(o.domain), o.version))
        q.ir_version = max(q.ir_version, model.ir_version)
        onnx.save(q, p["output"])
        header["restored_to"] = {"opset": src_opset, "ir": q.ir_version}
    check = None
    if p.get("check_inputs"):  # PPQ's own executor on some evaluation inputs (not timed)
        import numpy as np
        from ppq.executor import TorchExecutor

        ex = TorchExecutor(graph=graph, device="cpu")
        x = np.load(p["check_inputs"])
        outs = [ex.forward(torch.from_numpy(x[i: i + 1]))[0].detach().numpy()
                for i in range(len(x))]
        check = p["output"].replace(".onnx", ".executor-out.npy")
        np.save(check, np.concatenate(outs))
    return {"time_s": dt, "dropped_empty_inputs": dropped, "opset_header": header,
            "executor_outputs": check,
            "versions": {"ppq": getattr(ppq, "__version__", None) or _dist_version("ppq"),
                         "torch": torch.__version__, "onnx": onnx.__version__},
            "settings": {"platform": "TRT_INT8", "export": "ONNXRUNTIME (Q/DQ)",
                         "equalization": bool(p["rescue"]),
                         "bias_correct": bool(p["rescue"]), "calib_steps": len(data),
                         "batch": 1}}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:  # noqa: BLE001 - informational
        return None


# --------------------------------------------------------------------------- TensorRT-RTX
def w_rtx_parse(p: dict) -> dict:
    """Does TensorRT-RTX (CPU parser) accept the Q/DQ model, and how many INT8 layers?"""
    from recipes.runtime import rtx_parse

    t0 = time.perf_counter()
    try:
        prec, parse_s = rtx_parse(p["model"])
    except Exception as err:  # noqa: BLE001 - a rejection is the result
        return {"parse_ok": False, "parse_error": " ".join(str(err).split())[-600:],
                "time_s": time.perf_counter() - t0}
    return {"parse_ok": True, "parse_s": parse_s, "time_s": time.perf_counter() - t0,
            "rtx_layers": {k: sum(v == k for v in prec.values())
                           for k in ("int8", "fp16", "fp32")}}


WORKERS = {"quantkit": w_quantkit, "nncf": w_nncf, "aimet": w_aimet, "ppq": w_ppq,
           "rtx_parse": w_rtx_parse}


def worker_main(name: str, params: str, result: str) -> None:
    serve(WORKERS, name, params, result)
