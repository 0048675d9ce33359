"""Autotune with and without the bias-correction rescue on EfficientNet-Lite0 (docs/transforms.md).

Run from the repository root (not collected by pytest)::

    .venv/bin/python tests/transforms/measure_autotune_rescue.py [DROP ...]

The recipe's data (66 calibration photos, 448 held-out views), percentile 99.99 scales, the
recipe's INT8 plan as the base (Conv/Gemm INT8, rest FP16; kept layers FP16), metric: top-1
agreement with FP32. For each target drop (agreement points), autotune without and with
``rescue=("bias_correction",)``: layers kept in FP16, final agreement, evaluations, time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quantkit.capture import calibrate  # noqa: E402
from quantkit.qdq.plan import PrecisionConfig  # noqa: E402
from quantkit.sweep import Evaluator, autotune  # noqa: E402
from recipes.models import default_cache, images  # noqa: E402
from recipes.models import efficientnet_lite0 as eff  # noqa: E402


def main() -> None:
    drops = [float(a) for a in sys.argv[1:]] or [3.0, 2.0]
    path = eff.export_onnx(default_cache())
    model = onnx.load(str(path))
    cal, ev = images.calibration_set(), images.evaluation_set()
    name = eff.INPUT_NAME
    cal_b = [{name: cal[i: i + 16]} for i in range(0, len(cal), 16)]
    evaluator = Evaluator(str(path), [{name: ev[i: i + 32]} for i in range(0, len(ev), 32)],
                          None, None)
    scales = calibrate(path, cal_b, method="percentile",
                       method_options={"percentile": 99.99}).scales
    base = PrecisionConfig.from_mapping(eff.INT8_PLAN)
    print("| target drop | rescue | all-INT8 agreement % | layers kept FP16 | final agreement % "
          "| evaluations | time s |")
    print("|---|---|---|---|---|---|---|")
    for drop in drops:
        for rescue in ((), ("bias_correction",)):
            start = time.perf_counter()
            res = autotune(model, scales, evaluator, drop, base=base, rescue=rescue,
                           rescue_data=cal_b)
            print(f"| {drop} | {', '.join(rescue) or 'none'} | {res.all_int8.accuracy:.1f} | "
                  f"{len(res.kept)} | {res.final.accuracy:.1f} | {res.evaluations} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
