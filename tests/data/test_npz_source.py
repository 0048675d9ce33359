from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from quantkit.data import InputSpec, NpzSource, open_source
from quantkit.errors import InputError

IMG = InputSpec("images", np.dtype("float32"), ("N", 3, 4, 4))
MASK = InputSpec("mask", np.dtype("int32"), ("N", 5))
SPECS = [IMG, MASK]


def make(n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.standard_normal((n, 3, 4, 4)),  # float64: cast to float32
            "mask": np.arange(n * 5, dtype=np.int64).reshape(n, 5)}


def write(path: Path, compressed: bool, **arrays: np.ndarray) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.fixture(params=[False, True], ids=["stored", "deflated"])
def compressed(request) -> bool:
    return request.param


def test_member_kind_detected(tmp_path: Path, compressed: bool) -> None:
    path = write(tmp_path / "d.npz", compressed, **make())
    with zipfile.ZipFile(path) as zf:
        kinds = {i.compress_type for i in zf.infolist()}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}
    src = NpzSource(path, SPECS)
    assert src.compressed == {"images": compressed, "mask": compressed}


def test_batches_values_and_casts(tmp_path: Path, compressed: bool) -> None:
    data = make(10)
    src = NpzSource(write(tmp_path / "d.npz", compressed, **data), SPECS)
    assert src.num_samples == 10
    batches = list(src.batches(4))
    assert [b["images"].shape for b in batches] == [(4, 3, 4, 4), (4, 3, 4, 4), (2, 3, 4, 4)]
    assert all(b["images"].dtype == np.float32 and b["mask"].dtype == np.int32 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in batches]),
                                  data["images"].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), data["mask"])
    few = list(src.batches(3, max_samples=4))
    assert [b["mask"].shape[0] for b in few] == [3, 1]
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in few]), data["mask"][:4])


def test_seeded_subset_same_on_both_kinds(tmp_path: Path) -> None:
    data = make(40)
    picked = []
    for compressed in (False, True):
        src = NpzSource(write(tmp_path / f"d{compressed}.npz", compressed, **data), SPECS,
                        seed=3)
        batches = list(src.batches(4, 9))
        rows = np.concatenate([b["mask"][:, 0] // 5 for b in batches])
        assert len(rows) == 9 and list(rows) == sorted(set(rows))
        np.testing.assert_array_equal(np.concatenate([b["images"] for b in batches]),
                                      data["images"][rows].astype(np.float32))
        picked.append(rows)
    np.testing.assert_array_equal(picked[0], picked[1])
    assert not np.array_equal(picked[0], np.arange(9))


def test_big_endian_and_fortran_stored(tmp_path: Path) -> None:
    data = make(6)
    images = np.asfortranarray(data["images"].astype(">f4"))
    src = NpzSource(write(tmp_path / "d.npz", False, images=images, mask=data["mask"]), SPECS)
    got = np.concatenate([b["images"] for b in src.batches(4)])
    assert got.dtype == np.dtype("float32")
    np.testing.assert_array_equal(got, data["images"].astype(np.float32))
    src = NpzSource(write(tmp_path / "c.npz", True, images=data["images"].astype(">f4"),
                          mask=data["mask"]), SPECS)
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in src.batches(5)]),
                                  data["images"].astype(np.float32))


def test_compressed_fortran_refused(tmp_path: Path) -> None:
    data = make(6)
    path = write(tmp_path / "d.npz", True, images=np.asfortranarray(data["images"]),
                 mask=data["mask"])
    with pytest.raises(InputError, match="Fortran order"):
        NpzSource(path, SPECS)


def test_mixed_members_and_early_stop(tmp_path: Path) -> None:
    data = make(8)
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, compress in (("images", zipfile.ZIP_DEFLATED), ("mask", zipfile.ZIP_STORED)):
            info = zipfile.ZipInfo(f"{name}.npy")
            info.compress_type = compress
            with zf.open(info, "w") as fp:
                np.lib.format.write_array(fp, data[name])
    src = NpzSource(path, SPECS)
    assert src.compressed == {"images": True, "mask": False}
    it = src.batches(3)
    first = next(it)
    np.testing.assert_array_equal(first["mask"], data["mask"][:3])
    it.close()  # closes the archive without reading the rest
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in src.batches(8)]),
                                  data["images"].astype(np.float32))


def test_columns_mapping(tmp_path: Path) -> None:
    data = make(4)
    path = write(tmp_path / "d.npz", True, pixels=data["images"], m=data["mask"],
                 labels=np.arange(4))
    with pytest.raises(InputError, match=r"columns=\{INPUT: ARRAY\}") as info:
        NpzSource(path, SPECS)
    assert "'images', 'mask'" in str(info.value) and "'pixels', 'm', 'labels'" in str(info.value)
    src = NpzSource(path, SPECS, columns={"images": "pixels", "mask": "m"})
    b = next(iter(src.batches(4)))
    np.testing.assert_array_equal(b["mask"], data["mask"])
    with pytest.raises(InputError, match="no array 'nope' for model input 'mask'"):
        NpzSource(path, SPECS, columns={"images": "pixels", "mask": "nope"})
    with pytest.raises(InputError, match="'other', which is not a model input"):
        NpzSource(path, SPECS, columns={"other": "pixels"})


