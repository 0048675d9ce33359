"""PP-OCRv4's data: text lines and pages rendered with Pillow from known strings.

Text is rendered in DejaVu fonts (Debian ``fonts-dejavu-core``, or the copies matplotlib
ships), so the ground truth is exact; calibration and evaluation strings are disjoint.
Preprocessing follows PaddleOCR / RapidOCR: ``(x / 255 - 0.5) / 0.5``, RGB, rec lines resized
to height 48 and right-padded with zeros to a fixed width. :func:`prepare` writes the rec
recipe's data (``rec.yaml``).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recipes import files
from recipes.ppocr.model import REC_HEIGHT, REC_WIDTH, model_paths

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
    photos of :mod:`recipes.images` (needs scikit-image and scikit-learn).
    """
    from recipes import images

    cal_bg = [images.load_photo(n) for n in images.CALIBRATION_PHOTOS[:6]]
    ev_bg = [images.load_photo(n) for n in images.EVALUATION_PHOTOS]
    return (det_batch(calibration, seed=10, size=size, backgrounds=cal_bg),
            det_batch(evaluation, seed=30, size=size, backgrounds=ev_bg))


#: rendered text lines of the rec recipe: calibration, evaluation.
REC_CALIBRATION_LINES = 48
REC_EVALUATION_LINES = 64


def prepare(out: Path, *, calibration: int = REC_CALIBRATION_LINES,
            evaluation: int = REC_EVALUATION_LINES, force: bool = False) -> Path:
    """Write ``out/ppocr_rec``: the packaged rec model, rendered lines and their text.

    Returns the folder.
    """
    _, rec = model_paths()
    folder = out / "ppocr_rec"
    settings = {"model": "ppocr_rec", "source": str(rec), "bytes": rec.stat().st_size,
                "calibration_lines": calibration, "evaluation_lines": evaluation,
                "width": REC_WIDTH}
    if not force and files.up_to_date(folder, settings):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    files.copy(rec, folder / "model.onnx")
    cal_lines, ev_lines = rec_sets(calibration, evaluation)
    cal, ev = rec_batch(cal_lines), rec_batch(ev_lines)
    texts = [line.text for line in ev_lines]
    if any("\n" in t or "\r" in t for t in texts):  # pragma: no cover - the generator's strings
        raise ValueError("a rendered string contains a line break; it cannot be a text label")
    files.save_npy(cal, folder / "calibration.npy")
    files.save_npy(ev, folder / "evaluation.npy")
    files.save_text("".join(f"{t}\n" for t in texts), folder / "evaluation_labels.txt")
    files.manifest(folder, settings, {
        "model.onnx": f"copy of {rec.name} (input x [N, 3, 48, W], output softmax_11.tmp_0 "
                      "[N, W/8, 6625]; CTC dictionary in the 'character' metadata)",
        "calibration.npy": f"{list(cal.shape)} float32: rendered lines",
        "evaluation.npy": f"{list(ev.shape)} float32: other rendered lines",
        "evaluation_labels.txt": f"{len(texts)} lines, the text of each evaluation line",
    })
    return folder


__all__ = ["FONT_DIRS", "FONT_FILES", "REC_CALIBRATION_LINES", "REC_EVALUATION_LINES",
           "TextLine", "det_batch", "det_page", "det_preprocess", "det_sets", "font_paths",
           "prepare", "rec_batch", "rec_preprocess", "rec_sets", "render_line", "text_lines",
           "text_strings"]
