"""Data mistakes caught before they make scales: integer data for float inputs, 16-bit
images, mixed image folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantkit.data import InputSpec, open_source
from quantkit.data._common import allow_cast
from quantkit.data.preprocess import PreprocessSpec
from quantkit.errors import InputError

IMG = InputSpec("pixels", np.dtype("float32"), ("N", 1, 4, 4))


@pytest.mark.parametrize("dtype", ["uint8", "int64", "uint16"])
def test_integer_data_for_a_float_input_is_refused(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.full((3, 1, 4, 4), 200, dtype=dtype))
    with pytest.raises(InputError) as info:
        open_source(str(path), [IMG])
    msg = str(info.value)
    assert str(path) in msg and "'pixels'" in msg and dtype in msg
    assert "unnormalised pixels" in msg and "allow_cast=True" in msg
    with allow_cast():
        batch = next(iter(open_source(str(path), [IMG]).batches(8)))
    assert batch["pixels"].dtype == np.float32 and float(batch["pixels"].max()) == 200.0


def test_in_memory_integer_arrays_are_refused_too() -> None:
    with pytest.raises(InputError, match="holds uint8 values"):
        list(open_source({"pixels": np.zeros((2, 1, 4, 4), np.uint8)}, [IMG]).batches(2))
    # float data of another width is still cast silently (same kind)
    out = next(iter(open_source({"pixels": np.ones((2, 1, 4, 4))}, [IMG]).batches(2)))
    assert out["pixels"].dtype == np.float32


def test_sixteen_bit_png_keeps_its_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 30000, 65535]] * 4, dtype=np.uint16)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(values).save(folder / "a.png")
    with Image.open(folder / "a.png") as check:
        assert check.mode.startswith("I")  # Pillow reads it as a 16-bit / 32-bit int image
    spec = PreprocessSpec(color="L")
    batch = next(iter(open_source(str(folder), [IMG], preprocess=spec).batches(1)))
    # default float scale 1/255 of the 0..255 pixel scale: 65535 -> 1.0, 1000 -> 1000/65535
    np.testing.assert_allclose(batch["pixels"][0, 0, 0], values[0] / 65535.0, rtol=1e-5)


def test_mixed_folder_logs_one_summary_line(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(folder / "a.png")
    Image.new("L", (5, 5), 7).save(folder / "b.png")
    Image.new("RGBA", (8, 6), (1, 2, 3, 4)).save(folder / "c.png")
    (folder / "readme.txt").write_text("x")
    rgb = InputSpec("x", np.dtype("float32"), ("N", 3, 4, 4))
    with caplog.at_level(logging.INFO, logger="quantkit.data.images"):
        batches = list(open_source(str(folder), [rgb]).batches(2))
    assert sum(len(b["x"]) for b in batches) == 3
    lines = [r for r in caplog.records if r.name == "quantkit.data.images"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    text = lines[0].getMessage()
    for needle in ("3 image(s) read", "2 converted to RGB (from L: 1, RGBA: 1)",
                   "2 different sizes", "1 other file(s) skipped", "float32 NCHW"):
        assert needle in text, text
