from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from quantkit.data import (
    SOURCE_KINDS,
    ArraySource,
    Batch,
    DataSource,
    ImageFolderSource,
    InputSpec,
    IterableSource,
    NpySource,
    NpzSource,
    open_source,
    register_source_kind,
)
from quantkit.errors import InputError

X = InputSpec("x", np.dtype("float32"), ("N", 3, 4, 4))


def test_dispatch_by_kind(tmp_path: Path, image_dir: Path) -> None:
    data = np.zeros((2, 3, 4, 4), np.float32)
    np.save(tmp_path / "d.npy", data)
    np.savez(tmp_path / "d.npz", x=data)
    with (tmp_path / "UPPER.NPZ").open("wb") as fp:
        np.savez(fp, x=data)
    assert isinstance(open_source(tmp_path / "d.npy", [X]), NpySource)
    assert isinstance(open_source(str(tmp_path / "d.npz"), [X]), NpzSource)
    assert isinstance(open_source(tmp_path / "UPPER.NPZ", [X]), NpzSource)
    assert isinstance(open_source(image_dir, [X]), ImageFolderSource)
    assert isinstance(open_source(data, [X]), ArraySource)
    assert isinstance(open_source({"x": data}, [X]), ArraySource)
    assert isinstance(open_source([data], [X]), IterableSource)
    src = open_source(tmp_path / "d.npy", [X])
    assert open_source(src, [X]) is src


def test_unknown_and_missing(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(InputError) as info:
        open_source(tmp_path / "data.txt", [X])
    message = str(info.value)
    assert "data.txt': unknown kind of data" in message
    for kind in ("hf:NAME[:CONFIG][:SPLIT]", "FILE.npz", "FILE.npy", "DIR/ of images"):
        assert kind in message
    with pytest.raises(InputError, match="missing.bin': no such file or folder"):
        open_source(tmp_path / "missing.bin", [X])
    with pytest.raises(InputError, match=r"missing\.npy: no such file"):
        open_source(tmp_path / "missing.npy", [X])
    with pytest.raises(InputError, match="not supported"):
        open_source(42, [X])


def test_preprocess_mapping(image_dir: Path) -> None:
    src = open_source(image_dir, [X], preprocess={"resize": [4, 4], "color": "BGR"})
    assert isinstance(src, ImageFolderSource)
    assert src.preprocess.color == "BGR"
    with pytest.raises(InputError, match="unknown key 'preprocess.size'"):
        open_source(image_dir, [X], preprocess={"size": 4})


class Constant(DataSource):
    description = "const:"

    def __init__(self, value: float) -> None:
        self.value = value

    def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
        yield {"x": np.full((batch_size, 3, 4, 4), self.value, np.float32)}


def test_register_source_kind() -> None:
    @register_source_kind("const", "const:VALUE", lambda s: s.startswith("const:"))
    def _open(spec, inputs, opts):
        return Constant(float(spec.split(":", 1)[1]))

    try:
        src = open_source("const:2.5", [X])
        assert next(iter(src.batches(2)))["x"][0, 0, 0, 0] == 2.5
        with pytest.raises(InputError, match="const:VALUE"):
            open_source("nothing-like-that", [X])
    finally:
        del SOURCE_KINDS["const"]


def test_seed_passed_through(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.arange(100, dtype=np.float32)[:, None, None, None]
            * np.ones((1, 3, 4, 4), np.float32))

    def first(seed):
        src = open_source(tmp_path / "d.npy", [X], seed=seed)
        return np.concatenate([b["x"][:, 0, 0, 0] for b in src.batches(8, 10)]).tolist()

    assert first(3) == first(3) != first(None) == list(range(10))
