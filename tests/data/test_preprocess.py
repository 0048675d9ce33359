from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from quantkit.data import InputSpec, PreprocessSpec
from quantkit.errors import InputError


def random_image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def test_defaults() -> None:
    spec = PreprocessSpec()
    assert spec.interpolation == "bilinear" and spec.color == "RGB"
    assert spec.layout == "NCHW" and spec.dtype == "float32"
    assert spec.effective_scale == pytest.approx(1 / 255)
    assert PreprocessSpec(dtype="uint8").effective_scale == 1.0


def test_imagenet_pipeline_matches_independent_computation() -> None:
    image = random_image(60, 40)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    spec = PreprocessSpec.from_mapping(
        {"resize": 32, "center_crop": 24, "mean": mean, "std": std}, where="r.yaml")
    got = spec.apply(image)
    # independent: shorter side 40 -> 32, so 60 -> int(32 * 60 / 40) = 48
    resized = np.asarray(image.resize((48, 32), Image.Resampling.BILINEAR), dtype=np.float64)
    top, left = (32 - 24) // 2, (48 - 24) // 2
    crop = resized[top:top + 24, left:left + 24]
    want = ((crop / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)
    assert got.shape == (3, 24, 24) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_exact_resize_layouts_and_colors() -> None:
    image = random_image(20, 10)
    pixels = np.asarray(image).astype(np.float64)
    hwc = PreprocessSpec(layout="NHWC", interpolation="nearest").apply(image)
    assert hwc.shape == (10, 20, 3)
    np.testing.assert_allclose(hwc, pixels / 255, rtol=1e-6)
    bgr = PreprocessSpec(color="BGR", scale=1.0, mean=[1, 2, 3]).apply(image)
    np.testing.assert_allclose(bgr, pixels[:, :, ::-1].transpose(2, 0, 1)
                               - np.array([1, 2, 3])[:, None, None])
    raw = PreprocessSpec(dtype="uint8", layout="NHWC").apply(image)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, np.asarray(image))
    half = PreprocessSpec(dtype="float16", resize=[5, 7]).apply(image)
    assert half.dtype == np.float16 and half.shape == (3, 5, 7)
    want = np.asarray(image.resize((7, 5), Image.Resampling.BILINEAR)) / 255
    np.testing.assert_allclose(half.astype(np.float64), want.transpose(2, 0, 1), atol=1e-3)
    bicubic = PreprocessSpec(resize=[5, 7], interpolation="bicubic", layout="NHWC").apply(image)
    np.testing.assert_allclose(
        bicubic, np.asarray(image.resize((7, 5), Image.Resampling.BICUBIC)) / 255, atol=1e-6)


def test_grayscale() -> None:
    image = random_image(8, 6)
    r, g, b = np.asarray(image).astype(np.float64).transpose(2, 0, 1)
    luma = r * 299 / 1000 + g * 587 / 1000 + b * 114 / 1000  # ITU-R 601-2, as Pillow
    got = PreprocessSpec(color="L", scale=1.0).apply(image)
    assert got.shape == (1, 6, 8)
    np.testing.assert_allclose(got[0], luma, atol=1.0)
    gray = random_image(8, 6, "L")
    rgb = PreprocessSpec(scale=1.0, layout="NHWC").apply(gray)  # L -> RGB replicates
    assert rgb.shape == (6, 8, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.asarray(gray))
    np.testing.assert_array_equal(rgb[..., 2], np.asarray(gray))


def test_center_crop_geometry_and_padding() -> None:
    # pixel value encodes its column, so the crop offset is visible
    cols = np.tile(np.arange(30, dtype=np.uint8), (10, 1))
    image = Image.fromarray(cols, "L")
    got = PreprocessSpec(color="L", dtype="uint8", center_crop=[4, 6]).apply(image)
    np.testing.assert_array_equal(got[0], cols[3:7, 12:18])  # round((10-4)/2), ((30-6)/2)
    padded = PreprocessSpec(color="L", dtype="uint8", center_crop=[14, 8]).apply(image)
    assert padded.shape == (1, 14, 8)
    np.testing.assert_array_equal(padded[0, :2], 0)  # 4 rows of zero padding: 2 above
    np.testing.assert_array_equal(padded[0, -2:], 0)  # 2 below
    np.testing.assert_array_equal(padded[0, 2:12], cols[:, 11:19])


def test_resize_shorter_side_portrait() -> None:
    image = random_image(30, 50)  # w=30 is the shorter side
    got = PreprocessSpec(resize=12, layout="NHWC").apply(image)
    assert got.shape == (20, 12, 3)  # int(12 * 50 / 30) = 20


@pytest.mark.parametrize(
    ("shape", "dtype", "want"),
    [
        ((1, 3, 224, 224), "float32",
         {"layout": "NCHW", "color": "RGB", "resize": (224, 224), "dtype": "float32"}),
        (("N", 32, 48, 3), "float16",
         {"layout": "NHWC", "color": "RGB", "resize": (32, 48), "dtype": "float16"}),
        ((None, 1, 28, 28), "float32", {"layout": "NCHW", "color": "L", "resize": (28, 28)}),
        (("N", 3, "H", "W"), "float32", {"resize": 256, "center_crop": (224, 224)}),
        (("N", 224, 224, 3), "uint8", {"layout": "NHWC", "dtype": "uint8"}),
    ],
)
def test_default_for(shape, dtype, want) -> None:
    spec = PreprocessSpec.default_for(InputSpec("img", np.dtype(dtype), shape))
    for key, value in want.items():
        assert getattr(spec, key) == value


def test_default_for_non_image() -> None:
    with pytest.raises(InputError, match=r"tokens: int64\[Nx128\] does not look like an image"):
        PreprocessSpec.default_for(InputSpec("tokens", np.dtype("int64"), ("N", 128)))


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"resise": 224}, ["recipe.yaml", "unknown key 'preprocess.resise'", "resize"]),
        ({"layout": "NCWH"}, ["recipe.yaml", "preprocess.layout", "NCWH"]),
        ({"resize": [224]}, ["preprocess.resize"]),
        ({"resize": -3}, ["preprocess.resize"]),
        ({"mean": [0.5, 0.5]}, ["mean has 2 values", "3 channel"]),
        ({"color": "L", "std": [1, 2, 3]}, ["std has 3 values"]),
        ({"std": [0.0]}, ["non-zero"]),
        ({"dtype": "uint8", "mean": [1, 2, 3]}, ["uint8 keeps raw pixel values"]),
        ({"scale": 0}, ["preprocess.scale"]),
    ],
)
def test_from_mapping_errors(data, needles) -> None:
    with pytest.raises(InputError) as info:
        PreprocessSpec.from_mapping(data, where="recipe.yaml")
    for needle in needles:
        assert needle in str(info.value)


def test_from_mapping_accepts_yaml_lists_and_none() -> None:
    spec = PreprocessSpec.from_mapping({"resize": [10, 20], "center_crop": 8, "mean": [0.5]})
    assert spec.resize == (10, 20) and spec.center_crop == 8
    assert PreprocessSpec.from_mapping(None) == PreprocessSpec()
    with pytest.raises(InputError, match="x.yaml: preprocess must be a mapping"):
        PreprocessSpec.from_mapping(["resize"], where="x.yaml")  # type: ignore[arg-type]
