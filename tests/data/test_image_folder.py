from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantkit.data import ImageFolderSource, InputSpec, PreprocessSpec, open_source
from quantkit.errors import InputError

NCHW = InputSpec("input", np.dtype("float32"), ("N", 3, 8, 8))
ORDER = ["a/img0.png", "a/img1.png", "b/c/img3.png", "b/img2.bmp", "img4.PNG", "img5.tif",
         "img6.webp"]
VALUES = [10, 20, 40, 30, 50, 60, 70]  # solid colour of each file above (10 * index + 10)


def ids(batches) -> list[int]:
    return [round(float(v) * 255) for b in batches for v in b["input"][:, 0, 0, 0]]


def test_files_sorted_recursive_and_filtered(image_dir: Path) -> None:
    src = ImageFolderSource(image_dir, [NCHW])
    assert [p.relative_to(image_dir).as_posix() for p in src.files] == ORDER
    assert src.num_samples == 7
    assert src.description.startswith(str(image_dir))


def test_batches_default_preprocess(image_dir: Path) -> None:
    src = open_source(str(image_dir), [NCHW])
    assert isinstance(src, ImageFolderSource)
    assert src.preprocess.resize == (8, 8) and src.preprocess.layout == "NCHW"
    batches = list(src.batches(3))
    assert [b["input"].shape for b in batches] == [(3, 3, 8, 8), (3, 3, 8, 8), (1, 3, 8, 8)]
    assert all(b["input"].dtype == np.float32 for b in batches)
    assert ids(batches) == VALUES  # solid colours survive resizing, webp is lossy: round
    assert ids(src.batches(2, max_samples=3)) == VALUES[:3]


def test_matches_direct_preprocessing(image_dir: Path) -> None:
    spec = PreprocessSpec(resize=10, center_crop=8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2],
                          layout="NHWC")
    nhwc = InputSpec("input", np.dtype("float16"), ("N", 8, 8, 3))
    src = ImageFolderSource(image_dir, [nhwc], preprocess=spec)
    got = np.concatenate([b["input"] for b in src.batches(4)])
    assert got.dtype == np.float16 and got.shape == (7, 8, 8, 3)
    for i, name in enumerate(ORDER):
        with Image.open(image_dir / name) as image:
            rgb = image.convert("RGB")
        w, h = rgb.size
        size = (10, int(10 * h / w)) if w <= h else (int(10 * w / h), 10)
        arr = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
        top, left = round((arr.shape[0] - 8) / 2), round((arr.shape[1] - 8) / 2)
        want = (arr[top:top + 8, left:left + 8] / 255 - [0.5, 0.4, 0.3]) / 0.2
        np.testing.assert_allclose(got[i].astype(np.float64), want, atol=2e-3)


def test_seeded_subset(image_dir: Path) -> None:
    def pick(seed):
        return ids(ImageFolderSource(image_dir, [NCHW], seed=seed).batches(2, 4))

    first = pick(1)
    assert first == pick(1) and len(first) == 4
    assert [VALUES.index(v) for v in first] == sorted(VALUES.index(v) for v in first)
    assert any(pick(s) != VALUES[:4] for s in range(5))
    assert pick(None) == VALUES[:4]


def test_grayscale_model(image_dir: Path) -> None:
    gray = InputSpec("input", np.dtype("uint8"), ("N", 1, 5, 5))
    src = ImageFolderSource(image_dir, [gray])
    batch = next(iter(src.batches(7)))["input"]
    assert batch.shape == (7, 1, 5, 5) and batch.dtype == np.uint8
    assert batch[:, 0, 0, 0].tolist()[:3] == VALUES[:3]


def test_corrupt_image_named(image_dir: Path) -> None:
    bad = image_dir / "b" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    src = ImageFolderSource(image_dir, [NCHW])
    with pytest.raises(InputError) as info:
        list(src.batches(16))
    assert str(bad) in str(info.value)
    assert "cannot decode image" in str(info.value)


def test_truncated_image_named(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "zz_cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="zz_cut.png"):
        list(ImageFolderSource(tmp_path, [NCHW]).batches(4))


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.md").write_text("no images here")
    with pytest.raises(InputError) as info:
        open_source(tmp_path, [NCHW])
    assert "contains no samples" in str(info.value) and str(tmp_path) in str(info.value)
    assert ".png" in str(info.value)


def test_size_mismatch_without_resize(image_dir: Path) -> None:
    src = ImageFolderSource(image_dir, [InputSpec("input", np.dtype("float32"),
                                                  ("N", 3, "H", "W"))],
                            preprocess=PreprocessSpec())
    with pytest.raises(InputError, match="Set preprocess.resize"):
        list(src.batches(4))


def test_shape_mismatch_with_model(image_dir: Path) -> None:
    src = ImageFolderSource(image_dir, [NCHW], preprocess=PreprocessSpec(resize=[8, 9]))
    with pytest.raises(InputError, match="axis 3 must be 8"):
        list(src.batches(4))


def test_model_input_checks(image_dir: Path) -> None:
    two = [NCHW, InputSpec("other", np.dtype("float32"), ("N", 4))]
    with pytest.raises(InputError, match="single model input"):
        ImageFolderSource(image_dir, two)
    with pytest.raises(InputError, match="does not look like an image"):
        ImageFolderSource(image_dir, [InputSpec("x", np.dtype("float32"), ("N", 10))])
    with pytest.raises(InputError, match="no such folder"):
        ImageFolderSource(image_dir / "nope", [NCHW])
