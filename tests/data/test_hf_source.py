"""Hugging Face datasets built locally in tmp folders; nothing touches the network."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantkit.data import HFSource, InputSpec, PreprocessSpec, open_source
from quantkit.data.hf import parse_hf_spec
from quantkit.errors import InputError, MissingExtraError

X = InputSpec("x", np.dtype("float32"), ("N", 2, 3))
LABEL = InputSpec("label", np.dtype("int32"), ("N",))
IMG = InputSpec("pixel_values", np.dtype("float32"), ("N", 3, 6, 6))


@pytest.fixture(autouse=True)
def datasets(monkeypatch, tmp_path_factory):
    """The real ``datasets`` library, offline, with its cache in a tmp folder."""
    cache = tmp_path_factory.getbasetemp() / "hf-home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    import datasets
    import huggingface_hub.constants

    # in case datasets was imported before the environment was set
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return datasets


def numeric_data(n: int = 10) -> dict[str, np.ndarray]:
    x = np.arange(n * 6, dtype=np.float64).reshape(n, 2, 3)
    return {"x": x, "label": np.arange(n, dtype=np.int64)}


@pytest.fixture
def saved(datasets, tmp_path: Path) -> Path:
    data = numeric_data()
    ds = datasets.Dataset.from_dict({"x": data["x"].tolist(), "label": data["label"].tolist(),
                                     "text": [f"row {i}" for i in range(10)]})
    ds.save_to_disk(tmp_path / "saved")
    return tmp_path / "saved"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder of PNGs in class subfolders: solid grey levels 10, 20, ..., 60."""
    root = tmp_path / "imgs"
    for i in range(6):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (9 + i, 7), (10 * i + 10,) * 3).save(folder / f"{i}.png")
    return root


def stacked(batches, name: str) -> np.ndarray:
    return np.concatenate([b[name] for b in batches])


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_save_to_disk(saved: Path, streaming: bool) -> None:
    src = open_source(f"hf:{saved}", [X, LABEL], streaming=streaming)
    assert isinstance(src, HFSource) and src.streaming is streaming
    assert src.num_samples == (None if streaming else 10)
    assert src.columns == {"x": "x", "label": "label"}
    batches = list(src.batches(4))
    assert [b["x"].shape for b in batches] == [(4, 2, 3), (4, 2, 3), (2, 2, 3)]
    assert all(b["x"].dtype == np.float32 and b["label"].dtype == np.int32 for b in batches)
    np.testing.assert_array_equal(stacked(batches, "x"), numeric_data()["x"])
    np.testing.assert_array_equal(stacked(batches, "label"), np.arange(10))
    few = list(src.batches(3, max_samples=5))
    assert [len(b["label"]) for b in few] == [3, 2]
    np.testing.assert_array_equal(stacked(few, "label"), np.arange(5))


def test_seeded_subset_map_style(saved: Path) -> None:
    def pick(seed):
        src = open_source(f"hf:{saved}", [X, LABEL], seed=seed)
        return stacked(src.batches(2, 5), "label").tolist()

    first = pick(4)
    assert first == pick(4) and first == sorted(set(first)) and len(first) == 5
    assert first != [0, 1, 2, 3, 4] or pick(5) != [0, 1, 2, 3, 4]
    assert pick(None) == [0, 1, 2, 3, 4]
    src = open_source(f"hf:{saved}", [X, LABEL], seed=4)
    x = stacked(src.batches(2, 5), "x")
    np.testing.assert_array_equal(x, numeric_data()["x"][first])


def test_dataset_object_and_splits(datasets, tmp_path: Path) -> None:
    data = numeric_data(6)
    train = datasets.Dataset.from_dict({"x": data["x"].tolist(), "label": [0] * 6})
    test = datasets.Dataset.from_dict({"x": data["x"][:2].tolist(), "label": [1] * 2})
    dd = datasets.DatasetDict({"train": train, "test": test})
    dd.save_to_disk(tmp_path / "dd")
    with pytest.raises(InputError) as info:
        open_source(f"hf:{tmp_path / 'dd'}", [X, LABEL])
    assert "several splits (splits: train, test)" in str(info.value)
    assert "hf:NAME::train" in str(info.value)
    for spec in (f"hf:{tmp_path / 'dd'}:test", f"hf:{tmp_path / 'dd'}::test"):
        src = open_source(spec, [X, LABEL])
        assert src.num_samples == 2
        assert stacked(src.batches(8), "label").tolist() == [1, 1]
    with pytest.raises(InputError, match="no split 'valid'"):
        open_source(f"hf:{tmp_path / 'dd'}::valid", [X, LABEL])
    src = open_source(train, [X, LABEL])  # a loaded Dataset object
    assert src.num_samples == 6
    with pytest.raises(InputError, match="several splits"):
        open_source(dd, [X, LABEL], streaming=True)  # a DatasetDict needs a split


