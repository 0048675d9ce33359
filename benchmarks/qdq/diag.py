"""Why do quantkit and ModelOpt differ? (``qdq/run.py --diagnose``, dev venv, after a run).

For one model, from the outputs of the main run in ``benchmarks/_work/qdq/out``:

1. the activation amax each ModelOpt output carries (per-tensor scale x 127), compared tensor
   by tensor with quantkit's amax for the same data (minmax vs ModelOpt ``max``, entropy vs
   ModelOpt ``entropy``), and ModelOpt ``entropy`` vs ModelOpt ``max``;
2. a swap: quantkit's writer (same plan as the main run) fed with ModelOpt's amax, evaluated by
   the same code path. If quantkit + ModelOpt scales lands where ModelOpt does, the difference
   is the scales (calibration); if it lands where quantkit does, it is the graph (placement,
   weights, FP16 conversion);
3. the tensors with the largest amax ratio, and their consumers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def activation_amax(path: str | Path) -> dict[str, float]:
    """``{tensor: scale * 127}`` of every per-tensor QuantizeLinear on a non-constant input."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    out = {}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in consts:
            s = np.asarray(consts.get(n.input[1]), dtype=np.float64)
            if s.size == 1:
                out[n.input[0]] = float(s.reshape(()) * 127.0)
    return out


def ratio_stats(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    common = sorted(set(a) & set(b))
    if not common:
        return {"common": 0}
    r = np.array([a[k] / b[k] if b[k] else np.inf for k in common])
    worst = sorted(common, key=lambda k: -abs(np.log(max(a[k], 1e-30) / max(b[k], 1e-30))))[:6]
    return {"common": len(common), "only_first": len(set(a) - set(b)),
            "only_second": len(set(b) - set(a)), "median": float(np.median(r)),
            "min": float(r.min()), "max": float(r.max()),
            "within_1pct": int((np.abs(r - 1) <= 0.01).sum()),
            "worst": [(k, round(a[k], 4), round(b[k], 4)) for k in worst]}


def diagnose(bench: Any, out_dir: Path, evaluate: Callable[[Any, Path], dict],
             log: Callable[[str], None]) -> dict[str, Any]:
    import onnx

    from quantkit.calibrators.cache import ScaleTable
    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    key = bench.key
    res: dict[str, Any] = {}
    data = np.load(bench.cal)
    batches = [{bench.input: b} for b in np.array_split(data, bench.n_batches)]
    qk = {m: calibrate(str(bench.fp32), batches, method=m).scales.amaxes
          for m in ("minmax", "entropy")}
    mo = {m: activation_amax(out_dir / f"{key}-modelopt-{m}.onnx") for m in ("max", "entropy")}
    res["amax_quantkit_minmax_vs_modelopt_max"] = ratio_stats(qk["minmax"], mo["max"])
    res["amax_quantkit_entropy_vs_modelopt_entropy"] = ratio_stats(qk["entropy"], mo["entropy"])
    res["amax_modelopt_entropy_vs_modelopt_max"] = ratio_stats(mo["entropy"], mo["max"])
    res["amax_quantkit_entropy_vs_quantkit_minmax"] = ratio_stats(qk["entropy"], qk["minmax"])
    qk_q = activation_amax(out_dir / f"{key}-quantkit-int8_minmax.onnx")
    res["tensors_quantized"] = {
        "quantkit": len(qk_q), "modelopt": len(mo["max"]),
        "only_modelopt": sorted(set(mo["max"]) - set(qk_q))[:20],
        "only_quantkit": sorted(set(qk_q) - set(mo["max"]))[:20]}
    plan = PrecisionConfig.from_mapping(bench.quantkit["int8 minmax"][1])
    model = onnx.load(str(bench.fp32))
    swaps = {}
    for m, amax in mo.items():
        # quantkit's writer with ModelOpt's activation amax; tensors ModelOpt does not quantize
        # but quantkit's plan does keep quantkit's own minmax amax
        table = ScaleTable.from_amax({**qk["minmax"], **amax})
        path = out_dir / f"{key}-diag-quantkit_writer-modelopt_{m}_scales.onnx"
        save_model(quantize_model(model, table, plan).model, path)
        swaps[f"quantkit writer + ModelOpt {m} amax"] = evaluate(bench, path)
        log(f"diag {key}: quantkit writer + ModelOpt {m} amax -> {swaps[list(swaps)[-1]]}")
    res["swaps"] = swaps
    return res


__all__ = ["activation_amax", "diagnose", "ratio_stats"]
