"""Determinism: the same inputs and seed give byte-identical scales JSON, TensorRT cache and
Q/DQ model -- within one process, and across processes with different hash seeds and ONNX
Runtime thread counts (see docs/determinism.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantkit.demo import asset, prepare_demo

METHODS = ["entropy", "minmax", "percentile", "mse"]

# Runs in a fresh interpreter: calibrates the shipped demo model with every method, writes the
# scales JSON and cache, quantizes (all-INT8 and a mixed FP16 plan) and prints a digest of
# every output. argv: work folder, output folder, ONNX Runtime intra-op threads (0 = default).
JOB = r"""
import hashlib, json, sys
from pathlib import Path

import quantkit._ort as ort_mod
from quantkit.capture import calibrate
from quantkit.model import load_model, save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model

work, out, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if threads:
    real = ort_mod.session
    ort_mod.session = lambda model, **kw: real(model, **{**kw, "threads": threads})
model = work / "demo_cnn.onnx"
data = str(work / "data" / "calibration.npy")
mixed = PrecisionConfig.from_mapping({"default": "int8", "default_float": "fp16", "overrides": [
    {"name": "/conv1/Conv", "precision": "fp16"}, {"op_type": "Softmax", "precision": "fp32"}]})
digests = {}
for method in sys.argv[4].split(","):
    table = calibrate(model, data, method=method, batch_size=64, max_samples=192,
                      data_options={"seed": 5}).scales
    table.write(out / f"{method}.json", "json")
    table.write(out / f"{method}.cache", "cache")
    for name, cfg in (("int8", PrecisionConfig()), ("mixed", mixed)):
        save_model(quantize_model(load_model(model), table, cfg, source=str(model)).model,
                   out / f"{method}-{name}.onnx")
for f in sorted(out.iterdir()):
    digests[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
print(json.dumps(digests))
"""


def _job(work: Path, out: Path, threads: int, hash_seed: str,
         methods: list[str]) -> dict[str, str]:
    out.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    res = subprocess.run([sys.executable, "-c", JOB, str(work), str(out), str(threads),
                          ",".join(methods)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("det")
    prepare_demo(d)
    return d


def test_same_process_twice_is_byte_identical(work: Path, tmp_path: Path) -> None:
    """The Python API, twice in one process: identical bytes for JSON, cache and Q/DQ model."""
    from quantkit.capture import calibrate
    from quantkit.model import load_model, save_model
    from quantkit.qdq.writer import quantize_model

    model = work / "demo_cnn.onnx"
    outputs = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        table = calibrate(model, str(work / "data" / "calibration.npy"), method="entropy",
                          batch_size=32).scales
        table.write(folder / "s.json", "json")
        table.write(folder / "s.cache", "cache")
        save_model(quantize_model(load_model(model), table, source=str(model)).model,
                   folder / "q.onnx")
        outputs.append({f.name: f.read_bytes() for f in sorted(folder.iterdir())})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"s.json", "s.cache", "q.onnx"}
    doc = json.loads(outputs[0]["s.json"])
    assert doc["num_samples"] == 256 and doc["tensors"]


def test_processes_hash_seeds_and_thread_counts_agree(work: Path, tmp_path: Path) -> None:
    """Fresh interpreters with different PYTHONHASHSEED and ORT intra-op thread counts."""
    runs = [_job(work, tmp_path / "r1", 1, "0", METHODS),
            _job(work, tmp_path / "r2", 0, "12345", METHODS),
            _job(work, tmp_path / "r3", 2, "random", METHODS)]
    assert len(runs[0]) == 4 * len(METHODS)
    for other in runs[1:]:
        assert other == runs[0], {k for k in other if other[k] != runs[0].get(k)}
    for method in METHODS:  # the files themselves, not only their digests, are the same
        for suffix in (".json", ".cache", "-int8.onnx", "-mixed.onnx"):
            a = (tmp_path / "r1" / f"{method}{suffix}").read_bytes()
            assert a == (tmp_path / "r3" / f"{method}{suffix}").read_bytes()


def test_shipped_demo_assets_load(work: Path) -> None:
    # guards the fixture: the determinism tests above run on the model shipped in the package
    assert asset("demo_cnn.onnx").read_bytes() == (work / "demo_cnn.onnx").read_bytes()
