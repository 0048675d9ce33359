"""The shared workflows (quantkit.workflows) and typed options, on real ONNX Runtime runs.

Scales are checked against maxima taken with a plain ONNX Runtime session (independent of the
calibration code), sharded and single-pass runs against each other, and the quantize workflow's
Q/DQ model against the scales it was given. Library errors name parameters; the same mistake
on the command line names the flag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _models import small_cnn
from onnx import numpy_helper

from quantkit.cli.flags import to_flags
from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.model import load_model
from quantkit.options import CalibrationOptions, DataOptions, RuntimeOptions
from quantkit.qdq.plan import PrecisionConfig
from quantkit.sweep.executor import LocalExecutor
from quantkit.sweep.recipe import DataSpec
from quantkit.workflows import RescueRequest, ScaleOut, calibrate, quantize

MINMAX = CalibrationOptions(method="minmax")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wf")
    model = small_cnn(tmp / "m.onnx")
    rng = np.random.default_rng(3)
    np.save(tmp / "calib.npy", rng.standard_normal((40, 3, 8, 8)).astype(np.float32))
    return {"dir": tmp, "model": model, "data": tmp / "calib.npy"}


def _reference_amax(model: Path, data: np.ndarray, tensors: list[str]) -> dict[str, float]:
    """max |t| over the data for each tensor, with a plain ONNX Runtime session."""
    proto = onnx.load(str(model))
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in have)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()],
                    sess.run(None, {"x": data}), strict=True))
    return {t: float(np.abs(outs[t]).max()) if t != "x" else float(np.abs(data).max())
            for t in tensors}


def test_calibrate_matches_onnxruntime_maxima(case: dict[str, Path]) -> None:
    data = np.load(case["data"])
    res = calibrate(case["model"], str(case["data"]), calibration=MINMAX,
                    data_options=DataOptions(batch_size=16))
    ref = _reference_amax(case["model"], data, ["x", "r1", "c2", "logits"])
    for name, amax in ref.items():
        assert res.scales.amaxes[name] == pytest.approx(amax, rel=1e-6), name
    assert res.num_samples == 40


def test_sharded_calibration_is_the_single_pass(case: dict[str, Path]) -> None:
    opts = {"calibration": CalibrationOptions(method="entropy"),
            "data_options": DataOptions(batch_size=8, max_samples=32, seed=1)}
    one = calibrate(case["model"], str(case["data"]), **opts)
    made: list[LocalExecutor] = []

    def start() -> LocalExecutor:  # started only when the shards run
        made.append(LocalExecutor(processes=1))
        return made[-1]

    sharded = calibrate(case["model"], str(case["data"]),
                        scale_out=ScaleOut(start, shards=3), **opts)
    assert len(made) == 1
    assert sharded.scales.to_json_dict() == one.scales.to_json_dict()
    assert sharded.num_samples == one.num_samples == 32


def test_scale_out_refuses_cast_and_checkpoint_naming_parameters(case: dict[str, Path]) -> None:
    started: list[int] = []
    out = ScaleOut(lambda: started.append(1), shards=2)
    with pytest.raises(InputError, match=r"^allow_cast=True: not supported with scale_out="):
        calibrate(case["model"], str(case["data"]), data_options={"allow_cast": True},
                  scale_out=out)
    with pytest.raises(InputError, match=r"^checkpoint=: not supported with scale_out="):
        calibrate(case["model"], str(case["data"]), checkpoint=case["dir"] / "c.ckpt",
                  scale_out=out)
    assert not started  # refused before any executor started


def test_quantize_calibrates_and_writes_the_scales(case: dict[str, Path]) -> None:
    data = np.load(case["data"])
    from quantkit.options import RunOptions

    opts = RunOptions(MINMAX, DataOptions(batch_size=10), RuntimeOptions())
    done = quantize(load_model(case["model"]), PrecisionConfig(), source=case["model"],
                    data=str(case["data"]), options=opts)
    assert done.rescued is None and done.transforms == []
    inits = {t.name: numpy_helper.to_array(t) for t in done.result.model.graph.initializer}
    q_of_x = [n for n in done.result.model.graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] == "x"]
    assert len(q_of_x) == 1
    scale = float(inits[q_of_x[0].input[1]])
    assert scale == pytest.approx(float(np.abs(data).max()) / 127, rel=1e-6)
    assert done.result.plan.counts()["int8"] > 0


def test_quantize_rescue_keeps_float_layers_bias(case: dict[str, Path]) -> None:
    model = load_model(case["model"])
    scales = calibrate(case["model"], str(case["data"]), calibration=MINMAX).scales
    precision = PrecisionConfig.from_mapping(
        {"default": "int8", "overrides": [{"name": "/conv1/Conv", "precision": "fp16"}]})
    done = quantize(model, precision, source=case["model"], scales=scales,
                    data=str(case["data"]),
                    rescue_request=RescueRequest(("bias_correction",)))
    assert [t["transform"] for t in done.transforms] == ["bias_correction"]
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after_nodes = {n.name: n for n in done.model.graph.node}
    after = {t.name: numpy_helper.to_array(t) for t in done.model.graph.initializer}
    conv1_bias = after_nodes["/conv1/Conv"].input[2]
    np.testing.assert_array_equal(after[conv1_bias], before["b1"])  # fp16 layer untouched
    changed = [n for n in ("/conv2/Conv", "/fc/Gemm")
               if not np.array_equal(after[after_nodes[n].input[2]],
                                     before[{"/conv2/Conv": "b2", "/fc/Gemm": "bf"}[n]])]
    assert changed  # bias correction changed some INT8 layer


def test_options_name_the_parameter() -> None:
    with pytest.raises(InputError, match=r"^batch_size=0: "):
        DataOptions.of(batch_size=0)
    with pytest.raises(InputError, match="bogus: not an option of DataOptions"):
        DataOptions.coerce({"bogus": 1})
    with pytest.raises(InputError, match=r"calibrate\(\) got an unexpected keyword .*'bacth_size'"):
        from quantkit.capture import calibrate as calibrate_once

        calibrate_once("m.onnx", "d.npy", bacth_size=4)
    merged = DataOptions.coerce({"seed": 5, "batch_size": 4}, max_samples=8, batch_size=None)
    assert (merged.batch_size, merged.max_samples, merged.seed) == (4, 8, 5)


def test_recipe_data_set_embeds_data_options() -> None:
    spec = DataSpec(source="d.npy", batch_size=4, seed=2)
    assert isinstance(spec, DataOptions)
    assert DataOptions.coerce(spec) == DataOptions(batch_size=4, seed=2)
    # options added later stay out of the dump (config fingerprints) until they are set
    assert set(spec.model_dump(mode="json")) == {"source", "labels", "batch_size",
                                                 "max_samples", "seed", "preprocess",
                                                 "columns", "streaming"}
    assert spec.model_copy(update={"constants": {"sr": 16000}}).model_dump()["constants"] == \
        {"sr": 16000}


@pytest.mark.parametrize(("library", "cli"), [
    ("batch_size=0: must be a positive integer.", "--batch-size 0: must be a positive integer."),
    ("method='nope': unknown; or load_calibrator_plugin(FILE.py)",
     "--method nope: unknown; or --calibrator FILE.py"),
    ("pass allow_nonfinite=True to skip", "pass --allow-nonfinite to skip"),
    ("checkpoint='/a b/c.ckpt': changed", "--checkpoint /a b/c.ckpt: changed"),
    ("workspace_mib=0: give a positive size", "--workspace 0: give a positive size"),
    ("input 'a' INPUT=VALUE x.batch_size=1 sample_rate=16000",
     "input 'a' INPUT=VALUE x.batch_size=1 sample_rate=16000"),
    # a bare parameter ending a sentence keeps the full stop out of the flag's value
    ("no such file. Check the path given as data=.",
     "no such file. Check the path given as --data."),
    ("percentile=99.9. Use a value", "--percentile 99.9. Use a value"),
    ("data=model.onnx: not found", "--data model.onnx: not found"),
])
def test_to_flags(library: str, cli: str) -> None:
    assert to_flags(library) == cli


def test_same_mistake_library_and_command_line(case: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A library call names the parameter; the command line names its flag."""
    from quantkit.capture import calibrate as calibrate_once

    with pytest.raises(InputError) as lib:
        calibrate_once(case["model"], str(case["data"]), method="nosuch")
    assert str(lib.value).startswith("method='nosuch': unknown calibration method")
    assert "--" not in str(lib.value)
    code = main(["calibrate", str(case["model"]), "--data", str(case["data"]),
                 "--method", "nosuch"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "error: --method nosuch: unknown calibration method" in err
    assert "method=" not in err

    ckpt = case["dir"] / "k.ckpt"
    with pytest.raises(InputError, match=r"^checkpoint_every=0: must be a positive integer"):
        calibrate_once(case["model"], str(case["data"]), checkpoint=ckpt, checkpoint_every=0)
    code = main(["calibrate", str(case["model"]), "--data", str(case["data"]),
                 "--checkpoint", str(ckpt), "--checkpoint-every", "0"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "error: --checkpoint-every 0: must be a positive integer" in err

    code = main(["calibrate", str(case["model"]), "--data", str(case["data"]),
                 "--allow-cast", "--shards", "2"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "error: --allow-cast: not supported with --shards / --executor ray" \
        in err
