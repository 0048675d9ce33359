"""`quantkit calibrate` through the command line: outputs and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantkit.calibrators import read_scales
from quantkit.cli.main import main
from tests.builders.cnn import small_cnn


@pytest.fixture()
def setup(tmp_path: Path) -> Path:
    small_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((24, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    return tmp_path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile", "mse"])
def test_calibrate_writes_cache_and_json(setup: Path, method: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    d = setup
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npz"),
                          "--method", method, "--batch-size", "8",
                          "--cache", str(d / "o.cache"), "--scales", str(d / "o.json")], capsys)
    assert code == 0, err
    # the inputs of the two Convs, the residual Add and the Gemm: x, r1, c2, flat
    assert f"4 tensors calibrated with {method} on 24 samples" in out
    doc = json.loads((d / "o.json").read_text())
    assert doc["format"] == "quantkit-scales/1" and doc["method"] == method
    assert doc["num_samples"] == 24 and sorted(doc["tensors"]) == ["c2", "flat", "r1", "x"]
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npz"),
                          "--method", method, "--batch-size", "8", "--all-tensors",
                          "--scales", str(d / "all.json")], capsys)
    assert code == 0, err
    assert f"10 tensors calibrated with {method} on 24 samples" in out
    every = json.loads((d / "all.json").read_text())["tensors"]
    assert len(every) == 10 and all(every[n] == v for n, v in doc["tensors"].items())
    first = (d / "o.cache").read_text().splitlines()[0]
    assert first == ("TRT-101300-MinMaxCalibration" if method == "minmax"
                     else "TRT-101300-EntropyCalibration2")
    for name, entry in doc["tensors"].items():
        assert entry["scale"] == pytest.approx(entry["amax"] / 127, rel=1e-6)
        assert read_scales(d / "o.cache").scales[name] == entry["scale"]


def test_percentile_option_is_recorded(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = setup
    code, _, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npy"),
                        "--method", "percentile", "--percentile", "99.9",
                        "--scales", str(d / "p.json")], capsys)
    assert code == 0, err
    assert json.loads((d / "p.json").read_text())["settings"] == {"percentile": 99.9}


def test_console_script_runs_in_a_subprocess(setup: Path) -> None:
    d = setup
    proc = subprocess.run([sys.executable, "-m", "quantkit.cli.main", "calibrate",
                           str(d / "m.onnx"), "--data", str(d / "x.npy"), "--json",
                           "--max-samples", "10"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_samples"] == 10


BAD_INPUTS = [
    ("missing model", ["calibrate", "{d}/nope.onnx", "--data", "{d}/x.npy"], "nope.onnx"),
    ("non-onnx model", ["calibrate", "{d}/x.npz", "--data", "{d}/x.npy"], "not a readable ONNX"),
    ("corrupt model", ["calibrate", "{d}/corrupt.onnx", "--data", "{d}/x.npy"], "corrupt.onnx"),
    ("unknown method", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--method", "kl"],
     "--method kl: unknown calibration method"),
    ("wrong input name", ["calibrate", "{d}/m.onnx", "--data", "{d}/wrongname.npz"],
     "missing input(s) x"),
    ("wrong rank", ["calibrate", "{d}/m.onnx", "--data", "{d}/rank.npy"], "rank 3"),
    ("wrong static dim", ["calibrate", "{d}/m.onnx", "--data", "{d}/dims.npy"], "axis 1 must be 3"),
    ("wrong dtype", ["calibrate", "{d}/m.onnx", "--data", "{d}/str.npy"], "dtype"),
    ("uint8 pixels", ["calibrate", "{d}/m.onnx", "--data", "{d}/pixels.npy"],
     "input 'x' of the model is float32 but the data holds uint8 values"),
    ("uint8 pixels, sharded", ["calibrate", "{d}/m.onnx", "--data", "{d}/pixels.npy",
                               "--allow-cast", "--shards", "2"], "--allow-cast: not supported"),
    ("empty data", ["calibrate", "{d}/m.onnx", "--data", "{d}/empty.npy"], "no samples"),
    ("nan in data", ["calibrate", "{d}/m.onnx", "--data", "{d}/nan.npy"], "NaN"),
    ("missing data", ["calibrate", "{d}/m.onnx", "--data", "{d}/none.npz"], "none.npz"),
    ("bad batch size", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--batch-size", "0"],
     "--batch-size"),
    ("percentile without method", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy",
                                   "--percentile", "99"], "--percentile"),
    ("percentile out of range", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--method",
                                 "percentile", "--percentile", "120"], "(0, 100]"),
    ("output folder missing", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--cache",
                               "{d}/no/such/dir/o.cache"], "does not exist"),
    ("output is input", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--cache",
                         "{d}/m.onnx"], "same file as the input"),
    ("bad trt version", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--trt-version",
                         "ten"], "--trt-version"),
    ("cache is scales", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--cache",
                         "{d}/o.out", "--scales", "{d}/./o.out"], "must name different files"),
    ("checkpoint is cache", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--cache",
                             "{d}/o.out", "--checkpoint", "{d}/o.out"],
     "must name different files"),
    ("output is the plugin", ["calibrate", "{d}/m.onnx", "--data", "{d}/x.npy", "--calibrator",
                              "{d}/plugin.py", "--scales", "{d}/plugin.py"],
     "same file as the input"),
]


# refused before it is imported (it would fail the test run if it were)
PLUGIN = "raise SystemExit('the plugin must not be imported when an output is refused')\n"


@pytest.mark.parametrize("label, args, needle", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(setup: Path, capsys: pytest.CaptureFixture[str], label: str,
                   args: list[str], needle: str) -> None:
    d = setup
    (d / "corrupt.onnx").write_bytes((d / "m.onnx").read_bytes()[:50])
    (d / "plugin.py").write_text(PLUGIN)
    np.savez(d / "wrongname.npz", images=np.zeros((2, 3, 8, 8), np.float32))
    np.save(d / "rank.npy", np.zeros((2, 3, 8), np.float32))
    np.save(d / "dims.npy", np.zeros((2, 4, 8, 8), np.float32))
    np.save(d / "str.npy", np.array([["a"] * 8] * 2))
    np.save(d / "pixels.npy", np.full((4, 3, 8, 8), 200, np.uint8))
    np.save(d / "empty.npy", np.zeros((0, 3, 8, 8), np.float32))
    nan = np.zeros((4, 3, 8, 8), np.float32)
    nan[2, 1, 1, 1] = np.nan
    np.save(d / "nan.npy", nan)
    before = {p.name for p in d.rglob("*")}
    out_args = [a.format(d=d) for a in args]
    code, out, err = run([*out_args, "--scales", str(d / "out.json")]
                         if "--cache" not in args and "--scales" not in args else out_args,
                         capsys)
    assert code == 2, (label, err)
    assert needle in " ".join(err.split()), err
    assert "Traceback" not in err and err.startswith("error:")
    assert {p.name for p in d.rglob("*")} == before  # no output, no temp file left behind


def test_nan_in_a_captured_activation_names_the_tensor(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Log", ["x"], ["logx"], name="log"),
                               helper.make_node("Relu", ["logx"], ["y"], name="relu")],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "log.onnx"))
    data = np.abs(np.random.default_rng(0).standard_normal((8, 4))).astype(np.float32) + 0.1
    data[3, 2] = -1.0  # log(-1) = NaN inside the graph, not in the data
    np.save(tmp_path / "d.npy", data)
    args = ["calibrate", str(tmp_path / "log.onnx"), "--data", str(tmp_path / "d.npy"),
            "--scales", str(tmp_path / "s.json")]
    code, _, err = run(args, capsys)
    assert code == 2 and "tensor 'logx'" in err and "--allow-nonfinite" in " ".join(err.split())
    assert not (tmp_path / "s.json").exists()
    code, out, err = run([*args, "--allow-nonfinite"], capsys)
    assert code == 0, err
    assert "2 non-finite values skipped" in out  # logx and y


def test_default_method_is_auto_and_names_are_case_insensitive(
        setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = setup
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npz"),
                          "--scales", str(d / "a.json")], capsys)
    assert code == 0, err
    doc = json.loads((d / "a.json").read_text())
    assert doc["method"] == "auto" and doc["trt_cache"]["algorithm"] == "EntropyCalibration2"
    assert "calibrated with auto" in out
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npz"),
                          "--method", "Entropy", "--scales", str(d / "e.json")], capsys)
    assert code == 0, err
    assert json.loads((d / "e.json").read_text())["method"] == "entropy"


def test_uint8_pixels_with_allow_cast_and_the_no_output_note(
        setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = setup
    np.save(d / "pixels.npy", np.random.default_rng(1).integers(0, 256, (6, 3, 8, 8), np.uint8))
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "pixels.npy"),
                          "--allow-cast", "--scales", str(d / "p.json")], capsys)
    assert code == 0, err
    # cast as given: the input's amax is the largest pixel value, not ~1
    assert json.loads((d / "p.json").read_text())["tensors"]["x"]["amax"] > 200
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npy")], capsys)
    assert code == 0, err
    assert "neither --cache nor --scales given" in err and "tensors calibrated" in out


def test_npz_with_labels_beside_the_input_warns_and_calibrates(
        setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = setup
    x = np.load(d / "x.npy")
    np.savez(d / "xl.npz", x=x, labels=np.arange(len(x)))
    code, out, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "xl.npz"),
                          "--scales", str(d / "l.json")], capsys)
    assert code == 0, err
    assert "ignoring array(s) 'labels'" in err
    # the same scales as the file without the extra array
    code, _, err = run(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npz"),
                        "--scales", str(d / "n.json")], capsys)
    assert code == 0, err
    assert (json.loads((d / "l.json").read_text())["tensors"]
            == json.loads((d / "n.json").read_text())["tensors"])
