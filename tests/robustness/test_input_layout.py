"""Inputs as models declare them: scalars fed as constants, batch axes other than 0, one
static-batch chunking that slices only batch axes (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit.capture import calibrate
from quantkit.cli.main import main
from quantkit.data import InputLayout, InputSpec, open_source, static_batch_chunks
from quantkit.errors import InputError
from tests.builders.robust import if_model, scalar_input_model, state_model

RNG = np.random.default_rng(0)
W = np.arange(16, dtype=np.float64).reshape(4, 4) / 10


def _spec(name: str, shape: tuple[int | str | None, ...], **kw: object) -> InputSpec:
    return InputLayout(**kw).apply([InputSpec(name, np.dtype("float32"), shape)])[0]  # type: ignore[arg-type]


@pytest.mark.parametrize(("shape", "axis"), [
    (("N", 3, 8, 8), 0), ((1, "seq"), 0), ((2, "batch", 128), 1), ((2, "B", 128), 0),
    ((), None), ((8, "T"), 0), ((1, 3), 0), (("seq", "batch_size"), 1)])
def test_batch_axis_detection(shape: tuple[int | str, ...], axis: int | None) -> None:
    assert _spec("a", shape).batch_axis == axis


def test_batch_axis_named_like_another_inputs_lead() -> None:
    specs = InputLayout().apply([InputSpec("x", np.dtype("float32"), ("n", 80)),
                                 InputSpec("h", np.dtype("float32"), (1, "n", 64))])
    assert [s.batch_axis for s in specs] == [0, 1]


def test_layout_errors() -> None:
    with pytest.raises(InputError, match="'nope' is not an input of the model"):
        _spec("a", ("N", 4), batch_axes={"nope": 1})
    with pytest.raises(InputError, match="axis 3 is outside it"):
        _spec("a", ("N", 4), batch_axes={"a": 3})
    with pytest.raises(InputError, match="needs a static shape"):
        _spec("a", ("N", 4), constants={"a": 1.0})


def test_chunks_move_samples_to_the_batch_axis_and_slice_nothing_else() -> None:
    """Static batch 1 everywhere: state [2, 1, 4] is fed as [2, 1, 4], never [1, 1, 4]."""
    specs = InputLayout({"state": 1}).apply([
        InputSpec("x", np.dtype("float32"), (1, 4)),
        InputSpec("state", np.dtype("float32"), (2, 1, 4))])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    state = np.arange(24, dtype=np.float32).reshape(3, 2, 4)  # samples first
    chunks = list(static_batch_chunks({"x": x, "state": state}, specs))
    assert len(chunks) == 3
    for k, c in enumerate(chunks):
        assert c["x"].shape == (1, 4) and c["state"].shape == (2, 1, 4)
        np.testing.assert_array_equal(c["state"][:, 0], state[k])
    # the same model without the declared axis: the sizes disagree and the error says why
    bad = InputLayout().apply([InputSpec("x", np.dtype("float32"), (1, 4)),
                               InputSpec("state", np.dtype("float32"), (2, 1, 4))])
    with pytest.raises(InputError, match=r"different fixed batch sizes.*batch_axes"):
        list(static_batch_chunks({"x": x, "state": state}, bad))


def test_chunks_drop_only_the_remainder() -> None:
    specs = [InputSpec("x", np.dtype("float32"), (2, 3))]
    chunks = list(static_batch_chunks({"x": np.zeros((5, 3), np.float32)}, specs))
    assert [c["x"].shape for c in chunks] == [(2, 3), (2, 3)]


def test_scalar_input_needs_a_constant(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = scalar_input_model(tmp_path / "s.onnx")
    x = RNG.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(InputError, match=r"gain: float32\[\] is a scalar.*constants option"):
        calibrate(path, {"x": x})
    res = calibrate(path, {"x": x}, method="minmax", batch_size=4,
                    data_options={"constants": {"gain": 3.0}})
    amax = res.scales.amaxes
    assert amax["gain"] == pytest.approx(3.0)
    assert amax["xs"] == pytest.approx(3 * np.abs(x).max(), rel=1e-6)
    assert amax["y"] == pytest.approx(np.abs((3 * x.astype(np.float64)) @ W).max(), rel=1e-5)
    assert res.num_samples == 10
    np.savez(tmp_path / "x.npz", x=x)
    code = main(["calibrate", str(path), "--data", str(tmp_path / "x.npz"), "--method", "minmax",
                 "--constant", "gain=3", "--scales", str(tmp_path / "s.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    code = main(["calibrate", str(path), "--data", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "gain" in err and "Traceback" not in err
    code = main(["calibrate", str(path), "--data", str(tmp_path / "x.npz"), "--constant", "g"])
    assert code == 2 and "--constant g: expected INPUT=VALUE" in capsys.readouterr().err


def _state_reference(x: np.ndarray, state: np.ndarray) -> dict[str, float]:
    """amax of d, h and y for data stored samples first (state [N, 2, 4])."""
    d = state[:, 0].astype(np.float64) - state[:, 1]
    h = x + d
    return {"d": np.abs(d).max(), "h": np.abs(h).max(), "y": np.abs(h @ W).max(),
            "new_state": 0.5 * np.abs(state).max()}


def test_dynamic_batch_on_axis_1(tmp_path: Path) -> None:
    path = state_model(tmp_path / "m.onnx")
    x = RNG.standard_normal((9, 4)).astype(np.float32)
    state = RNG.standard_normal((9, 2, 4)).astype(np.float32)
    res = calibrate(path, {"x": x, "state": state}, method="minmax", batch_size=4)
    want = _state_reference(x, state)
    for name, value in want.items():
        assert res.scales.amaxes[name] == pytest.approx(value, rel=1e-5), name
    assert res.num_samples == 9


def test_static_batch_state_with_declared_axis(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = state_model(tmp_path / "m.onnx", batch=1)
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    state = RNG.standard_normal((6, 2, 4)).astype(np.float32)
    with pytest.raises(InputError, match=r"batch axis of 'state' is axis 1.*\(state=1\)"):
        calibrate(path, {"x": x, "state": state})
    res = calibrate(path, {"x": x, "state": state}, method="minmax",
                    data_options={"batch_axes": {"state": 1}})
    for name, value in _state_reference(x, state).items():
        assert res.scales.amaxes[name] == pytest.approx(value, rel=1e-5), name
    assert res.num_samples == 6
    np.savez(tmp_path / "d.npz", x=x, state=state)
    code = main(["calibrate", str(path), "--data", str(tmp_path / "d.npz"), "--batch-axis",
                 "state=1", "--method", "minmax", "--scales", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    assert "6 samples" in capsys.readouterr().out


def test_constant_state_fed_whole(tmp_path: Path) -> None:
    """A fully static state given as a constant is fed as is to every chunk."""
    path = state_model(tmp_path / "m.onnx", batch=1)
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    source = open_source({"x": x}, [InputSpec("x", np.dtype("float32"), (1, 4)),
                                    InputSpec("state", np.dtype("float32"), (2, 1, 4))],
                         constants={"state": 0.25})
    batch = next(iter(source.batches(8)))
    assert batch["state"].shape == (2, 1, 4) and (batch["state"] == 0.25).all()
    res = calibrate(path, {"x": x}, method="minmax", data_options={"constants": {"state": 0.25}})
    assert res.scales.amaxes["d"] == 0.0
    assert res.scales.amaxes["y"] == pytest.approx(np.abs(x.astype(np.float64) @ W).max(),
                                                   rel=1e-5)


def test_if_condition_as_constant(tmp_path: Path) -> None:
    path = if_model(tmp_path / "if.onnx")
    x = RNG.standard_normal((8, 4)).astype(np.float32)
    res = calibrate(path, {"x": x}, method="minmax", data_options={"constants": {"flag": True}})
    # then-branch: y = relu(relu(x) @ 2I)
    assert res.scales.amaxes["y"] == pytest.approx(2 * np.maximum(x, 0).max(), rel=1e-6)