def test_csv_folder(datasets, tmp_path: Path) -> None:
    folder = tmp_path / "csvdata"
    folder.mkdir()
    rows = "\n".join(f"{i * 0.5},{i},{i % 3}" for i in range(7))
    (folder / "data.csv").write_text("a,b,label\n" + rows + "\n")
    a = InputSpec("input_a", np.dtype("float32"), ("N",))
    b = InputSpec("input_b", np.dtype("int64"), ("N",))
    with pytest.raises(InputError) as info:
        open_source(f"hf:{folder}", [a, b])
    assert "columns (a, b, label) do not match the model inputs (input_a, input_b)" in str(
        info.value)
    for spec, streaming in ((f"hf:{folder}", False), (f"hf:{folder}:train", True),
                            (f"hf:{folder}::train", False)):
        src = open_source(spec, [a, b], columns={"input_a": "a", "input_b": "b"},
                          streaming=streaming)
        batches = list(src.batches(3))
        assert [len(x["input_a"]) for x in batches] == [3, 3, 1]
        np.testing.assert_allclose(stacked(batches, "input_a"), np.arange(7) * 0.5)
        assert stacked(batches, "input_b").dtype == np.int64
    with pytest.raises(InputError, match=r"no column 'c' \(for input 'input_b'\)"):
        open_source(f"hf:{folder}", [a, b], columns={"input_a": "a", "input_b": "c"})
    with pytest.raises(InputError, match="'label', which is not a model input"):
        open_source(f"hf:{folder}", [a, b], columns={"label": "a"})


def expected_grey(values, size=6) -> np.ndarray:
    return np.stack([np.full((3, size, size), v / 255, np.float32) for v in values])


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_image_folder_dataset(image_folder: Path, streaming: bool) -> None:
    src = open_source(f"hf:{image_folder}", [IMG], streaming=streaming)
    assert src.columns == {"pixel_values": "image"}
    assert src.preprocess["pixel_values"].resize == (6, 6)
    batches = list(src.batches(4))
    assert [b["pixel_values"].shape for b in batches] == [(4, 3, 6, 6), (2, 3, 6, 6)]
    got = stacked(batches, "pixel_values")
    greys = sorted(int(round(v * 255)) for v in got[:, 0, 0, 0])
    assert greys == [10, 20, 30, 40, 50, 60]
    order = [int(round(v * 255)) for v in got[:, 0, 0, 0]]
    np.testing.assert_allclose(got, expected_grey(order), atol=1e-6)


