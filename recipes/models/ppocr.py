"""PP-OCRv4 text detection and recognition models shipped in ``rapidocr-onnxruntime``.

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
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.evaluate.metrics import edit_distance

PACKAGE = "rapidocr_onnxruntime"
DET_FILE = "ch_PP-OCRv4_det_infer.onnx"
REC_FILE = "ch_PP-OCRv4_rec_infer.onnx"
DET_INPUT = "x"
REC_INPUT = "x"
REC_HEIGHT = 48
REC_WIDTH = 320
#: calibration method used by the recipe.
CALIBRATION_METHOD = "percentile"
#: det, INT8 plan: every Conv/ConvTranspose INT8, the rest FP32. With an FP16 rest the three
#: BatchNormalization nodes must stay FP32: one has running variances up to 9.8e7, beyond
#: FP16's 65504 (quantkit clips them and the probability-map IoU falls to 0.49).
DET_INT8_PLAN: dict[str, Any] = {"default": "int8", "default_float": "fp32"}
#: det, mixed plan: FP16 rest, BatchNormalization FP32, and the stem conv plus the first two
#: depthwise-separable blocks of the PP-LCNetV3 backbone (``p2o.Conv.0``-``5``) in FP16.
DET_MIXED_PLAN: dict[str, Any] = {
    "default": "int8",
    "default_float": "fp16",
    "overrides": [
        {"op_type": "BatchNormalization", "precision": "fp32"},
        {"regex": r"^p2o\.Conv\.[0-5]$", "precision": "fp16"},
    ],
}
#: rec, INT8 plan: every Conv/MatMul INT8 (incl. attention MatMuls), the rest FP32.
REC_INT8_PLAN: dict[str, Any] = {"default": "int8", "default_float": "fp32"}
#: rec, mixed plan: FP16 rest; the stem conv and the first depthwise conv of the PP-LCNetV3
#: backbone (``p2o.Conv.0``, ``p2o.Conv.1``) in FP16. Alone in INT8, ``p2o.Conv.1`` leaves
#: 14.2 dB of output SQNR (next worst layer 18.8 dB); keeping only it in FP16 gains 3.4 dB,
#: four times more than any other single layer.
REC_MIXED_PLAN: dict[str, Any] = {
    "default": "int8",
    "default_float": "fp16",
    "overrides": [{"regex": r"^p2o\.Conv\.[01]$", "precision": "fp16"}],
}
#: TensorRT optimisation profiles: (min, opt, max) shapes.
DET_TRT_SHAPES = {DET_INPUT: ((1, 3, 320, 320), (1, 3, 640, 640), (4, 3, 960, 960))}
REC_TRT_SHAPES = {REC_INPUT: ((1, 3, 48, 80), (8, 3, 48, 320), (16, 3, 48, 960))}
#: Debian's fonts-dejavu-core location, then matplotlib's bundled copies.
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
              "DejaVuSerif-Italic.ttf", "DejaVuSans-Oblique.ttf")

_WORDS = (
    "quantize", "calibrate", "tensor", "engine", "network", "layer", "kernel", "latency", "batch",
    "scale", "model", "input", "output", "entropy", "histogram", "precision", "accuracy", "float",
    "integer", "vector", "matrix", "window", "river", "garden", "station", "market", "winter",
    "summer", "orange", "silver", "yellow", "purple", "number", "letter", "coffee", "bridge",
    "castle", "forest", "island", "harbor", "valley", "pocket", "camera", "rocket", "planet",
    "signal", "memory", "circle", "square", "corner", "street", "office", "ticket",
)


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


def ctc_greedy_decode(probs: np.ndarray, characters: Sequence[str]) -> list[str]:
    """Best-path CTC decoding of ``probs`` [N, T, C]: argmax, merge repeats, drop blanks (0)."""
    idx = np.asarray(probs).argmax(axis=2)
    out = []
    for row in idx:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append("".join(characters[i] for i in row[keep]))
    return out


def character_error_rate(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """Total edit distance over total ground-truth length (corpus-level CER), as a fraction.

    Same definition as quantkit's registered ``cer`` metric (which reports percent).
    """
    if len(predictions) != len(truths):
        raise ValueError("predictions and truths differ in length")
    dist = sum(edit_distance(p, t) for p, t in zip(predictions, truths, strict=True))
    return dist / max(1, sum(len(t) for t in truths))


def font_paths() -> list[Path]:
    """DejaVu font files: Debian's ``fonts-dejavu-core`` if present, else matplotlib's copies."""
    dirs = list(FONT_DIRS)
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        mpl = Path(next(iter(spec.submodule_search_locations)))
        dirs.append(mpl / "mpl-data" / "fonts" / "ttf")
    found: dict[str, Path] = {}
    for d in dirs:
        for name in FONT_FILES:
            if name not in found and (d / name).is_file():
                found[name] = d / name
    if not found:
        raise FileNotFoundError("no DejaVu fonts: apt-get install fonts-dejavu-core (or pip "
                                "install matplotlib, which ships them)")
    return [found[n] for n in FONT_FILES if n in found]


def text_strings(count: int, seed: int) -> list[str]:
    """``count`` deterministic text lines: words, numbers, prices, dates, codes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind = i % 4
        w = [_WORDS[int(k)] for k in rng.integers(0, len(_WORDS), 3)]
        if kind == 0:
            s = f"{w[0].capitalize()} {w[1]} {rng.integers(10, 999)}"
        elif kind == 1:
            s = f"{w[0]}-{w[1]} ${rng.integers(1, 99)}.{rng.integers(0, 99):02d}"
        elif kind == 2:
            s = (f"{rng.integers(2000, 2030)}-{rng.integers(1, 12):02d}-"
                 f"{rng.integers(1, 28):02d} {w[2].upper()}")
        else:
            s = f"{w[0]} {w[1]} {w[2]}"
        out.append(s)
    return out


