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


def test_memory_mapped_npy_pages_are_released(tmp_path: Path) -> None:
    """Reading a memory-mapped .npy end to end must not keep the file resident (RSS)."""
    import subprocess
    import sys

    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(1024, 64, 1024))
    for i in range(0, 1024, 128):
        arr[i: i + 128] = 1.0  # 256 MiB written through the OS, not held by this process
    del arr
    # VmRSS, not ru_maxrss: a child forked from pytest inherits pytest's ru_maxrss
    code = (
        "import numpy as np\n"
        "from quantkit.data import open_source, InputSpec\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1])\n"
        f"src = open_source({str(path)!r}, [InputSpec('x', np.dtype(np.float32), "
        "('N', 64, 1024))])\n"
        "base = peak = rss()\n"
        "n = 0\n"
        "for b in src.batches(16):\n"
        "    n += len(b['x'])\n"
        "    peak = max(peak, rss())\n"
        "print(n, (peak - base) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) == 1024
    assert int(out[1]) < 64, f"RSS grew by {out[1]} MiB reading a 256 MiB file"