def test_imagefolder_builder_object_and_preprocess(datasets, image_folder: Path) -> None:
    ds = datasets.load_dataset("imagefolder", data_dir=str(image_folder), split="train")
    spec = PreprocessSpec.from_mapping({"resize": [4, 5], "layout": "NHWC", "mean": [0.1]})
    nhwc = InputSpec("img", np.dtype("float32"), ("N", 4, 5, 3))
    src = open_source(ds, [nhwc], preprocess=spec, columns={"img": "image"}, seed=0)
    batch = next(iter(src.batches(6)))["img"]
    assert batch.shape == (6, 4, 5, 3)
    paths = [ds[i]["image"].filename for i in range(len(ds))]
    for sample, path in zip(batch, paths, strict=True):
        with Image.open(path) as image:
            want = np.asarray(image.convert("RGB").resize((5, 4), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(sample, want / 255 - 0.1, atol=1e-6)


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_corrupt_image_named(image_folder: Path, streaming: bool) -> None:
    bad = image_folder / "cat" / "9_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n definitely truncated")
    with pytest.raises(InputError) as info:
        src = open_source(f"hf:{image_folder}", [IMG], streaming=streaming)
        list(src.batches(16))
    assert "9_broken.png" in str(info.value)


def test_image_feature_in_saved_dataset(datasets, tmp_path: Path) -> None:
    images = [Image.new("L", (8, 8), v) for v in (0, 128, 255)]
    ds = datasets.Dataset.from_dict({"picture": images, "label": [0, 1, 2]})
    ds = ds.cast_column("picture", datasets.Image())
    ds.save_to_disk(tmp_path / "pics")
    gray = InputSpec("input", np.dtype("uint8"), ("N", 1, 8, 8))
    src = open_source(f"hf:{tmp_path / 'pics'}", [gray])
    batch = next(iter(src.batches(3)))["input"]
    assert batch.dtype == np.uint8 and batch[:, 0, 0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_empty_dataset(datasets, tmp_path: Path, streaming: bool) -> None:
    features = datasets.Features({"x": datasets.List(datasets.List(datasets.Value("float32"))),
                                  "label": datasets.Value("int64")})
    empty = datasets.Dataset.from_dict({"x": [], "label": []}, features=features)
    with pytest.raises(InputError, match="contains no samples"):
        src = open_source(empty, [X, LABEL], streaming=streaming)
        list(src.batches(4))
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "data.csv").write_text("x,label\n")
    with pytest.raises(InputError) as info:
        src = open_source(f"hf:{folder}", [X, LABEL], streaming=streaming)
        list(src.batches(4))
    assert f"hf:{folder}" in str(info.value)


def test_empty_saved_dataset(datasets, tmp_path: Path) -> None:
    features = datasets.Features({"label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"label": []}, features=features).save_to_disk(tmp_path / "e")
    with pytest.raises(InputError, match=f"hf:{tmp_path / 'e'}"):
        list(open_source(f"hf:{tmp_path / 'e'}", [LABEL]).batches(4))


def test_validation_errors(datasets, tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"x": [[1.0, 2.0], [3.0]], "label": [0, 1]})
    with pytest.raises(InputError, match="column 'x' holds samples of different shapes"):
        list(open_source(ds, [X, LABEL]).batches(2))
    ds = datasets.Dataset.from_dict({"x": [[[1.0] * 4] * 2] * 3, "label": [0, 1, 2]})
    with pytest.raises(InputError, match="axis 2 must be 3"):
        list(open_source(ds, [X, LABEL]).batches(2))
    ds = datasets.Dataset.from_dict({"x": [[1.0, 2.0]] * 3, "label": [0, 1, 2]})
    with pytest.raises(InputError, match="input 'x' has rank 2"):
        list(open_source(ds, [X, LABEL]).batches(2))
    ds = datasets.Dataset.from_dict({"x": [[[1.0] * 3] * 2] * 3, "label": [0.5, 1.5, 2.5]})
    with pytest.raises(InputError, match="'label' has dtype float.* expects int32"):
        list(open_source(ds, [X, LABEL]).batches(2))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        open_source(f"hf:{tmp_path / 'missing'}", [X])
    with pytest.raises(InputError) as info:
        open_source("hf:quantkit-test/surely-not-cached-anywhere", [X])
    assert "cannot load the dataset" in str(info.value)
    assert "hf:quantkit-test/surely-not-cached-anywhere" in str(info.value)
    with pytest.raises(InputError, match="expected hf:NAME"):
        open_source("hf:", [X])
    with pytest.raises(InputError, match="expected hf:NAME"):
        open_source("hf:a:b:c:d", [X])


def test_parse_hf_spec() -> None:
    assert parse_hf_spec("hf:mnist") == ("mnist", None, None)
    assert parse_hf_spec("hf:glue:sst2") == ("glue", "sst2", None)
    assert parse_hf_spec("hf:glue:sst2:validation") == ("glue", "sst2", "validation")
    assert parse_hf_spec("hf:mnist::test") == ("mnist", None, "test")
    assert parse_hf_spec("hf:user/data:cfg") == ("user/data", "cfg", None)
    assert parse_hf_spec("hf:C:/data/x::test") == ("C:/data/x", None, "test")


def test_missing_datasets_module(monkeypatch, saved: Path) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(MissingExtraError) as info:
        open_source(f"hf:{saved}", [X, LABEL])
    assert "pip install 'quantkit[datasets]'" in str(info.value)
    assert "Reading hf: datasets" in str(info.value)


@pytest.mark.parametrize("streaming, seed", [(False, None), (False, 3), (True, None)],
                         ids=["map", "map-seeded", "streaming"])
def test_batch_range_is_a_slice_of_the_batches(saved: Path, streaming: bool,
                                               seed: int | None) -> None:
    """Sharded calibration reads batches lo..hi; map-style datasets read only those rows."""
    from quantkit.capture.shard import shard_batches

    src = open_source(f"hf:{saved}", [X, LABEL], streaming=streaming, seed=seed)
    every = [b["label"].tolist() for b in src.batches(3, 8)]
    for lo, hi in [(0, 1), (1, 3), (2, 3), (3, 3)]:
        part = [b["label"].tolist() for b in shard_batches(src, 3, 8, lo, hi)]
        assert part == every[lo:hi]