@dataclass
class TextLine:
    """A rendered text line and its ground truth."""

    image: np.ndarray  # RGB uint8 [H, W, 3]
    text: str


def render_line(text: str, font: Path, size: int, rng: np.random.Generator, *,
                hard: bool = False) -> np.ndarray:
    """Render one line tightly cropped with a small random margin, ink and paper colour.

    ``hard`` lines are harder to read, as scanned or photographed text is: lower contrast,
    a small rotation, blur and stronger noise.
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    f = ImageFont.truetype(str(font), size)
    left, top, right, bottom = f.getbbox(text)
    pad_x, pad_y = int(rng.integers(4, 12)), int(rng.integers(3, 8))
    w, h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    paper = tuple(int(v) for v in rng.integers(200, 256, 3))
    ink_max = 150 if hard else 70
    ink = tuple(int(v) for v in rng.integers(0, ink_max, 3))
    im = Image.new("RGB", (w, h), paper)
    ImageDraw.Draw(im).text((pad_x - left, pad_y - top), text, font=f, fill=ink)
    noise = 4.0
    if hard:
        im = im.rotate(float(rng.uniform(-2.5, 2.5)), resample=Image.Resampling.BILINEAR,
                       expand=False, fillcolor=paper)
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.1))))
        noise = float(rng.uniform(6.0, 12.0))
    arr = np.asarray(im, dtype=np.float32)
    arr += rng.normal(0, noise, arr.shape)  # sensor-like noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def text_lines(count: int, seed: int, *, hard_fraction: float = 0.5) -> list[TextLine]:
    """``count`` rendered lines; ``seed`` picks strings, fonts, sizes and colours.

    Strings come from :func:`text_strings`; a ``hard_fraction`` of the lines (small glyphs,
    blur, noise, rotation: see :func:`render_line`) keeps the FP32 error rate above zero, so
    that a quantized model's extra errors show.
    """
    rng = np.random.default_rng(seed + 1000)
    fonts = font_paths()
    lines = []
    for i, s in enumerate(text_strings(count, seed)):
        font = fonts[i % len(fonts)]
        hard = rng.random() < hard_fraction
        size = int(rng.integers(13, 20)) if hard else int(rng.integers(24, 44))
        lines.append(TextLine(render_line(s, font, size, rng, hard=hard), s))
    return lines


def rec_preprocess(image: np.ndarray, width: int = REC_WIDTH) -> np.ndarray:
    """Rec input [3, 48, width] from an RGB line image (PaddleOCR's ``resize_norm_img``).

    Resize to height 48 keeping the aspect ratio (at most ``width`` wide), normalise to
    [-1, 1] and right-pad with zeros.
    """
    from PIL import Image

    h, w = image.shape[:2]
    new_w = min(width, int(math.ceil(REC_HEIGHT * w / h)))
    im = Image.fromarray(image).resize((new_w, REC_HEIGHT), Image.Resampling.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, REC_HEIGHT, width), dtype=np.float32)
    out[:, :, :new_w] = x.transpose(2, 0, 1)
    return out


def rec_batch(lines: Sequence[TextLine], width: int = REC_WIDTH) -> np.ndarray:
    """Stack :func:`rec_preprocess` of every line: [N, 3, 48, width] float32."""
    return np.stack([rec_preprocess(line.image, width) for line in lines])


def det_page(lines: Sequence[TextLine], size: tuple[int, int], rng: np.random.Generator,
             background: np.ndarray | None = None) -> np.ndarray:
    """Paste ``lines`` at random non-overlapping rows of a ``size`` = (H, W) page.

    ``background`` (an RGB photo, resized to the page) gives a realistic cluttered page;
    otherwise the page is light paper. Returns RGB uint8 [H, W, 3].
    """
    from PIL import Image

    h, w = size
    if background is not None:
        page = Image.fromarray(background).resize((w, h), Image.Resampling.BILINEAR)
        page = Image.blend(page, Image.new("RGB", (w, h), (235, 235, 235)), 0.45)
    else:
        page = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(215, 256, 3)))
    y = int(rng.integers(4, 20))
    for line in lines:
        im = Image.fromarray(line.image)
        if im.width > w - 8:
            im = im.resize((w - 8, max(8, im.height * (w - 8) // im.width)))
        if y + im.height > h - 4:
            break
        x = int(rng.integers(4, max(5, w - im.width - 4)))
        page.paste(im, (x, y))
        y += im.height + int(rng.integers(6, 30))
    return np.asarray(page, dtype=np.uint8).copy()


def det_preprocess(page: np.ndarray) -> np.ndarray:
    """Det input [3, H, W]: RGB, ``(x / 255 - 0.5) / 0.5`` (H, W must be multiples of 32)."""
    h, w = page.shape[:2]
    if h % 32 or w % 32:
        raise ValueError(f"det pages must have sides that are multiples of 32, got {h}x{w}")
    x = (page.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def det_batch(count: int, seed: int, size: tuple[int, int] = (320, 320),
              backgrounds: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``count`` det pages [N, 3, H, W], each with 3-6 rendered lines.

    Every other page has the next photo of ``backgrounds`` (if any) behind the text.
    """
    rng = np.random.default_rng(seed)
    pool = text_lines(count * 6, seed)
    pages = []
    for i in range(count):
        k = int(rng.integers(3, 7))
        chosen = [pool[(i * 6 + j) % len(pool)] for j in range(k)]
        bg = backgrounds[(i // 2) % len(backgrounds)] if backgrounds and i % 2 else None
        pages.append(det_preprocess(det_page(chosen, size, rng, bg)))
    return np.stack(pages).astype(np.float32)


def rec_sets(calibration: int = 48, evaluation: int = 128) -> tuple[list[TextLine],
                                                                   list[TextLine]]:
    """``(calibration lines, evaluation lines)`` with no string in both."""
    ev = text_lines(evaluation, seed=1)
    taken = {line.text for line in ev}
    cal = [line for line in text_lines(calibration * 2, seed=2) if line.text not in taken]
    return cal[:calibration], ev


def det_sets(calibration: int = 16, evaluation: int = 16,
             size: tuple[int, int] = (320, 320)) -> tuple[np.ndarray, np.ndarray]:
    """``(calibration pages, evaluation pages)`` [N, 3, H, W].

    Half of each set has a photo behind the text, from the disjoint calibration / evaluation
    photos of :mod:`recipes.models.images` (needs scikit-image and scikit-learn).
    """
    from recipes.models import images

    cal_bg = [images.load_photo(n) for n in images.CALIBRATION_PHOTOS[:6]]
    ev_bg = [images.load_photo(n) for n in images.EVALUATION_PHOTOS]
    return (det_batch(calibration, seed=10, size=size, backgrounds=cal_bg),
            det_batch(evaluation, seed=30, size=size, backgrounds=ev_bg))


def recognise(session: Any, batch: np.ndarray, characters: Sequence[str],
              batch_size: int = 32) -> list[str]:
    """Run a rec session and CTC-decode each line.

    Leading/trailing spaces are stripped: the margin and the zero padding sometimes decode as
    a space, which is not a recognition error.
    """
    from recipes.models import run_batched

    probs = run_batched(session, batch, batch_size)
    return [s.strip() for s in ctc_greedy_decode(probs, characters)]


def det_agreement(ref: np.ndarray, out: np.ndarray, threshold: float = 0.3) -> dict[str, float]:
    """Agreement of two det probability maps [N, 1, H, W].

    Returns ``iou`` of the maps binarised at ``threshold`` (DBNet's ``thresh`` in RapidOCR's
    config), ``mean_abs_diff`` of the probabilities and ``max_abs_diff``.
    """
    a, b = ref >= threshold, out >= threshold
    union = np.logical_or(a, b).sum()
    iou = float(np.logical_and(a, b).sum() / union) if union else 1.0
    diff = np.abs(ref.astype(np.float32) - out.astype(np.float32))
    return {"iou": iou, "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}


def _sensitivity() -> None:  # pragma: no cover - the README's measurement script
    import onnx

    from quantkit.capture import calibrate
    from recipes.models import layer_sensitivity

    det, rec = model_paths()
    det_cal, det_ev = det_sets()
    cal_lines, ev_lines = rec_sets()
    for label, path, cal, ev, batch in (("det", det, det_cal, det_ev, 4),
                                        ("rec", rec, rec_batch(cal_lines),
                                         rec_batch(ev_lines)[::4], 8)):
        scales = calibrate(path, [{"x": cal[i: i + batch]} for i in range(0, len(cal), batch)],
                           method=CALIBRATION_METHOD).scales
        result = layer_sensitivity(onnx.load(str(path)), scales, ev, batch_size=batch)
        print(f"{label}: only this layer INT8 -> output SQNR vs FP32 ({len(ev)} inputs), worst 10:")
        for name, db in list(result.items())[:10]:
            print(f"  {db:6.1f} dB  {name}")


def _measure(cache: Path) -> None:  # pragma: no cover - the README's measurement script
    import json
    import time

    import onnx

    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes.models import ort_session, rtx_build, rtx_parse, run_batched

    cache.mkdir(parents=True, exist_ok=True)
    det, rec = model_paths()
    chars = character_list(rec)
    cal_lines, ev_lines = rec_sets()
    truth = [line.text for line in ev_lines]
    rec_cal, rec_ev = rec_batch(cal_lines), rec_batch(ev_lines)
    det_cal, det_ev = det_sets()
    det_ref = run_batched(ort_session(det), det_ev, 4)
    fp32_cer = character_error_rate(recognise(ort_session(rec), rec_ev, chars), truth)
    print(f"rec: {len(cal_lines)} calibration / {len(ev_lines)} evaluation lines, FP32 CER "
          f"{fp32_cer:.4f}; det: {len(det_cal)} / {len(det_ev)} pages")
    fp16_bn = {"op_type": "BatchNormalization", "precision": "fp32"}
    jobs = [
        ("det", det, det_cal, {"default": "fp16", "default_float": "fp16",
                               "overrides": [fp16_bn]}, "fp16 (BN fp32)", DET_TRT_SHAPES),
        ("det", det, det_cal, DET_INT8_PLAN, "int8", DET_TRT_SHAPES),
        ("det", det, det_cal, {**DET_INT8_PLAN, "default_float": "fp16", "overrides": [fp16_bn]},
         "int8, fp16 rest (BN fp32)", DET_TRT_SHAPES),
        ("det", det, det_cal, DET_MIXED_PLAN, "mixed", DET_TRT_SHAPES),
        ("rec", rec, rec_cal, {"default": "fp16", "default_float": "fp16"}, "fp16",
         REC_TRT_SHAPES),
        ("rec", rec, rec_cal, REC_INT8_PLAN, "int8", REC_TRT_SHAPES),
        ("rec", rec, rec_cal, {**REC_INT8_PLAN, "default_float": "fp16"}, "int8, fp16 rest",
         REC_TRT_SHAPES),
        ("rec", rec, rec_cal, REC_MIXED_PLAN, "mixed", REC_TRT_SHAPES),
    ]
    scales: dict[str, Any] = {}
    for kind, path, cal, cfg, label, shapes in jobs:
        if kind not in scales:
            start = time.perf_counter()
            batch = 4 if kind == "det" else 8
            scales[kind] = calibrate(path, [{"x": cal[i: i + batch]}
                                            for i in range(0, len(cal), batch)],
                                     method=CALIBRATION_METHOD).scales
            print(f"calibrate {kind}: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        res = quantize_model(onnx.load(str(path)), scales[kind], PrecisionConfig.from_mapping(cfg))
        q_s = time.perf_counter() - start
        out = cache / f"{kind}-{label.replace(' ', '_').replace(',', '').replace('(', '')}.onnx"
        out = out.with_name(out.name.replace(")", ""))
        save_model(res.model, out)
        ops = [n.op_type for n in res.model.graph.node]
        lint = lint_model(res.model).summary()
        sess = ort_session(out)
        if kind == "det":
            metric = det_agreement(det_ref, run_batched(sess, det_ev, 4))
        else:
            metric = {"cer": character_error_rate(recognise(sess, rec_ev, chars), truth)}
        prec, parse_s = rtx_parse(out)
        nbytes, build_s = rtx_build(out, shapes)
        print(json.dumps({
            "model": kind, "plan": label, **{k: round(v, 4) for k, v in metric.items()},
            "quantize_s": round(q_s, 2), "Q": ops.count("QuantizeLinear"),
            "DQ": ops.count("DequantizeLinear"),
            "lint": {k: lint[k] for k in ("errors", "warnings", "info")},
            "rtx_int8_layers": sum(v == "int8" for v in prec.values()),
            "rtx_parse_s": round(parse_s, 2), "rtx_build_s": round(build_s, 1),
            "engine_mb": round(nbytes / 2**20, 1)}))


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Measure PP-OCRv4 det/rec FP16/INT8/mixed.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for quantized models (default: pytest's cache)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="per-layer scan instead: SQNR with only one layer in INT8")
    from recipes.models import default_cache

    args = parser.parse_args()
    if args.sensitivity:
        _sensitivity()
    else:
        _measure(args.cache or default_cache())


__all__ = ["CALIBRATION_METHOD", "DET_INT8_PLAN", "DET_MIXED_PLAN", "DET_TRT_SHAPES",
           "REC_INT8_PLAN", "REC_MIXED_PLAN", "REC_TRT_SHAPES", "TextLine",
           "character_error_rate", "character_list", "ctc_greedy_decode", "det_agreement",
           "det_batch", "det_preprocess", "det_sets", "edit_distance", "font_paths",
           "model_paths", "rec_batch", "rec_preprocess", "rec_sets", "recognise", "text_lines",
           "text_strings"]
