"""Fixtures for the data-source tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder of 7 solid-colour images of different sizes in nested folders.

    Image ``i`` in ``names`` has the grey level ``10 * i + 10``; a text file and a hidden
    file are there too and must be skipped.
    """
    root = tmp_path / "images"
    names = ["a/img0.png", "a/img1.png", "b/img2.bmp", "b/c/img3.png", "img4.PNG",
             "img5.tif", "img6.webp"]
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        value = 10 * i + 10
        size = (12 + i, 10 + 2 * i)  # (w, h): different sizes, resize makes them equal
        Image.new("RGB", size, (value, value, value)).save(path)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"not decoded: hidden files are skipped")
    return root
