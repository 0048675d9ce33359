from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from quantkit.data import InputSpec, IterableSource, open_source
from quantkit.errors import InputError

IMG = InputSpec("images", np.dtype("float32"), ("N", 3, 4, 4))
IDS = InputSpec("ids", np.dtype("int32"), ("N", 5))


def labelled_loader(n: int = 10, batch_size: int = 4) -> DataLoader:
    x = torch.arange(n * 48, dtype=torch.float64).reshape(n, 3, 4, 4)
    return DataLoader(TensorDataset(x, torch.arange(n)), batch_size=batch_size)


def test_dataloader_keeps_its_batching_and_drops_labels() -> None:
    src = open_source(labelled_loader(), [IMG])
    assert isinstance(src, IterableSource)
    assert src.num_samples is None and src.num_batches(32) is None
    batches = list(src.batches(32))  # the loader's batch size (4) wins
    assert [b["images"].shape[0] for b in batches] == [4, 4, 2]
    got = np.concatenate([b["images"] for b in batches])
    assert got.dtype == np.float32 and isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, np.arange(480, dtype=np.float32).reshape(10, 3, 4, 4))
    # max_samples truncates, mid-batch included; the loader is re-iterable
    assert [b["images"].shape[0] for b in src.batches(32, max_samples=6)] == [4, 2]
    assert [b["images"].shape[0] for b in src.batches(32, max_samples=8)] == [4, 4]


class DictDataset(Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"images": torch.full((3, 4, 4), float(i)),
                "ids": torch.arange(5, dtype=torch.int64) + i, "label": torch.tensor(i)}


def test_dataloader_of_dicts_multi_input() -> None:
    src = open_source(DataLoader(DictDataset(), batch_size=2), [IMG, IDS])
    batches = list(src.batches(8))
    assert [b["ids"].shape for b in batches] == [(2, 5), (2, 5), (1, 5)]
    assert all(b["ids"].dtype == np.int32 for b in batches)
    assert all(set(b) == {"images", "ids"} for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["images"][:, 0, 0, 0] for b in batches]),
                                  np.arange(5, dtype=np.float32))


def test_per_sample_items_are_stacked() -> None:
    samples = [np.full((3, 4, 4), i, dtype=np.float64) for i in range(7)]
    src = open_source(samples, [IMG])
    batches = list(src.batches(3))
    assert [b["images"].shape for b in batches] == [(3, 3, 4, 4), (3, 3, 4, 4), (1, 3, 4, 4)]
    assert batches[0]["images"].dtype == np.float32
    assert [len(b["images"]) for b in src.batches(3, max_samples=4)] == [3, 1]
    # tuples of per-sample tensors, mapped positionally
    pairs = [(torch.zeros(3, 4, 4), torch.arange(5)) for _ in range(5)]
    assert [len(b["ids"]) for b in open_source(pairs, [IMG, IDS]).batches(2)] == [2, 2, 1]
    # a flat list of numbers is one sample of a 1-D input
    vec = InputSpec("v", np.dtype("float32"), ("N", 3))
    out = list(open_source([[1.0, 2, 3], [4, 5, 6]], [vec]).batches(8))
    np.testing.assert_array_equal(out[0]["v"], [[1, 2, 3], [4, 5, 6]])


def test_columns_rename_mapping_items() -> None:
    items = [{"pixels": np.zeros((2, 3, 4, 4))}]
    src = IterableSource(items, [IMG], columns={"images": "pixels"})
    assert next(iter(src.batches(4)))["images"].shape == (2, 3, 4, 4)


def test_generators_one_shot_and_factories() -> None:
    def gen():
        for i in range(3):
            yield np.full((2, 3, 4, 4), i, dtype=np.float32)

    src = open_source(gen(), [IMG])
    assert len(list(src.batches(4))) == 3
    with pytest.raises(InputError, match="already consumed"):
        src.batches(4)
    src = open_source(gen, [IMG])  # a callable returning a fresh iterator
    assert len(list(src.batches(4))) == 3
    assert len(list(src.batches(4, max_samples=3))) == 2


@pytest.mark.parametrize(
    ("items", "inputs", "needles"),
    [
        ([{"image": np.zeros((2, 3, 4, 4))}], [IMG],
         ["missing input(s) images", "unexpected name(s) image"]),
        ([np.zeros((2, 48))], [IMG], ["input 'images' has rank 2"]),
        ([np.zeros((2, 3, 16))], [IMG], ["shape (1, 2, 3, 16)", "read as single samples"]),
        ([np.zeros((2, 3, 5, 4))], [IMG], ["axis 2 must be 4"]),
        ([(np.zeros((2, 3, 4, 4)), np.zeros((2, 5), np.float32))], [IMG, IDS],
         ["input 'ids' has dtype float32 but the model expects int32"]),
        ([np.zeros((2, 3, 4, 4))], [IMG, IDS], ["single ndarray", "2 inputs (images, ids)"]),
        ([(np.zeros((2, 3, 4, 4)),)], [IMG, IDS], ["1 element(s)", "2 inputs"]),
        ([np.zeros((3, 4, 4)), np.zeros((3, 4, 5))], [IMG], ["different shapes"]),
        ([], [IMG], ["contains no samples"]),
    ],
)
def test_errors(items, inputs, needles) -> None:
    src = IterableSource(items, inputs, description="<my loader>")
    with pytest.raises(InputError) as info:
        list(src.batches(4))
    for needle in ["data <my loader>", *needles]:
        assert needle in str(info.value)


def test_import_is_light() -> None:
    code = ("import sys, quantkit.data; "
            "bad = [m for m in ('datasets', 'torch', 'PIL', 'pyarrow') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
