"""Checkpoints are verified before they are trusted: damaged, forged or stale ones are refused
(exit 2) with the way forward."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _hostile_common import cli, project, refused

from quantkit.calibrators.base import create_calibrator
from quantkit.capture import calibrate
from quantkit.capture.checkpoint import FORMAT, Checkpoint, _member_digest
from quantkit.errors import InputError

DATA_OPTS = {"seed": None, "streaming": False}  # what the command line passes


@pytest.fixture
def run(tmp_path: Path) -> tuple[list[str], Path]:
    """A finished run whose checkpoint was kept; returns the CLI args resuming it."""
    model, data = project(tmp_path, samples=12)
    ck = tmp_path / "ck.npz"
    calibrate(model, data, method="entropy", batch_size=4, checkpoint=ck, checkpoint_every=1,
              keep_checkpoint=True, data_options=DATA_OPTS,
              quantized_only=True)  # what the command line calibrates by default
    assert ck.is_file()
    args = ["calibrate", str(model), "--data", str(data), "--method", "entropy", "--batch-size",
            "4", "--checkpoint", str(ck), "--scales", str(tmp_path / "s.json")]
    return args, ck


def _rewrite(ck: Path, edit_meta: object = None, edit_arrays: object = None,
             redigest: bool = True) -> None:
    """Rewrite a checkpoint with edited metadata / arrays (digests recomputed: a forgery)."""
    with np.load(ck, allow_pickle=False) as npz:
        meta = json.loads(bytes(npz["meta.json"]).decode())
        arrays = {k: npz[k] for k in npz.files if k != "meta.json"}
    if edit_arrays is not None:
        edit_arrays(arrays)  # type: ignore[operator]
    if edit_meta is not None:
        edit_meta(meta)  # type: ignore[operator]
    if redigest:
        meta["members"] = {k: _member_digest(v) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **{"meta.json": np.frombuffer(json.dumps(meta).encode(), np.uint8)}, **arrays)
    ck.write_bytes(buf.getvalue())


def _resume_refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    code, _, err = cli(args, capsys)
    refused(code, err, "--checkpoint", "Delete the checkpoint", *needles)
    assert not Path(args[-1]).exists()  # no scales written


def test_an_intact_checkpoint_resumes(run: tuple[list[str], Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    code, _, err = cli(args, capsys)
    assert code == 0, err
    assert Path(args[-1]).is_file() and not ck.exists()


def test_a_bit_flip_is_refused(run: tuple[list[str], Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    ck.write_bytes(bytes(raw))
    _resume_refused(args, capsys)


def test_a_truncated_checkpoint_is_refused(run: tuple[list[str], Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    _resume_refused(args, capsys, "truncated or corrupt")


def test_an_empty_file_is_refused(run: tuple[list[str], Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    ck.write_bytes(b"")
    _resume_refused(args, capsys)


def test_a_missing_member_is_refused(run: tuple[list[str], Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    _rewrite(ck, edit_arrays=lambda a: a.pop(sorted(a)[0]), redigest=False)
    _resume_refused(args, capsys, "do not match its index")


def test_a_missing_meta_is_refused(run: tuple[list[str], Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    with zipfile.ZipFile(ck, "w") as z:
        z.writestr("a0.npy", b"")
    _resume_refused(args, capsys, "no meta.json")


def test_a_changed_member_fails_its_checksum(run: tuple[list[str], Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run

    def bump(arrays: dict[str, np.ndarray]) -> None:
        key = sorted(arrays)[0]
        arrays[key] = arrays[key] + 1

    _rewrite(ck, edit_arrays=bump, redigest=False)
    _resume_refused(args, capsys, "fails its checksum")


def test_forged_negative_counts_are_refused(run: tuple[list[str], Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run

    def negate(arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            if v.dtype.kind == "i" and v.size:
                arrays[k] = v.copy()
                arrays[k][0] = -5
                return
        raise AssertionError("no count array in the checkpoint")

    _rewrite(ck, edit_arrays=negate)
    _resume_refused(args, capsys, "negative counts")


@pytest.mark.parametrize("batches, samples, needle", [
    (-1, 12, "negative counts"),
    (3, 0, "at least one sample"),
    (3, 13, "3 batches of at most 4 cannot hold 13"),
    ("3", 12, "batches is missing or not an integer"),
    (3, 12.5, "samples is missing or not an integer"),
])
def test_forged_progress_is_refused(run: tuple[list[str], Path], batches: object,
                                    samples: object, needle: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run

    def edit(meta: dict[str, object]) -> None:
        meta["batches"], meta["samples"] = batches, samples

    _rewrite(ck, edit_meta=edit)
    _resume_refused(args, capsys, needle)


def test_a_billion_forged_batches_are_refused(run: tuple[list[str], Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run

    def edit(meta: dict[str, object]) -> None:
        meta["batches"], meta["samples"] = 10**9, 4 * 10**9

    _rewrite(ck, edit_meta=edit)
    _resume_refused(args, capsys, "records 1000000000 batches", "holds only 3")


def test_an_older_format_is_refused(run: tuple[list[str], Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    _rewrite(ck, edit_meta=lambda m: m.update(format="quantkit-calibration-checkpoint/1"))
    _resume_refused(args, capsys, "format")


def test_data_rewritten_with_the_same_size_and_mtime_is_detected(
        run: tuple[list[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run
    data = Path(args[args.index("--data") + 1])
    st = data.stat()
    arr = np.load(data)
    np.save(data, arr[::-1].copy())  # same shape, size and dtype; other content
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -a would
    assert data.stat().st_size == st.st_size and data.stat().st_mtime_ns == st.st_mtime_ns
    code, _, err = cli(args, capsys)
    refused(code, err, "different run", "data")


def test_reread_batches_must_match_the_chain(tmp_path: Path) -> None:
    cal = create_calibrator("minmax")
    fingerprint = {"source": "hf:x", "batch_size": 4, "max_samples": None}
    first = Checkpoint(tmp_path / "ck.npz", fingerprint)
    for digest in ("a" * 64, "b" * 64):
        first.check_first_batch(digest)
    first.save(cal, 2, 8)
    again = Checkpoint(tmp_path / "ck.npz", fingerprint)
    assert again.load() is not None
    again.check_first_batch("a" * 64)
    with pytest.raises(InputError, match="read differently"):
        again.check_first_batch("c" * 64)  # same first batch, another second one


def test_a_checkpoint_saved_mid_run_records_the_chain(tmp_path: Path) -> None:
    cal = create_calibrator("minmax")
    ck = Checkpoint(tmp_path / "ck.npz", {"batch_size": 2})
    ck.check_first_batch("a" * 64)
    ck.check_first_batch("b" * 64)
    ck.check_first_batch("c" * 64)  # read, then interrupted before it was processed
    ck.save(cal, 2, 4)
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as npz:
        meta = json.loads(bytes(npz["meta.json"]).decode())
    assert meta["format"] == FORMAT and meta["batches"] == 2
    again = Checkpoint(tmp_path / "ck.npz", {"batch_size": 2})
    again.load()
    again.check_first_batch("a" * 64)
    again.check_first_batch("b" * 64)  # matches the chain after 2 batches: no error
    again.check_complete()


@pytest.mark.parametrize("path, value", [(("nonfinite_counts", "x"), -1),
                                         (("settings", "num_bins"), -2048)])
def test_forged_negative_values_in_the_state_are_refused(
        run: tuple[list[str], Path], path: tuple[str, str], value: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    args, ck = run

    def edit(meta: dict[str, dict[str, dict[str, object]]]) -> None:
        meta["state"].setdefault(path[0], {})[path[1]] = value

    _rewrite(ck, edit_meta=edit)
    _resume_refused(args, capsys, f"{path[0]}.{path[1]} is negative")
