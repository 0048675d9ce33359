"""The fast calibration path gives the plain path's scales, bit for bit (issue 21).

The fast path (what ``quantkit calibrate`` runs): only the activations quantized ops read,
reading / inference / histogramming overlapped in threads. The reference: every activation
captured by a plain :class:`ActivationCapture`, folded batch by batch in one thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _models import matmul_model, small_cnn

from quantkit.calibrators import HistogramCalibrator, create_calibrator
from quantkit.calibrators.cache import ScaleTable
from quantkit.capture import ActivationCapture, calibrate
from quantkit.capture.select import QUANTIZED_OPS, RESIDUAL_PRODUCERS, quantized_activations
from quantkit.errors import InputError
from quantkit.model import activation_tensors
from quantkit.qdq.rules import FUSES_RESIDUAL, QUANTIZABLE_OPS
from quantkit.qdq.writer import quantize_model

ASSETS = Path(__file__).resolve().parents[2] / "quantkit" / "assets"
METHODS = ["entropy", "percentile", "mse", "minmax", "auto"]


def _demo(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """The packaged digits CNN and 256 real MNIST digits, as the demo feeds them."""
    pixels = np.load(ASSETS / "demo_data.npz")["calibration"]
    x = pixels.astype(np.float32)[:, None] / 255.0
    np.savez(tmp_path / "digits.npz", input=x)
    return ASSETS / "demo_cnn.onnx", tmp_path / "digits.npz", x


def _plain(model: Path, x: np.ndarray, method: str, batch: int) -> object:
    """Every activation, one batch after the other, folded by one thread."""
    cap = ActivationCapture(model)
    cal = create_calibrator(method)
    name = cap.inputs[0].name
    for lo in range(0, len(x), batch):
        cal.update_many(cap.run_batch({name: x[lo: lo + batch]}), threads=1)
    return cal


@pytest.mark.parametrize("method", METHODS)
def test_fast_path_scales_equal_the_plain_path_bit_for_bit(tmp_path: Path, method: str) -> None:
    model, data, x = _demo(tmp_path)
    ref = _plain(model, x, method, 32)
    ref_amax = ref.compute_amax()
    fast = calibrate(model, str(data), method=method, batch_size=32, quantized_only=True)
    every = calibrate(model, str(data), method=method, batch_size=32)  # overlapped, all
    proto = onnx.load(str(model))
    wanted = [a.name for a in quantized_activations(proto, activation_tensors(proto))]
    assert list(fast.scales.amaxes) == wanted and len(wanted) < len(ref_amax)
    assert fast.num_samples == every.num_samples == 256
    assert every.scales.amaxes == ref_amax  # all tensors: identical dicts, float for float
    for n in wanted:
        assert np.float32(fast.scales.amaxes[n]).tobytes() == np.float32(ref_amax[n]).tobytes()
        assert fast.scales.scales[n] == every.scales.scales[n], n
        if isinstance(ref, HistogramCalibrator):
            assert isinstance(fast.calibrator, HistogramCalibrator)
            assert np.array_equal(fast.calibrator.histogram(n).counts, ref.histogram(n).counts)
    # the files quantkit writes hold the same bytes for those tensors
    table = ScaleTable.from_amax({n: ref_amax[n] for n in wanted}, method=fast.scales.method,
                                 model=str(model), num_samples=256,
                                 algorithm=fast.scales.algorithm,
                                 settings=fast.scales.settings)
    assert table.to_json_dict() == fast.scales.to_json_dict()


def test_residual_model_in_stages_and_odd_batches(tmp_path: Path) -> None:
    """A residual Add and a Gemm, a batch size that leaves a short last batch, a tiny budget."""
    m = small_cnn(tmp_path / "m.onnx", spatial=16)
    x = np.random.default_rng(3).standard_normal((45, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = _plain(m, x, "entropy", 7).compute_amax()
    for budget in (None, 96 << 10):  # one pass; stages (folded overlapped too)
        res = calibrate(m, str(tmp_path / "x.npy"), method="entropy", batch_size=7,
                        quantized_only=True, memory_budget=budget)
        assert sorted(res.scales.amaxes) == ["c2", "flat", "r1", "x"]
        assert res.scales.amaxes == {n: ref[n] for n in res.scales.amaxes}
        every = calibrate(m, str(tmp_path / "x.npy"), method="entropy", batch_size=7,
                          memory_budget=budget)
        assert every.scales.amaxes == ref


def test_staged_parts_are_folded_in_a_thread_in_order(tmp_path: Path) -> None:
    """Under a small budget the overlapped loop hands each stage to the fold thread, in graph
    order per batch and batches in data order, with the values a one-pass run gives."""
    import threading

    m = small_cnn(tmp_path / "m.onnx", spatial=16)
    x = np.random.default_rng(5).standard_normal((21, 3, 16, 16)).astype(np.float32)
    one = ActivationCapture(m)
    name = one.inputs[0].name
    want = [one.run_batch({name: x[lo: lo + 7]}) for lo in range(0, 21, 7)]
    staged = ActivationCapture(m, memory_budget=96 << 10)
    calls: list[tuple[str, dict[str, np.ndarray]]] = []

    def sink(part: dict[str, np.ndarray], threads: int = 1) -> None:
        calls.append((threading.current_thread().name, dict(part)))

    n = staged.run(({name: x[lo: lo + 7].copy()} for lo in range(0, 21, 7)), sink, overlap=True)
    assert n == 21 and staged.staged
    stages = len(calls) // 3
    assert stages >= 2 and len(calls) == 3 * stages
    assert all(t.startswith("quantkit-fold") for t, _ in calls)
    for b in range(3):
        got: dict[str, np.ndarray] = {}
        for _, part in calls[b * stages: (b + 1) * stages]:
            assert not set(part) & set(got)  # each tensor once per batch
            got.update(part)
        assert list(got) == list(want[b])  # graph order across the stages
        for k, v in want[b].items():
            assert got[k].tobytes() == v.tobytes(), (b, k)


def test_selection_covers_every_tensor_the_writer_quantizes(tmp_path: Path) -> None:
    assert QUANTIZED_OPS == QUANTIZABLE_OPS and RESIDUAL_PRODUCERS == FUSES_RESIDUAL
    models = [ASSETS / "demo_cnn.onnx", small_cnn(tmp_path / "s.onnx"),
              matmul_model(tmp_path / "mm.onnx"),
              matmul_model(tmp_path / "ct.onnx", convtranspose=True)]
    for path in models:
        proto = onnx.load(str(path))
        acts = activation_tensors(proto)
        chosen = {a.name for a in quantized_activations(proto, acts)}
        unit = ScaleTable(scales={a.name: 0.01 for a in acts})
        written = quantize_model(proto, unit).activation_qdq
        assert written and set(written) <= chosen, path.name
        # nothing else: every chosen tensor is read by a quantizable op or a residual Add
        readers = {i for n in proto.graph.node
                   if n.op_type in QUANTIZABLE_OPS or n.op_type == "Add" for i in n.input}
        assert chosen <= readers


def test_errors_come_in_data_order(tmp_path: Path) -> None:
    """A NaN in the input of batch 3 is reported after the 64 good samples before it."""
    m = small_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((96, 3, 8, 8)).astype(np.float32)
    x[70, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InputError, match="after 64 good samples"):
        calibrate(m, str(tmp_path / "x.npy"), batch_size=32, quantized_only=True)


HEAVY = ("datasets", "pandas", "matplotlib", "numba", "pydantic", "torch", "PIL", "rich.table",
         "quantkit.data.hf", "quantkit.data.images", "quantkit.data.preprocess",
         "quantkit.sweep", "quantkit.report", "quantkit.evaluate", "quantkit.qdq")


def _modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_start_up_imports_only_what_calibrate_uses(tmp_path: Path) -> None:
    loaded = _modules_after("import quantkit.cli.main")
    assert not [m for m in loaded if m.startswith(HEAVY + ("onnx", "onnxruntime"))]
    loaded = _modules_after("from quantkit.cli.main import main\n"
                            "import contextlib, io\n"
                            "with contextlib.redirect_stdout(io.StringIO()):\n"
                            "    main(['calibrate', '--help'])")
    assert "quantkit.cli.calibrate" in loaded
    assert not [m for m in loaded if m.startswith(HEAVY + ("onnx", "onnxruntime"))]
    model, data, _ = _demo(tmp_path)
    out = tmp_path / "s.json"
    loaded = _modules_after("from quantkit.cli.main import main\n"
                            f"assert main(['-q', 'calibrate', {str(model)!r}, '--data', "
                            f"{str(data)!r}, '--scales', {str(out)!r}]) == 0")
    assert out.is_file() and "onnxruntime" in loaded
    # numba may load: batches of 256 Ki values of a tensor take the compiled kernel (_kernel);
    # pydantic does: the run's option groups (quantkit.options) are pydantic models, and the
    # data group's preprocess field is typed with quantkit.data.preprocess's (pydantic) spec
    used = tuple(m for m in HEAVY if m not in ("numba", "pydantic", "quantkit.data.preprocess"))
    assert not [m for m in loaded if m.startswith(used)], "heavy modules imported"
