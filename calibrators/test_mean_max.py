"""The example plugin, loaded the way users load it (a file path), and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantkit.calibrators import Calibrator, create_calibrator, load_calibrator_plugin
from quantkit.cli.main import main
from tests.builders import small_cnn

HERE = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def plugin() -> None:
    assert load_calibrator_plugin(HERE / "mean_max.py") == ["mean-max"]


def test_mean_of_batch_maxima_and_merge() -> None:
    batches = [np.array([1.0, -4.0]), np.array([2.0]), np.array([-3.0, 0.5])]
    cal = create_calibrator("mean-max")
    for b in batches:
        cal.update("t", b)
    assert cal.compute_amax()["t"] == pytest.approx(3.0)
    a, b = create_calibrator("mean-max"), create_calibrator("mean-max")
    a.update("t", batches[0])
    b.update("t", batches[1])
    b.update("t", batches[2])
    assert a.merge(b).compute_amax() == cal.compute_amax()
    assert Calibrator.from_state(cal.state()).compute_amax() == cal.compute_amax()


def test_plugin_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"),
                 "--calibrator", str(HERE / "mean_max.py"), "--method", "mean-max",
                 "--batch-size", "4", "--scales", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "s.json").read_text())
    expected = np.mean([np.abs(x[i: i + 4]).max() for i in range(0, 16, 4)])
    assert doc["method"] == "mean-max"
    assert doc["tensors"]["x"]["amax"] == pytest.approx(expected, rel=1e-6)
