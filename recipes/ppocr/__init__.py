"""PP-OCRv4 text detection and recognition (``rapidocr-onnxruntime``'s ONNX files).

* ``rec.yaml`` -- the recogniser's sweep (``quantkit sweep recipes/ppocr/rec.yaml``);
* ``plans.yaml`` -- the detector's plans (det has no recipe);
* :mod:`.model` -- where the packaged models are, the rec model's CTC dictionary;
* :mod:`.data` -- rendered text lines and pages, the rec recipe's data
  (``python -m recipes prepare``);
* :mod:`.metrics` -- CTC decoding, character error rate, det map agreement;
* :mod:`.measure` -- the measurements behind recipes/MODELS.md.

The plans are read from the YAML files: :data:`REC_INT8_PLAN` is ``rec.yaml``'s ``int8-*``
configs (every Conv / MatMul INT8, attention included, FP32 rest), :data:`REC_MIXED_PLAN` its
``mixed-fp16`` config (FP16 rest; the stem conv and the first depthwise conv of the PP-LCNetV3
backbone in FP16: alone in INT8, ``p2o.Conv.1`` leaves 14.2 dB of output SQNR, the next worst
layer 18.8 dB), :data:`DET_INT8_PLAN` / :data:`DET_MIXED_PLAN` ``plans.yaml``'s ``det-int8`` /
``det-mixed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.plans import plan
from recipes.ppocr.data import (
    FONT_DIRS,
    FONT_FILES,
    TextLine,
    det_batch,
    det_page,
    det_preprocess,
    det_sets,
    font_paths,
    rec_batch,
    rec_preprocess,
    rec_sets,
    render_line,
    text_lines,
    text_strings,
)
from recipes.ppocr.metrics import (
    character_error_rate,
    ctc_greedy_decode,
    det_agreement,
    edit_distance,
    recognise,
)
from recipes.ppocr.model import (
    CALIBRATION_METHOD,
    DET_FILE,
    DET_INPUT,
    DET_TRT_SHAPES,
    PACKAGE,
    REC_FILE,
    REC_HEIGHT,
    REC_INPUT,
    REC_TRT_SHAPES,
    REC_WIDTH,
    character_list,
    model_paths,
)

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "rec.yaml"
REC_INT8_PLAN: dict[str, Any] = plan(HERE, "int8-entropy", recipe="rec.yaml")
REC_MIXED_PLAN: dict[str, Any] = plan(HERE, "mixed-fp16", recipe="rec.yaml")
DET_INT8_PLAN: dict[str, Any] = plan(HERE, "det-int8", recipe="rec.yaml")
DET_MIXED_PLAN: dict[str, Any] = plan(HERE, "det-mixed", recipe="rec.yaml")

__all__ = ["CALIBRATION_METHOD", "DET_FILE", "DET_INPUT", "DET_INT8_PLAN", "DET_MIXED_PLAN",
           "DET_TRT_SHAPES", "FONT_DIRS", "FONT_FILES", "PACKAGE", "RECIPE", "REC_FILE",
           "REC_HEIGHT", "REC_INPUT", "REC_INT8_PLAN", "REC_MIXED_PLAN", "REC_TRT_SHAPES",
           "REC_WIDTH", "TextLine", "character_error_rate", "character_list",
           "ctc_greedy_decode", "det_agreement", "det_batch", "det_page", "det_preprocess",
           "det_sets", "edit_distance", "font_paths", "model_paths", "rec_batch", "rec_preprocess",
           "rec_sets", "recognise", "render_line", "text_lines", "text_strings"]