def test_extra_arrays_beside_the_inputs_are_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = make(4)
    path = write(tmp_path / "d.npz", False, labels=np.arange(4), **data)
    with caplog.at_level("WARNING"):
        src = NpzSource(path, SPECS)
    assert "ignoring array(s) 'labels'" in caplog.text and str(path) in caplog.text
    batch = next(iter(src.batches(4)))
    assert sorted(batch) == ["images", "mask"]
    np.testing.assert_array_equal(batch["mask"], data["mask"])


@pytest.mark.parametrize(
    ("arrays", "needles"),
    [
        ({"images": np.zeros((2, 3, 4, 4)), "msk": np.zeros((2, 5))},
         ["missing input(s) mask", "'images', 'msk'", "columns={INPUT: ARRAY}"]),
        ({"images": np.zeros((2, 3, 4, 4))},
         ["missing input(s) mask", "mask: int32[Nx5]"]),
        ({"images": np.zeros((2, 3, 16)), "mask": np.zeros((2, 5), np.int32)},
         ["input 'images' has rank 3", "rank 4"]),
        ({"images": np.zeros((2, 1, 4, 4)), "mask": np.zeros((2, 5), np.int32)},
         ["axis 1 must be 3"]),
        ({"images": np.zeros((2, 3, 4, 4)), "mask": np.zeros((2, 5), np.float32)},
         ["input 'mask' has dtype float32 but the model expects int32"]),
        ({"images": np.zeros((2, 3, 4, 4)), "mask": np.zeros((3, 5), np.int32)},
         ["different numbers of samples", "images: 2", "mask: 3"]),
        ({"images": np.zeros((0, 3, 4, 4)), "mask": np.zeros((0, 5), np.int32)},
         ["contains no samples"]),
    ],
)
def test_validation_from_headers(tmp_path: Path, compressed: bool, arrays, needles) -> None:
    path = write(tmp_path / "bad.npz", compressed, **arrays)
    with pytest.raises(InputError) as info:
        NpzSource(path, SPECS)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_values_out_of_range_for_int32(tmp_path: Path) -> None:
    data = make(3)
    data["mask"][1, 1] = 2**40
    src = NpzSource(write(tmp_path / "d.npz", True, **data), SPECS)
    with pytest.raises(InputError, match="outside the range of the model's int32"):
        list(src.batches(4))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "missing.npz", SPECS)
    (tmp_path / "junk.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(InputError, match=r"not a valid \.npz archive"):
        NpzSource(tmp_path / "junk.npz", SPECS)
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="'readme.txt' is not a .npy array"):
        NpzSource(tmp_path / "other.npz", SPECS)
    with zipfile.ZipFile(tmp_path / "garbage.npz", "w") as zf:
        zf.writestr("images.npy", b"\x93NUMPY garbage")
    with pytest.raises(InputError, match=r"garbage.npz\[images\]: not a valid .npy"):
        NpzSource(tmp_path / "garbage.npz", SPECS)


def test_truncated_compressed_member(tmp_path: Path) -> None:
    data = make(6)
    full = tmp_path / "full.npy"
    np.save(full, data["images"])
    path = tmp_path / "trunc.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", full.read_bytes()[:-200])  # header says 6 rows
        with zf.open("mask.npy", "w") as fp:
            np.lib.format.write_array(fp, data["mask"])
    src = NpzSource(path, SPECS)
    with pytest.raises(InputError, match=r"trunc.npz\[images\]: the array data is truncated"):
        list(src.batches(6))


@pytest.mark.parametrize("compressed, layout", [(False, "C"), (True, "C"), (False, "F"),
                                                (False, "big-endian"), (True, "big-endian")])
@pytest.mark.parametrize("seed", [None, 1])
def test_reused_buffers_give_the_same_batches(tmp_path: Path, compressed: bool, layout: str,
                                              seed: int | None) -> None:
    """(Fortran-order members can only be stored: deflated ones are refused, tested above.)"""
    data = make(23)
    images = data["images"].astype(">f8" if layout == "big-endian" else "f8")
    if layout == "F":
        images = np.asfortranarray(images)
    path = write(tmp_path / "d.npz", compressed, images=images, mask=data["mask"])
    fresh = [{k: v.copy() for k, v in b.items()}
             for b in NpzSource(path, SPECS, seed=seed).batches(8, 20)]
    reused = [{k: v.copy() for k, v in b.items()}
              for b in NpzSource(path, SPECS, seed=seed).batches(8, 20, reuse_buffers=True)]
    assert [len(b["mask"]) for b in reused] == [len(b["mask"]) for b in fresh] == [8, 8, 4]
    for a, b in zip(fresh, reused, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
