"""PP-OCRv4 text detection and recognition: the models shipped in ``rapidocr-onnxruntime``.

The package (install it with ``pip install --no-deps rapidocr-onnxruntime``: only its model
files are used, not its OpenCV-based pipeline) ships, under ``rapidocr_onnxruntime/models``:

* ``ch_PP-OCRv4_det_infer.onnx`` -- DBNet text detector, input ``x`` [N, 3, H, W] (H, W
  multiples of 32), output ``sigmoid_0.tmp_0`` [N, 1, H, W], a text probability map;
* ``ch_PP-OCRv4_rec_infer.onnx`` -- SVTR-LCNet CTC recogniser, input ``x`` [N, 3, 48, W],
  output ``softmax_11.tmp_0`` [N, W/8, 6625] per-step class probabilities.

Both were exported by paddle2onnx (opset 12) and store every weight as a ``Constant`` node.
The character dictionary (6623 symbols, Chinese + ASCII) is in the rec model's metadata
(key ``character``); like PaddleOCR's ``CTCLabelDecode``, index 0 is the CTC blank and a space
is appended as the last class.

Evaluation data are text lines rendered with Pillow from known strings, in DejaVu fonts
(Debian ``fonts-dejavu-core``, or the copies matplotlib ships), so the ground truth is exact.
Calibration and evaluation strings are disjoint. Preprocessing follows PaddleOCR / RapidOCR:
``(x / 255 - 0.5) / 0.5``, RGB, rec lines resized to height 48 and right-padded with zeros to
a fixed width.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "rapidocr_onnxruntime"
DET_FILE = "ch_PP-OCRv4_det_infer.onnx"
REC_FILE = "ch_PP-OCRv4_rec_infer.onnx"
DET_INPUT = "x"
REC_INPUT = "x"
REC_HEIGHT = 48
REC_WIDTH = 320
#: calibration method used by the recipe.
CALIBRATION_METHOD = "percentile"
#: TensorRT optimisation profiles: (min, opt, max) shapes.
DET_TRT_SHAPES = {DET_INPUT: ((1, 3, 320, 320), (1, 3, 640, 640), (4, 3, 960, 960))}
REC_TRT_SHAPES = {REC_INPUT: ((1, 3, 48, 80), (8, 3, 48, 320), (16, 3, 48, 960))}


def _package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{PACKAGE} is not installed: pip install --no-deps rapidocr-onnxruntime")
    return Path(next(iter(spec.submodule_search_locations)))


def model_paths() -> tuple[Path, Path]:
    """``(det, rec)`` ONNX paths inside the installed ``rapidocr-onnxruntime`` package.

    The package is located with :func:`importlib.util.find_spec`, not imported: its
    ``__init__`` needs OpenCV, which ``--no-deps`` leaves out.
    """
    base = _package_dir() / "models"
    det, rec = base / DET_FILE, base / REC_FILE
    for p in (det, rec):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not in the installed {PACKAGE}; reinstall it.")
    return det, rec


def character_list(rec_path: str | Path | None = None) -> list[str]:
    """CTC classes of the rec model: ``["<blank>", *dictionary, " "]`` (6625 entries)."""
    import onnx

    path = Path(rec_path) if rec_path is not None else model_paths()[1]
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path}: no 'character' metadata; not a RapidOCR rec model.")
    return ["<blank>", *meta["character"].splitlines(), " "]


__all__ = ["CALIBRATION_METHOD", "DET_FILE", "DET_INPUT", "DET_TRT_SHAPES", "PACKAGE",
           "REC_FILE", "REC_HEIGHT", "REC_INPUT", "REC_TRT_SHAPES", "REC_WIDTH",
           "character_list", "model_paths"]
