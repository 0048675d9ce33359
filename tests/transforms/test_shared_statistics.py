"""One statistics pass shared by consecutive rescue transforms (issue 16 step 5).

High-bias absorption and SmoothQuant both read per-channel activation extrema. Run through
:func:`apply_rescue`, they share one ONNX Runtime capture pass; the tensors high-bias
absorption rewrites are measured again. Counted here on real small models with ONNX Runtime
(the capture's ``run`` is wrapped to count, the real one runs), and the models are compared
byte for byte with the two public transforms run one after another, each with its own pass.
The statistics themselves are checked against maxima taken with plain ONNX Runtime and numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.capture.runner import ActivationCapture
from quantkit.transforms import absorb_high_bias, smoothquant
from quantkit.transforms.rescue import apply_rescue
from quantkit.transforms.statistics import ActivationStatistics, ChannelStat


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def _conv_pair(rng: np.random.Generator) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """x -> conv1 (3->4, 3x3) -> relu; channels 0 and 2 have a large bias (always > 0)."""
    b1 = np.array([5.0, -0.2, 4.0, 0.1], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1",
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["h"], ["r"], name="relu1")]
    return nodes, [_init("w1", rng.normal(0, 0.05, (4, 3, 3, 3))), _init("b1", b1)]


def disjoint_model(path: Path) -> Path:
    """A high-bias pair (conv1 -> relu -> conv2) and, on another branch, a Gemm to smooth."""
    rng = np.random.default_rng(0)
    nodes, inits = _conv_pair(rng)
    nodes += [helper.make_node("Conv", ["r", "w2", "b2"], ["a"], name="conv2",
                               kernel_shape=[1, 1]),
              helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["b"], name="fc")]
    inits += [_init("w2", rng.normal(0, 0.5, (4, 4, 1, 1))), _init("b2", np.zeros(4)),
              _init("w3", rng.normal(0, 0.5, (3, 5)) * np.array([[1.0], [8.0], [0.1]])),
              _init("b3", np.zeros(5))]
    return _save(path, nodes, inits, [("a", [None, 4, 6, 6]), ("b", [None, 5])])


def overlap_model(path: Path) -> Path:
    """conv1 -> relu -> flatten -> fc: the Gemm's input is inside the high-bias pair."""
    rng = np.random.default_rng(1)
    nodes, inits = _conv_pair(rng)
    nodes += [helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc")]
    inits += [_init("w3", rng.normal(0, 0.1, (144, 5))), _init("b3", np.zeros(5))]
    return _save(path, nodes, inits, [("y", [None, 5])])


def _save(path: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
          outputs: list[tuple[str, list[Any]]]) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    x = np.random.default_rng(7).uniform(-0.5, 1.0, (40, 3, 8, 8)).astype(np.float32)
    x[:, 1] *= 6.0  # an outlier input channel for SmoothQuant
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"


@pytest.fixture()
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ONNX Runtime capture passes over the data (the real ``run`` does the work)."""
    count = [0]
    real = ActivationCapture.run

    def counted(self: ActivationCapture, *args: Any, **kwargs: Any) -> int:
        count[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ActivationCapture, "run", counted)
    return count


RUN = {"batch_size": 8, "max_samples": 32}


def _separate(model: onnx.ModelProto, data: Path) -> onnx.ModelProto:
    hb, _ = absorb_high_bias(model, data, **RUN)
    sq, _ = smoothquant(hb, data, alpha=0.5, verify=True, **RUN)
    return sq


@pytest.mark.parametrize("build, shared_passes", [(disjoint_model, 1), (overlap_model, 2)],
                         ids=["disjoint", "gemm-reads-the-pair"])
def test_consecutive_transforms_share_one_pass(tmp_path: Path, data: Path, passes: list[int],
                                               build: Any, shared_passes: int) -> None:
    model = onnx.load(str(build(tmp_path / "m.onnx")))
    passes[0] = 0
    alone = _separate(model, data)
    assert passes[0] == 2  # one statistics pass each

    passes[0] = 0
    res = apply_rescue(model, "hba,smoothquant", data, scales=None, method="minmax", **RUN)
    # the shared pass (plus, where the Gemm reads the pair, the one tensor high-bias absorption
    # changed), then the calibration of the transformed model
    assert res.statistics_passes == shared_passes
    assert passes[0] == shared_passes + 1
    assert [r["transform"] for r in res.reports] == ["high_bias", "smoothquant"]
    assert all(r["changed"] >= 1 for r in res.reports), res.reports  # both did something
    # the same model as each transform with its own pass (the shared statistics are valid)
    assert res.model.SerializeToString() == alone.SerializeToString()


def test_a_stale_statistic_would_change_the_model(tmp_path: Path, data: Path) -> None:
    """Why the changed tensor is measured again: its old statistic gives another model."""
    from quantkit.transforms.high_bias import absorb_pairs
    from quantkit.transforms.high_bias import prepare as hb_prepare
    from quantkit.transforms.smoothquant import prepare as sq_prepare
    from quantkit.transforms.smoothquant import smooth

    model = onnx.load(str(overlap_model(tmp_path / "m.onnx")))
    stats = ActivationStatistics(data, keep=32, **RUN)
    hp = hb_prepare(model, True)
    stats.measure(hp.model, hp.requests() + sq_prepare(hp.model, None).requests())
    hb, _, changed = absorb_pairs(model, hp, stats)
    assert "f" in changed  # the Gemm's input moved by -c
    stale, _, _ = smooth(hb, sq_prepare(hb, None), stats, alpha=0.5, fold=True, verify=True)
    assert stats.passes == 1
    assert stale.SerializeToString() != _separate(model, data).SerializeToString()


def _reference(model: onnx.ModelProto, x: np.ndarray, tensor: str) -> np.ndarray:
    from quantkit._ort import session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.ValueInfoProto(name=tensor))
    sess = session(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run([tensor], {"x": x})[0], np.float64)


def test_statistics_values_and_invalidation(tmp_path: Path, data: Path) -> None:
    model = onnx.load(str(disjoint_model(tmp_path / "m.onnx")))
    x = np.load(data)[:32]
    h, f = ChannelStat("h", "neg_max", 4, 4), ChannelStat("f", "abs_max", 3)
    stats = ActivationStatistics(data, **RUN)
    got = stats.get(model, [h, f])
    assert stats.passes == 1 and stats.samples == 32
    want_h = -_reference(model, x, "h").min(axis=(0, 2, 3))
    want_f = np.abs(_reference(model, x, "f")).max(axis=0)
    np.testing.assert_allclose(got[h], want_h, rtol=1e-6)
    np.testing.assert_allclose(got[f], want_f, rtol=1e-6)
    cached = stats.get(model, [f, h])  # served from the cache: no second pass
    assert stats.passes == 1
    np.testing.assert_array_equal(cached[f], got[f])
    stats.invalidate(["h"])
    assert stats.missing([h, f]) == [h]
    again = stats.get(model, [h, f])
    assert stats.passes == 2
    np.testing.assert_array_equal(again[h], got[h])
    stats.invalidate(None)
    assert stats.missing([h, f]) == [h, f]
