"""EfficientNet-Lite0's recipe data: the ONNX export and views of shipped photos (no labels)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from recipes import files, images

#: evaluation views per EfficientNet evaluation photo (7 photos).
EVAL_VIEWS = 8


def prepare(out: Path, *, eval_views: int = EVAL_VIEWS, force: bool = False) -> Path:
    """Write ``out/efficientnet_lite0``: ONNX export, calibration and evaluation views.

    The photos have no ImageNet labels, so the recipe's accuracy is the top-1 agreement
    with FP32. Returns the model's folder.
    """
    from recipes.efficientnet_lite0 import model as eff

    folder = out / "efficientnet_lite0"
    settings = {"model": "efficientnet_lite0", "export_fingerprint": eff._fingerprint(),
                "calibration": "images.calibration_set()",
                "evaluation": f"images.evaluation_set(views_per_photo={eval_views})"}
    if not force and files.up_to_date(folder, settings):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    export_dir = folder / ".export"
    os.replace(eff.export_onnx(export_dir), folder / "model.onnx")
    shutil.rmtree(export_dir, ignore_errors=True)
    cal = images.calibration_set()
    ev = images.evaluation_set(views_per_photo=eval_views)
    files.save_npy(cal, folder / "calibration.npy")
    files.save_npy(ev, folder / "evaluation.npy")
    files.manifest(folder, settings, {
        "model.onnx": f"EfficientNet-Lite0, input {eff.INPUT_NAME} [N, 3, 224, 224], "
                      f"output {eff.OUTPUT_NAME} [N, 1000]",
        "calibration.npy": f"{list(cal.shape)} float32: views of "
                           f"{', '.join(images.CALIBRATION_PHOTOS)}",
        "evaluation.npy": f"{list(ev.shape)} float32: views of "
                          f"{', '.join(images.EVALUATION_PHOTOS)}",
    })
    return folder


__all__ = ["EVAL_VIEWS", "prepare"]
