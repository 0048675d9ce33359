"""Image preprocessing: the ``preprocess:`` block of a recipe.

The pipeline, in order (torchvision's conventions for resize and crop)::

    decode -> convert to RGB / L -> resize -> center crop -> to array -> BGR swap
           -> * scale -> (x - mean) / std -> layout (CHW / HWC) -> dtype

16-bit (and 32-bit / float) single-channel images keep their precision: their real range is
mapped onto the 0..255 pixel scale in float (65535 -> 255) instead of being saturated at 255
by an 8-bit conversion (:func:`wide_to_float`).

``mean`` and ``std`` are applied after ``scale`` and are given in the order of the output
channels (so in B, G, R order when ``color: BGR``). ``uint8`` output keeps the raw pixel
values: ``scale``, ``mean`` and ``std`` must then be left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantkit.data.base import InputSpec
from quantkit.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

#: largest resize / crop side (pixels): bigger sizes are refused before any image is decoded
MAX_SIDE = 16384
#: largest resized image (pixels), also when ``resize: N`` scales a long, thin image
MAX_PIXELS = 1 << 27

Side = Annotated[int, Field(gt=0, le=MAX_SIDE)]
Size = Side | tuple[Side, Side]

#: resize and crop used when a model input has dynamic spatial dims (the ImageNet convention)
DYNAMIC_RESIZE = 256
DYNAMIC_CROP = 224


class PreprocessSpec(BaseModel):
    """How images are turned into model input tensors (a recipe's ``preprocess:`` block).

    Attributes:
        resize: an int resizes the shorter side to that size keeping the aspect ratio
            (torchvision ``Resize(int)``); ``[h, w]`` resizes to exactly that size;
            ``None`` keeps the decoded size.
        interpolation: ``bilinear`` (default), ``nearest`` or ``bicubic`` (Pillow filters).
        center_crop: an int crops a centred square, ``[h, w]`` a centred rectangle; images
            smaller than the crop are zero-padded (as torchvision ``CenterCrop``).
        color: ``RGB`` (default), ``BGR`` or ``L`` (grayscale, one channel).
        scale: multiplies the pixel values (0..255); default ``1/255`` for float outputs.
        mean: per-channel values subtracted after scaling (one value or one per channel).
        std: per-channel values divided by after subtracting ``mean``.
        layout: ``NCHW`` (default) or ``NHWC``.
        dtype: ``float32`` (default), ``float16`` or ``uint8`` (raw pixels).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    resize: Size | None = None
    interpolation: Literal["bilinear", "nearest", "bicubic"] = "bilinear"
    center_crop: Size | None = None
    color: Literal["RGB", "BGR", "L"] = "RGB"
    scale: float | None = Field(default=None, gt=0)
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"

    @model_validator(mode="after")
    def _check(self) -> PreprocessSpec:
        channels = self.channels
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) not in (1, channels):
                raise ValueError(
                    f"{key} has {len(values)} values but color {self.color} has {channels} "
                    f"channel(s); give 1 or {channels} values"
                )
        if self.std is not None and any(v == 0 for v in self.std):
            raise ValueError("std values must be non-zero")
        if self.dtype == "uint8" and (
            self.scale not in (None, 1.0) or self.mean is not None or self.std is not None
        ):
            raise ValueError("dtype uint8 keeps raw pixel values; remove scale, mean and std")
        return self

    @property
    def channels(self) -> int:
        """Number of output channels (3 for RGB/BGR, 1 for L)."""
        return 1 if self.color == "L" else 3

    @property
    def effective_scale(self) -> float:
        """The scale actually applied: ``scale``, else 1/255 (float) or 1 (uint8)."""
        if self.scale is not None:
            return self.scale
        return 1.0 if self.dtype == "uint8" else 1.0 / 255.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None,
                     where: str = "preprocess") -> PreprocessSpec:
        """Build a spec from a parsed YAML/JSON mapping.

        Args:
            data: the ``preprocess:`` mapping (``None`` or empty gives the defaults).
            where: the file the mapping comes from, used in error messages.

        Raises:
            InputError: unknown keys or invalid values, naming ``where`` and the key.
        """
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InputError(
                f"{where}: preprocess must be a mapping of settings, got "
                f"{type(data).__name__}."
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise InputError(f"{where}: invalid preprocess block: {_describe(err)}.") from err

    @classmethod
    def default_for(cls, spec: InputSpec) -> PreprocessSpec:
        """A sensible default for a model image input, derived from its shape and dtype.

        ``[N, C, H, W]`` gives NCHW and ``[N, H, W, C]`` gives NHWC (C = 3: RGB, C = 1: L);
        static ``H, W`` give ``resize: [H, W]``; dynamic ones give ``resize: 256`` and
        ``center_crop: 224``. Pixels are scaled to ``[0, 1]`` (no mean/std); the dtype follows
        the model's when it is float16 or uint8.

        Raises:
            InputError: the input does not look like an image batch.
        """
        shape = spec.shape
        layout: str | None = None
        if len(shape) == 4:
            if shape[1] in (1, 3):
                layout, channels, hw = "NCHW", shape[1], shape[2:]
            elif shape[3] in (1, 3):
                layout, channels, hw = "NHWC", shape[3], shape[1:3]
        if layout is None:
            raise InputError(
                f"model input {spec.describe()} does not look like an image batch "
                "([N,3,H,W], [N,H,W,3] or with 1 channel), so no default preprocessing can be "
                "derived. Give a preprocess: block in the recipe (resize, layout, ...)."
            )
        dtype = np.dtype(spec.dtype).name
        values: dict[str, Any] = {
            "layout": layout,
            "color": "L" if channels == 1 else "RGB",
            "dtype": dtype if dtype in ("float16", "uint8") else "float32",
        }
        h, w = hw
        if any(isinstance(v, int) and v > MAX_SIDE for v in (h, w)):
            raise InputError(
                f"model input {spec.describe()}: an image side larger than {MAX_SIDE} pixels; "
                "give a preprocess: block (resize, center_crop) that fits the model.")
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            values["resize"] = (h, w)
        else:
            values["resize"] = DYNAMIC_RESIZE
            values["center_crop"] = (
                h if isinstance(h, int) and h > 0 else DYNAMIC_CROP,
                w if isinstance(w, int) and w > 0 else DYNAMIC_CROP,
            )
            logger.info("input %s has dynamic spatial dims: resizing to %d and cropping %s",
                        spec.name, DYNAMIC_RESIZE, values["center_crop"])
        return cls(**values)

    def apply(self, image: Image.Image) -> np.ndarray:
        """Preprocess one decoded image into one sample (``CHW`` or ``HWC``)."""
        from PIL import Image

        filters = {
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
            "bicubic": Image.Resampling.BICUBIC,
        }
        mode = "L" if self.color == "L" else "RGB"
        wide = image.mode in WIDE_MODES
        if wide:
            # 16/32-bit integer or float pixels: keep their precision and map their real range
            # onto 0..255 in float (Pillow's convert("L") would saturate everything above 255)
            image = Image.fromarray(wide_to_float(image), mode="F")
        elif image.mode != mode:
            image = image.convert(mode)
        if self.resize is not None:
            image = image.resize(_resize_wh(image.size, self.resize),
                                 resample=filters[self.interpolation])
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if wide and mode == "RGB":
            pixels = np.repeat(pixels, 3, axis=2)  # a single-channel image as grey RGB
        if wide and self.dtype == "uint8":
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        if self.center_crop is not None:
            pixels = center_crop(pixels, _pair(self.center_crop))
        if self.color == "BGR":
            pixels = pixels[:, :, ::-1]
        out: np.ndarray
        if self.dtype == "uint8":
            out = np.ascontiguousarray(pixels, dtype=np.uint8)
        else:
            out = pixels.astype(np.float32) * np.float32(self.effective_scale)
            if self.mean is not None:
                out -= np.asarray(self.mean, dtype=np.float32)
            if self.std is not None:
                out /= np.asarray(self.std, dtype=np.float32)
            out = out.astype(self.dtype, copy=False)
        if self.layout == "NCHW":
            out = np.ascontiguousarray(out.transpose(2, 0, 1))
        return out


#: Pillow modes with more than 8 bits per pixel (one channel): rescaled by :func:`wide_to_float`.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def wide_to_float(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image as float32 on the 0..255 pixel scale.

    16-bit modes (and ``I``, Pillow's mode for 16-bit PNGs, when its values fit 16 bits) are
    divided by 257 (65535 -> 255); ``I`` values beyond 16 bits by their 32-bit range; float
    images (``F``) are taken as already on the 0..255 scale when their maximum is at most 255,
    else as 0..1 data when at most 1, and otherwise scaled by their own maximum.
    """
    arr = np.asarray(image).astype(np.float32)
    if image.mode.startswith("I;16"):
        return arr / np.float32(257.0)
    if image.mode == "I":
        top = float(arr.max()) if arr.size else 0.0
        return arr / np.float32(257.0 if top <= 65535 else 16843009.0)
    top = float(np.abs(arr).max()) if arr.size else 0.0
    if top <= 1.0:
        return arr * np.float32(255.0)
    return arr if top <= 255.0 else arr * np.float32(255.0 / top)


def center_crop(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop the centre ``size = (h, w)`` of an ``HWC`` array, zero-padding if it is smaller.

    Offsets follow torchvision: ``top = round((H - h) / 2)``, ``left = round((W - w) / 2)``.
    """
    crop_h, crop_w = size
    height, width = pixels.shape[:2]
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        pixels = np.pad(pixels, ((pad_h // 2, (pad_h + 1) // 2),
                                 (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = pixels.shape[:2]
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return pixels[top:top + crop_h, left:left + crop_w]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resize_wh(size_wh: tuple[int, int], resize: int | tuple[int, int]) -> tuple[int, int]:
    """Target (width, height) for PIL: exact ``[h, w]``, or shorter side = ``resize``."""
    width, height = size_wh
    if not isinstance(resize, int):
        out = int(resize[1]), int(resize[0])
    elif width <= height:
        out = resize, int(resize * height / width)
    else:
        out = int(resize * width / height), resize
    if out[0] * out[1] > MAX_PIXELS:
        raise InputError(
            f"preprocess.resize {resize}: a {width}x{height} image would become "
            f"{out[0]}x{out[1]} pixels, more than {MAX_PIXELS:,}. Give resize as [height, "
            "width], or a smaller size.")
    return out


_HINTS = {
    "resize": f"expected a positive int (shorter side) or [height, width], each at most "
              f"{MAX_SIDE}",
    "center_crop": f"expected a positive int or [height, width], each at most {MAX_SIDE}",
}


def _describe(err: ValidationError) -> str:
    """One short message per offending key (union types report one line, not one per arm)."""
    allowed = ", ".join(PreprocessSpec.model_fields)
    parts: dict[str, str] = {}
    for item in err.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        key = f"preprocess.{field}" if field else "preprocess"
        if key in parts:
            continue
        if item["type"] == "extra_forbidden":
            parts[key] = f"unknown key '{key}' (allowed keys: {allowed})"
        elif not field:
            parts[key] = f"{key}: {str(item['msg']).removeprefix('Value error, ')}"
        else:
            msg = _HINTS.get(field) or str(item["msg"])
            parts[key] = f"{key}: {msg} (got {_short(item.get('input'))})"
    return "; ".join(parts.values())


def _short(value: Any) -> str:
    """``repr`` of a bad value, cut short without expanding it (a hostile value may be huge)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 2, 60, 60
    return short.repr(value)
