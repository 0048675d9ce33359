"""Inputs for the zoo models that have no data of their own in :mod:`recipes`.

Everything is made at run time from what packages ship; nothing is downloaded:

* pages of rendered text, turned by a known quarter turn (orientation classifier);
* text rendered with Pillow in DejaVu fonts (:mod:`recipes.ppocr`): text lines for the
  PP-OCR direction classifier (half of them turned by 180 degrees), captcha-like strings for
  the ddddocr recogniser and character scatters over photos for the ddddocr detector;
* **synthetic** speech-like audio for Silero VAD (no package ships a speech recording):
  voiced stretches made of a harmonic series on a gliding pitch with formant-like weights and
  a syllable-rate envelope, separated by pauses of low background noise.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

SAMPLE_RATE = 16000
#: Silero VAD v5/v6 at 16 kHz: 512 new samples per call plus the 64 samples before them
VAD_CHUNK = 512
VAD_CONTEXT = 64


def speech_like_audio(seconds: float, seed: int) -> np.ndarray:
    """Mono float32 audio in [-1, 1] at 16 kHz: voiced stretches and pauses (see module doc)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = rng.normal(0.0, 0.003, n)  # background noise
    pos = int(rng.integers(0, SAMPLE_RATE // 2))
    while pos < n:
        length = int(rng.uniform(0.4, 1.6) * SAMPLE_RATE)
        end = min(n, pos + length)
        t = np.arange(end - pos) / SAMPLE_RATE
        f0 = rng.uniform(95, 240) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        formants = rng.uniform([500, 1200, 2400], [900, 2000, 3200])
        voiced = np.zeros_like(t)
        for k in range(1, 30):
            freq = k * f0
            weight = sum(np.exp(-((freq - f) / 180.0) ** 2) for f in formants) + 0.05 / k
            voiced += weight * np.sin(k * phase)
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t) ** 2 + 0.1, 0, 1)
        voiced *= envelope * rng.uniform(0.1, 0.4) / (np.abs(voiced).max() + 1e-9)
        out[pos:end] += voiced + rng.normal(0, 0.01, end - pos) * envelope
        pos = end + int(rng.uniform(0.2, 0.9) * SAMPLE_RATE)
    return np.clip(out, -1, 1).astype(np.float32)


def vad_frames(seconds: float, seed: int) -> np.ndarray:
    """``[frames, 576]``: consecutive 512-sample chunks, each with its 64 samples of context."""
    audio = speech_like_audio(seconds, seed)
    padded = np.concatenate([np.zeros(VAD_CONTEXT, np.float32), audio])
    count = len(audio) // VAD_CHUNK
    return np.stack([padded[i * VAD_CHUNK: i * VAD_CHUNK + VAD_CHUNK + VAD_CONTEXT]
                     for i in range(count)]).astype(np.float32)


