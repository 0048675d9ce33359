"""Resumable calibration (``--checkpoint``): kill -9 / Ctrl-C mid-run, resume, same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from quantkit.capture import calibrate
from quantkit.capture.checkpoint import Checkpoint
from quantkit.cli.main import main
from quantkit.demo import asset
from tests.builders.cnn import demo_digits

MODEL = asset("demo_cnn.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,072 demo digits (the shipped 256, shifted and scaled copies), as the model's input."""
    return demo_digits(tmp_path_factory.mktemp("ckpt") / "calib.npy", 12)


def quantkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from quantkit.cli.main import main; "
            "sys.exit(main())", *args]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(quantkit_cmd(*args), capture_output=True, text=True, timeout=300)


def reference(calib: Path, out: Path, method: str = "entropy") -> tuple[bytes, bytes]:
    res = run_cli("calibrate", str(MODEL), "--data", str(calib), "--batch-size", "4",
                  "--method", method, "--scales", str(out / "ref.json"),
                  "--cache", str(out / "ref.cache"))
    assert res.returncode == 0, res.stderr
    return (out / "ref.json").read_bytes(), (out / "ref.cache").read_bytes()


def saved_batches(path: Path) -> int:
    with np.load(path, allow_pickle=False) as npz:
        return int(json.loads(bytes(npz["meta.json"]).decode())["batches"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_identical_scales(calib: Path, tmp_path: Path,
                                                sig: signal.Signals) -> None:
    ref_json, ref_cache = reference(calib, tmp_path)
    ckpt = tmp_path / "calib.ckpt"
    args = ["calibrate", str(MODEL), "--data", str(calib), "--batch-size", "4",
            "--method", "entropy", "--checkpoint", str(ckpt), "--checkpoint-every", "5",
            "--scales", str(tmp_path / "s.json"), "--cache", str(tmp_path / "s.cache")]
    proc = subprocess.Popen(quantkit_cmd("-q", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "s.cache").exists()
    done = saved_batches(ckpt)
    assert 0 < done < 768  # stopped mid-run, with progress saved
    if sig == signal.SIGINT:  # a kill -9 may cut a save short and leave its temp file
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    res = run_cli("-v", *args)
    assert res.returncode == 0, res.stderr
    assert f"resuming from {ckpt}: {done} batches ({4 * done} samples) already done" in res.stderr
    assert (tmp_path / "s.json").read_bytes() == ref_json
    assert (tmp_path / "s.cache").read_bytes() == ref_cache
    assert not ckpt.exists()  # removed once the outputs were written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # and stale temps


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, " ".join((out + err).split())


def test_checkpoint_of_another_run_is_refused(calib: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "c.ckpt"

    def stop_after(n: int) -> Iterator[dict[str, np.ndarray]]:
        x = np.load(calib, mmap_mode="r")
        for i in range(n):
            yield {"input": np.array(x[4 * i: 4 * i + 4])}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(MODEL, stop_after(7), batch_size=4, checkpoint=ckpt, method="minmax")
    assert saved_batches(ckpt) == 7  # saved on the interrupt, not only every 10 batches

    code, out = run_main(["calibrate", str(MODEL), "--data", str(calib), "--batch-size", "4",
                          "--method", "minmax", "--checkpoint", str(ckpt),
                          "--scales", str(tmp_path / "s.json")], capsys)
    assert code == 2
    assert "was made by a different run (data:" in out
    assert "delete the checkpoint to start over" in out
    assert "Traceback" not in out
    assert not (tmp_path / "s.json").exists()

    # same data, another method
    code, out = run_main(["calibrate", str(MODEL), "--data", str(calib), "--batch-size", "4",
                          "--checkpoint", str(tmp_path / "x.ckpt"), "--checkpoint-every", "2",
                          "--max-samples", "24", "--scales", str(tmp_path / "a.json")], capsys)
    assert code == 0, out
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    code, out = run_main(["calibrate", str(MODEL), "--data", str(calib),
                          "--checkpoint", str(tmp_path / "bad.ckpt")], capsys)
    assert code == 2 and "not a readable quantkit checkpoint" in out


def test_python_api_resume_equals_one_pass(calib: Path, tmp_path: Path) -> None:
    x = np.load(calib)

    def batches(stop: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, 400, 16):
            if stop is not None and i // 16 == stop:
                raise KeyboardInterrupt
            yield {"input": x[i: i + 16]}

    one = calibrate(MODEL, batches(), batch_size=16, method="percentile")
    ckpt = tmp_path / "p.ckpt"
    with pytest.raises(KeyboardInterrupt):
        calibrate(MODEL, batches(stop=13), batch_size=16, method="percentile", checkpoint=ckpt,
                  checkpoint_every=4)
    assert saved_batches(ckpt) == 13
    resumed = calibrate(MODEL, batches(), batch_size=16, method="percentile", checkpoint=ckpt)
    assert resumed.num_samples == one.num_samples == 400
    assert resumed.scales.amaxes == one.scales.amaxes
    assert list(resumed.scales.amaxes) == list(one.scales.amaxes)  # same tensor order
    assert not ckpt.exists()

    # the data changed under the checkpoint: its first batch no longer matches
    with pytest.raises(KeyboardInterrupt):
        calibrate(MODEL, batches(stop=5), batch_size=16, method="percentile", checkpoint=ckpt)
    x = x[::-1].copy()
    with pytest.raises(Exception, match="the data changed since the checkpoint"):
        calibrate(MODEL, batches(), batch_size=16, method="percentile", checkpoint=ckpt)


def test_checkpoint_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--checkpoint-every 0"):
        Checkpoint(tmp_path / "c", {}, every=0)
    assert os.listdir(tmp_path) == []
