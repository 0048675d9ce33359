"""Memory stays flat: iterating a ~200 MB array in batches allocates about one batch."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from quantkit.data import InputSpec, open_source

N, SHAPE = 4096, (3, 64, 64)  # 4096 samples x 48 KiB = 192 MiB of float32
SPEC = InputSpec("x", np.dtype("float32"), ("N", *SHAPE))
CHUNK = 256
BATCH = 64
BATCH_BYTES = BATCH * int(np.prod(SHAPE)) * 4  # 3 MiB
FILE_BYTES = N * int(np.prod(SHAPE)) * 4


def chunk(start: int, stop: int) -> np.ndarray:
    """Samples start..stop: sample i is filled with i (so every batch can be checked)."""
    ids = np.arange(start, stop, dtype=np.float32)
    return np.broadcast_to(ids[:, None, None, None], (stop - start, *SHAPE)).copy()


def write_npy_stream(fp) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("float32")),
              "fortran_order": False, "shape": (N, *SHAPE)}
    np.lib.format.write_array_header_1_0(fp, header)
    for start in range(0, N, CHUNK):
        fp.write(chunk(start, start + CHUNK).tobytes())


def make_npy(path: Path) -> Path:
    with path.open("wb") as fp:
        write_npy_stream(fp)
    return path


def make_npz(path: Path, compress: int) -> Path:
    with (zipfile.ZipFile(path, "w", compression=compress, compresslevel=1) as zf,
          zf.open("x.npy", "w", force_zip64=True) as fp):
        write_npy_stream(fp)
    return path


def peak_while_iterating(path: Path) -> tuple[int, int]:
    source = open_source(path, [SPEC])
    seen = 0
    tracemalloc.start()
    try:
        for batch in source.batches(BATCH):
            x = batch["x"]
            assert x.shape[0] == BATCH
            assert x[:, 0, 0, 0].tolist() == list(range(seen, seen + BATCH))
            seen += BATCH
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, seen


@pytest.mark.parametrize("kind", ["npy", "npz-stored", "npz-deflated"])
def test_flat_memory(tmp_path: Path, kind: str) -> None:
    if kind == "npy":
        path = make_npy(tmp_path / "big.npy")
    else:
        compress = zipfile.ZIP_STORED if kind == "npz-stored" else zipfile.ZIP_DEFLATED
        path = make_npz(tmp_path / "big.npz", compress)
    peak, seen = peak_while_iterating(path)
    assert seen == N
    # about one batch (plus the previous one still referenced and small buffers); far below
    # the 192 MiB a non-streaming read would take
    assert peak < 6 * BATCH_BYTES, f"peak {peak / 2**20:.1f} MiB"
    assert peak < FILE_BYTES / 8
