from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit.data import InputSpec, NpySource, open_source
from quantkit.errors import InputError

X = InputSpec("x", np.dtype("float32"), ("N", 3, 4))


def save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def collect(source, batch_size, max_samples=None):
    return list(source.batches(batch_size, max_samples))


def test_batches_and_max_samples(tmp_path: Path) -> None:
    data = np.arange(10 * 12, dtype=np.float32).reshape(10, 3, 4)
    src = NpySource(save(tmp_path / "x.npy", data), [X])
    assert src.num_samples == 10
    assert src.num_batches(4) == 3
    batches = collect(src, 4)
    assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), data)
    batches = collect(src, 4, max_samples=5)
    assert [b["x"].shape[0] for b in batches] == [4, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), data[:5])
    assert src.num_batches(4, 5) == 2
    # a second pass gives the same data
    np.testing.assert_array_equal(collect(src, 10)[0]["x"], data)


def test_batches_are_plain_writable_copies(tmp_path: Path) -> None:
    data = np.ones((6, 3, 4), dtype=np.float32)
    src = NpySource(save(tmp_path / "x.npy", data), [X])
    batch = collect(src, 3)[0]["x"]
    assert type(batch) is np.ndarray
    assert batch.flags.writeable and batch.flags.owndata
    batch[...] = 5  # must not touch the file
    assert np.load(tmp_path / "x.npy").max() == 1


def test_dtype_cast(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    src = NpySource(save(tmp_path / "x.npy", data), [X])
    out = collect(src, 8)[0]["x"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data.astype(np.float32))
    ids = InputSpec("ids", np.dtype("int32"), ("N", 5))
    src = NpySource(save(tmp_path / "i.npy", np.arange(10, dtype=np.int64).reshape(2, 5)), [ids])
    assert collect(src, 8)[0]["ids"].dtype == np.int32


def test_fortran_order(tmp_path: Path) -> None:
    data = np.asfortranarray(np.random.default_rng(0).random((7, 3, 4)))
    src = NpySource(save(tmp_path / "x.npy", data), [X])
    got = np.concatenate([b["x"] for b in collect(src, 3)])
    np.testing.assert_array_equal(got, data.astype(np.float32))


def test_seeded_subset(tmp_path: Path) -> None:
    data = np.repeat(np.arange(50, dtype=np.float32), 12).reshape(50, 3, 4)
    path = save(tmp_path / "x.npy", data)

    def ids(seed):
        src = NpySource(path, [X], seed=seed)
        return np.concatenate([b["x"][:, 0, 0] for b in src.batches(4, 10)]).astype(int)

    first = ids(7)
    np.testing.assert_array_equal(first, ids(7))  # deterministic
    assert len(first) == 10 and len(set(first)) == 10
    assert list(first) == sorted(first)  # read in ascending order
    assert not np.array_equal(first, np.arange(10))  # a subset, not the first N
    assert not np.array_equal(first, ids(8))
    np.testing.assert_array_equal(ids(None), np.arange(10))
    # max_samples >= the data: everything, in order, seed or not
    src = NpySource(path, [X], seed=7)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in src.batches(16, 80)]), data)


@pytest.mark.parametrize(
    ("array", "spec", "needle"),
    [
        (np.zeros((4, 3, 5), np.float32), X, "axis 2 must be 4"),
        (np.zeros((4, 12), np.float32), X, "rank 2"),
        (np.zeros((4, 3, 4), np.complex64), X, "dtype complex64"),
        (np.zeros((4, 3, 4), np.float32),
         InputSpec("ids", np.dtype("int64"), ("N", 3, 4)), "expects int64"),
        (np.float32(3.0), X, "scalar"),
    ],
)
def test_header_errors_at_construction(tmp_path: Path, array, spec, needle) -> None:
    path = save(tmp_path / "bad.npy", np.asarray(array))
    with pytest.raises(InputError) as info:
        NpySource(path, [spec])
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        NpySource(tmp_path / "missing.npy", [X])
    with pytest.raises(InputError, match="contains no samples"):
        NpySource(save(tmp_path / "e.npy", np.zeros((0, 3, 4), np.float32)), [X])
    objects = np.empty(2, dtype=object)
    np.save(tmp_path / "o.npy", objects, allow_pickle=True)
    with pytest.raises(InputError, match="not a plain numeric dtype"):
        NpySource(tmp_path / "o.npy", [InputSpec("x", np.dtype("float32"), ("N",))])
    (tmp_path / "junk.npy").write_bytes(b"definitely not numpy")
    with pytest.raises(InputError, match=r"not a valid \.npy"):
        NpySource(tmp_path / "junk.npy", [X])
    two = [X, InputSpec("y", np.dtype("float32"), ("N",))]
    with pytest.raises(InputError, match="single model input.*2 inputs"):
        NpySource(save(tmp_path / "x.npy", np.zeros((2, 3, 4), np.float32)), two)
    src = NpySource(tmp_path / "x.npy", [X])
    with pytest.raises(InputError, match="batch_size=0"):
        src.batches(0)
    with pytest.raises(InputError, match="max_samples=0"):
        src.batches(2, 0)


def test_in_memory_arrays() -> None:
    data = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    src = open_source(data, [X])
    out = list(src.batches(1))
    assert len(out) == 2 and out[0]["x"].dtype == np.float32
    src = open_source({"x": data}, [X], seed=1)
    assert src.num_samples == 2
    with pytest.raises(InputError, match="different numbers of samples"):
        open_source({"x": data, "y": np.zeros(3)},
                    [X, InputSpec("y", np.dtype("float32"), ("N",))])
    src = open_source({"pixels": data, "labels": np.zeros(2)}, [X], columns={"x": "pixels"})
    assert next(iter(src.batches(2)))["x"].shape == (2, 3, 4)
    with pytest.raises(InputError, match="no array 'nope'"):
        open_source({"pixels": data}, [X], columns={"x": "nope"})


@pytest.mark.parametrize("seed", [None, 3])
def test_reused_buffers_give_the_same_batches(tmp_path: Path, seed: int | None) -> None:
    data = np.arange(50 * 6, dtype=np.float32).reshape(50, 2, 3)
    path = save(tmp_path / "x.npy", data)
    spec = [InputSpec("x", "float32", (None, 2, 3))]
    fresh = [b["x"].copy() for b in NpySource(path, spec, seed=seed).batches(16, 40)]
    bases = set()
    reused = []
    for b in NpySource(path, spec, seed=seed).batches(16, 40, reuse_buffers=True):
        bases.add(id(b["x"].base))
        reused.append(b["x"].copy())
    assert len(reused) == len(fresh) == 3
    for a, b in zip(fresh, reused, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(bases) == 1  # one buffer for every batch, the short last one included