def rotated_pages(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Orientation-classifier inputs ``[N, 3, 224, 224]`` and their quarter turns ``[N]``.

    Pages of rendered text lines (some over photos), turned clockwise by 0 / 90 / 180 / 270
    degrees (label 0..3, the model's ``character`` metadata), BGR as OpenCV reads them,
    resized to 256 x 256, centre-cropped to 224 and normalised with ImageNet's mean and
    standard deviation (the package's preprocessing). The FP32 model names every turn of
    the evaluation pages correctly.
    """
    from PIL import Image

    from recipes import images, ppocr

    rng = np.random.default_rng(seed)
    pool = ppocr.text_lines(count * 6, seed, hard_fraction=0.2)
    photos = [images.load_photo(n) for n in images.CALIBRATION_PHOTOS[:4]]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    xs, labels = [], []
    for i in range(count):
        page = ppocr.det_page(pool[i * 6: i * 6 + 6], (320, 320), rng,
                              photos[i % len(photos)] if i % 3 == 2 else None)
        turn = (i + int(rng.integers(0, 4))) % 4
        bgr = np.ascontiguousarray(np.rot90(page, k=-turn)[:, :, ::-1])
        im = Image.fromarray(bgr).resize((256, 256), Image.Resampling.LANCZOS)
        x = np.asarray(im, np.float32)[16:240, 16:240] / 255.0
        xs.append(((x - mean) / std).transpose(2, 0, 1))
        labels.append(turn)
    return np.stack(xs).astype(np.float32), np.array(labels, np.int64)


def cls_lines(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PP-OCR direction-classifier inputs ``[N, 3, 48, 192]`` and labels (1: turned 180)."""
    from PIL import Image

    from recipes import ppocr

    xs, labels = [], []
    for i, line in enumerate(ppocr.text_lines(count, seed, hard_fraction=0.3)):
        img = line.image[::-1, ::-1] if i % 2 else line.image
        h, w = img.shape[:2]
        new_w = min(192, int(np.ceil(48 * w / h)))
        im = Image.fromarray(np.ascontiguousarray(img)).resize((new_w, 48),
                                                               Image.Resampling.BILINEAR)
        x = np.zeros((3, 48, 192), np.float32)
        x[:, :, :new_w] = ((np.asarray(im, np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
        xs.append(x)
        labels.append(i % 2)
    return np.stack(xs), np.array(labels, np.int64)


def captcha_texts(count: int, seed: int) -> list[str]:
    """Random 4-6 character strings of digits and ASCII letters."""
    rng = np.random.default_rng(seed)
    alphabet = string.ascii_letters + string.digits
    return ["".join(alphabet[int(k)] for k in rng.integers(0, len(alphabet), int(n)))
            for n in rng.integers(4, 7, count)]


def captchas(count: int, seed: int, width: int = 160) -> np.ndarray:
    """Inputs of the ddddocr recogniser, ``[N, 1, 64, width]``: grey captcha-like text, ``/ 255``.

    Each string is drawn character by character with a random font, size, vertical jitter and
    small rotation over a noisy light background with a few interference lines.
    """
    from PIL import Image, ImageDraw, ImageFont

    from recipes import ppocr

    rng = np.random.default_rng(seed)
    fonts = ppocr.font_paths()
    out = []
    for text in captcha_texts(count, seed):
        im = Image.new("L", (width, 64), int(rng.integers(200, 256)))
        draw = ImageDraw.Draw(im)
        x = int(rng.integers(4, 14))
        step = (width - 2 * x) / max(len(text), 1)
        for ch in text:
            font = ImageFont.truetype(str(fonts[int(rng.integers(0, len(fonts)))]),
                                      int(rng.integers(30, 44)))
            glyph = Image.new("L", (56, 60), 0)
            ImageDraw.Draw(glyph).text((6, 2), ch, font=font, fill=255)
            glyph = glyph.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
            ink = Image.new("L", glyph.size, int(rng.integers(0, 90)))
            im.paste(ink, (int(x), int(rng.integers(-4, 8))), glyph)
            x += step
        for _ in range(int(rng.integers(1, 4))):
            pts = [tuple(int(v) for v in rng.integers(0, [width, 64])) for _ in range(2)]
            draw.line(pts, fill=int(rng.integers(60, 160)), width=int(rng.integers(1, 3)))
        arr = np.asarray(im, np.float32) + rng.normal(0, 6, (64, width))
        out.append(np.clip(arr, 0, 255)[None] / 255.0)
    return np.stack(out).astype(np.float32)


def character_scatters(count: int, seed: int, photos: Sequence[str]) -> np.ndarray:
    """Inputs of the ddddocr detector, ``[N, 3, 416, 416]``: 3-6 large characters over a photo.

    Pixels are BGR 0..255 floats (what ddddocr feeds its detector), photos from
    :mod:`recipes.images` resized to 416 x 416 and faded, the characters (CJK-free:
    Latin letters and digits in DejaVu fonts) drawn in strong colours at random places.
    """
    from PIL import Image, ImageDraw, ImageFont

    from recipes import images, ppocr

    rng = np.random.default_rng(seed)
    fonts = ppocr.font_paths()
    alphabet = string.ascii_uppercase + string.digits
    out = []
    for i in range(count):
        photo = Image.fromarray(images.load_photo(photos[i % len(photos)])).resize(
            (416, 416), Image.Resampling.BILINEAR)
        page = Image.blend(photo, Image.new("RGB", (416, 416), (230, 230, 230)), 0.4)
        draw = ImageDraw.Draw(page)
        for _ in range(int(rng.integers(3, 7))):
            font = ImageFont.truetype(str(fonts[int(rng.integers(0, len(fonts)))]),
                                      int(rng.integers(36, 72)))
            colour = tuple(int(v) for v in rng.integers(0, 120, 3))
            xy = tuple(int(v) for v in rng.integers(10, 340, 2))
            draw.text(xy, alphabet[int(rng.integers(0, len(alphabet)))], font=font, fill=colour)
        bgr = np.asarray(page, np.float32)[:, :, ::-1]
        out.append(bgr.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out)).astype(np.float32)


__all__ = ["SAMPLE_RATE", "captcha_texts", "captchas", "character_scatters", "cls_lines",
           "rotated_pages", "speech_like_audio", "vad_frames"]
