"""Calibration and evaluation image sets from photos that pip packages ship (no download).

Sources: scikit-image's bundled ``skimage/data`` photos (the ones in the package itself, not
the ones its ``pooch`` fetcher downloads) and scikit-learn's ``china.jpg`` / ``flower.jpg``.
Each photo yields several *views*: random crops at several scales, horizontal flips, and the
full frame. The two sets are drawn from **disjoint photos** (:data:`CALIBRATION_PHOTOS` and
:data:`EVALUATION_PHOTOS` share no source, and ``motorcycle_left`` / ``motorcycle_right``,
two shots of one scene, sit on the same side), so no evaluation image is a crop of a
calibration image.

Preprocessing for EfficientNet-Lite0 follows its TensorFlow reference (``efficientnet/lite``):
RGB, resize so the short side is ``224 / 0.875 = 256``, centre crop 224x224, then
``(x - 127) / 128`` per channel, NCHW float32.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

#: ``(package, relative path)`` of every bundled photo used here.
PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "cell": ("skimage", "data/cell.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "clock_motion": ("skimage", "data/clock_motion.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "color": ("skimage", "data/color.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "horse": ("skimage", "data/horse.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "ihc": ("skimage", "data/ihc.png"),
    "logo": ("skimage", "data/logo.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}

#: photos whose views calibrate the models: objects and scenes, plus textures and scientific
#: images (diverse activations help calibration).
CALIBRATION_PHOTOS: tuple[str, ...] = (
    "astronaut", "china", "horse", "clock_motion", "coins", "moon", "brick", "grass", "ihc",
    "cell", "hubble_deep_field",
)
#: ImageNet-like photos (a cat, an espresso, a rocket, a daisy, a cameraman with a tripod, a
#: moped in two shots) whose views evaluate top-1 agreement; disjoint from calibration.
EVALUATION_PHOTOS: tuple[str, ...] = (
    "chelsea", "coffee", "rocket", "flower", "camera", "motorcycle_left", "motorcycle_right",
)
#: images outside ImageNet's classes (textures, a fundus photo, a logo, a colour chart): the
#: FP32 top-1 is often a near tie there, so agreement measures noise more than accuracy; reported
#: separately, never used for calibration.
OUT_OF_DISTRIBUTION_PHOTOS: tuple[str, ...] = ("gravel", "retina", "color", "logo")

EFFNET_SIZE = 224
EFFNET_RESIZE = 256  # 224 / 0.875, the reference's centre-crop padding of 32
EFFNET_MEAN = 127.0
EFFNET_STD = 128.0


def photo_path(name: str) -> Path:
    """Path of a bundled photo.

    Raises:
        KeyError: an unknown photo name.
        ModuleNotFoundError: scikit-image / scikit-learn is not installed.
        FileNotFoundError: the installed package does not ship the file.
    """
    package, rel = PHOTO_FILES[name]
    spec = importlib.util.find_spec(package)  # locate, don't import (sklearn imports scipy)
    if spec is None or not spec.submodule_search_locations:
        pip_name = {"skimage": "scikit-image", "sklearn": "scikit-learn"}[package]
        raise ModuleNotFoundError(f"{package} is not installed: pip install {pip_name}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not shipped by the installed {package} package.")
    return path


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as an RGB ``uint8`` array ``[H, W, 3]`` (grey and RGBA converted).

    RGBA images (``horse``, ``logo``) are composited onto white, as a viewer shows them.
    """
    from PIL import Image

    with Image.open(photo_path(name)) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        rgb = im.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy()


def random_views(image: np.ndarray, count: int, rng: np.random.Generator, *,
                 min_scale: float = 0.35) -> Iterator[np.ndarray]:
    """``count`` views of ``image``: the full frame, its mirror, then random crops.

    Crops cover ``min_scale``..1 of the shorter side, with aspect ratio 3/4..4/3, and are
    mirrored with probability 1/2. Views are returned at their crop size (``uint8`` RGB);
    model preprocessing resizes them.
    """
    h, w = image.shape[:2]
    for i in range(count):
        if i == 0:
            yield image
            continue
        if i == 1:
            yield image[:, ::-1]
            continue
        side = min(h, w) * rng.uniform(min_scale, 1.0)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        ch = int(min(h, round(side / np.sqrt(aspect))))
        cw = int(min(w, round(side * np.sqrt(aspect))))
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        crop = image[top: top + ch, left: left + cw]
        yield crop[:, ::-1] if rng.random() < 0.5 else crop


def effnet_preprocess(image: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite0 input ``[3, 224, 224]`` float32 from an RGB ``uint8`` image.

    Bilinear resize of the short side to 256, centre crop 224, ``(x - 127) / 128``.
    """
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image))
    w, h = im.size
    scale = EFFNET_RESIZE / min(w, h)
    nw, nh = max(EFFNET_SIZE, round(w * scale)), max(EFFNET_SIZE, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - EFFNET_SIZE) // 2, (nh - EFFNET_SIZE) // 2
    im = im.crop((left, top, left + EFFNET_SIZE, top + EFFNET_SIZE))
    x = (np.asarray(im, dtype=np.float32) - EFFNET_MEAN) / EFFNET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def image_set(photos: Sequence[str], views_per_photo: int, seed: int, *,
              min_scale: float = 0.35) -> np.ndarray:
    """EfficientNet-Lite0 inputs ``[len(photos) * views_per_photo, 3, 224, 224]`` float32."""
    rng = np.random.default_rng(seed)
    out = []
    for name in photos:
        img = load_photo(name)
        out.extend(effnet_preprocess(v)
                   for v in random_views(img, views_per_photo, rng, min_scale=min_scale))
    return np.stack(out).astype(np.float32)


def calibration_set(views_per_photo: int = 6, seed: int = 0) -> np.ndarray:
    """Calibration inputs from :data:`CALIBRATION_PHOTOS` (crops down to 35% of the side)."""
    return image_set(CALIBRATION_PHOTOS, views_per_photo, seed, min_scale=0.35)


def evaluation_set(views_per_photo: int = 64, seed: int = 1) -> np.ndarray:
    """Evaluation inputs from :data:`EVALUATION_PHOTOS`.

    Crops keep at least half of the short side, so the object stays in view (as ImageNet's
    validation crops do); ``views_per_photo`` defaults to 64 (448 images: top-1 agreement
    measured on 224 views moved by +-1.5 points between two random draws, because ~5% of
    views are near ties for FP32 itself).
    """
    return image_set(EVALUATION_PHOTOS, views_per_photo, seed, min_scale=0.5)


def out_of_distribution_set(views_per_photo: int = 16, seed: int = 2) -> np.ndarray:
    """Views of :data:`OUT_OF_DISTRIBUTION_PHOTOS` (report-only, see there)."""
    return image_set(OUT_OF_DISTRIBUTION_PHOTOS, views_per_photo, seed, min_scale=0.5)


def save_npy(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` to ``path`` atomically (for ``quantkit calibrate --data FILE.npy``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, p)
    return p


__all__ = ["CALIBRATION_PHOTOS", "EVALUATION_PHOTOS", "OUT_OF_DISTRIBUTION_PHOTOS",
           "calibration_set", "effnet_preprocess", "evaluation_set", "image_set", "load_photo",
           "out_of_distribution_set", "photo_path", "random_views", "save_npy"]
