"""Scale-out on Ray (extra ``ray``): sharded calibration and sweeps, identical to local runs.

Runs on a local Ray instance started here (``num_cpus=2``) and, in one test, on a head node
started with ``ray start --head`` on 127.0.0.1 and reached by address. Skips when ray is not
installed; the library-level sharding checks (local executor) run either way.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from quantkit.capture import calibrate
from quantkit.capture.shard import ShardReport, calibrate_sharded, split_batches
from quantkit.cli.main import main
from quantkit.demo import asset
from quantkit.errors import MissingExtraError
from quantkit.sweep.executor import LocalExecutor, make_executor
from tests.builders.cnn import demo_digits, small_cnn

MODEL = asset("demo_cnn.onnx")
BATCH = 64


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,536 demo digits (the shipped 256, shifted and scaled copies), as the model's input."""
    return demo_digits(tmp_path_factory.mktemp("ray") / "calib.npy", 6)


@pytest.fixture(scope="module")
def reference(calib: Path) -> dict[str, dict]:
    return {m: calibrate(MODEL, calib, method=m, batch_size=BATCH).scales.to_json_dict()
            for m in ("entropy", "minmax")}


@pytest.fixture(scope="module")
def ray_local() -> Iterator[object]:
    """A local Ray instance with 2 CPUs, shared by the tests of this module."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def test_split_batches_covers_every_batch_once() -> None:
    assert split_batches(1, 24, 2) == [(1, 12), (12, 24)]
    assert split_batches(1, 3, 8) == [(1, 2), (2, 3)]
    assert split_batches(5, 5, 2) == []
    for lo, hi, k in [(0, 100, 7), (1, 2, 3), (3, 50, 50)]:
        ranges = split_batches(lo, hi, k)
        assert [b for a, z in ranges for b in range(a, z)] == list(range(lo, hi))


@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_sharded_in_process_equals_single_pass(calib: Path, reference: dict[str, dict],
                                                method: str) -> None:
    report = ShardReport()
    res = calibrate_sharded(MODEL, calib, executor=LocalExecutor(), shards=3, method=method,
                            batch_size=BATCH, report=report)
    assert res.scales.to_json_dict() == reference[method]
    assert report.fallback is None and report.prefix_batches == 1 and len(report.shards) == 3


def test_sharded_in_a_process_pool_writes_the_same_bytes(calib: Path, tmp_path: Path) -> None:
    """`--executor local --shards 2`: the shards run in two spawned worker processes."""
    (tmp_path / "one").mkdir()
    (tmp_path / "pool").mkdir()
    single = _cli_outputs(tmp_path / "one", calib)
    pooled = _cli_outputs(tmp_path / "pool", calib, "--shards", "2")
    assert pooled == single


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    ex = make_executor("ray")
    with pytest.raises(MissingExtraError, match=r"pip install 'quantkit\[ray\]'"):
        list(ex.map_unordered(str, [1]))


@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_sharded_on_ray_is_bit_identical(ray_local: object, calib: Path,
                                         reference: dict[str, dict], method: str) -> None:
    from quantkit.sweep.ray_executor import RayExecutor

    ex = RayExecutor()  # uses the running instance, leaves it running
    report = ShardReport()
    res = calibrate_sharded(MODEL, calib, executor=ex, shards=2, method=method,
                            batch_size=BATCH, threads=1, report=report)
    ex.close()
    assert res.scales.to_json_dict() == reference[method]  # floats compared exactly
    assert res.num_samples == 1536
    assert report.fallback is None and len(report.shards) == 2
    assert len({s["pid"] for s in report.shards} | {os.getpid()}) > 1  # ran in Ray workers


def _cli_outputs(out: Path, calib: Path, *extra: str) -> tuple[bytes, bytes]:
    code = main(["calibrate", str(MODEL), "--data", str(calib), "--batch-size", str(BATCH),
                 "--scales", str(out / "s.json"), "--cache", str(out / "c.cache"), *extra])
    assert code == 0
    return (out / "s.json").read_bytes(), (out / "c.cache").read_bytes()


def test_cli_calibrate_on_ray_writes_the_same_bytes(ray_local: object, calib: Path,
                                                    tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local = _cli_outputs(tmp_path / "local", calib)
    on_ray = _cli_outputs(tmp_path / "ray", calib, "--executor", "ray", "--shards", "2")
    assert on_ray == local


def test_task_errors_come_back_as_the_original_exception(ray_local: object) -> None:
    from quantkit.sweep.ray_executor import RayExecutor

    def boom(x: int) -> int:
        if x == 2:
            raise ValueError(f"bad item {x}")
        return x * 10

    got = dict(RayExecutor().map_unordered(boom, [1, 2, 3]))
    assert got[1] == 10 and got[3] == 30
    assert isinstance(got[2], ValueError) and str(got[2]) == "bad item 2"


RECIPE = """
name: small-cnn
model: m.onnx
metric: top1
data:
  calibration: {source: calib.npy, batch_size: 16}
  evaluation: {source: val.npy, labels: labels.npy, batch_size: 32}
calibration: {method: minmax}
configs:
  - {name: fp32, precision: fp32}
  - {name: int8-minmax, precision: int8}
  - {name: int8-entropy, precision: int8, method: entropy}
  # fails when it runs (an override that matches no node), not when the recipe loads
  - {name: broken, precision: {default: int8, overrides: [{name: /no/such/node, precision: fp16}]}}
latency: {iterations: 3, warmup: 1}
"""
TIMINGS = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput",
           "engine_build_s", "latency_ms_p50_min", "latency_ms_p50_max", "cpu_latency_ms_p50",
           "cpu_latency_ms_p99", "cpu_latency_ms_p50_min", "cpu_latency_ms_p50_max"}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(fh)]


def test_sweep_on_ray_matches_local_and_resumes(ray_local: object, tmp_path: Path) -> None:
    small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "calib.npy", rng.standard_normal((64, 3, 8, 8)).astype(np.float32))
    val = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "val.npy", val)
    probs = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": val})[0]
    np.save(tmp_path / "labels.npy", probs.argmax(1))
    (tmp_path / "r.yaml").write_text(RECIPE)
    recipe = str(tmp_path / "r.yaml")
    assert main(["sweep", recipe, "-o", str(tmp_path / "local")]) == 1  # 'broken' fails
    assert main(["sweep", recipe, "-o", str(tmp_path / "ray"), "--executor", "ray"]) == 1
    local, on_ray = _rows(tmp_path / "local" / "results.csv"), \
        _rows(tmp_path / "ray" / "results.csv")
    assert on_ray == local
    assert [r["status"] for r in on_ray] == ["ok", "ok", "ok", "failed"]
    # resumable as in the local case: a deleted config re-runs, the others are reused
    shutil.rmtree(tmp_path / "ray" / "configs" / "int8-entropy")
    before = (tmp_path / "ray" / "configs" / "fp32" / "result.json").stat().st_mtime_ns
    assert main(["sweep", recipe, "-o", str(tmp_path / "ray"), "--executor", "ray"]) == 1
    assert _rows(tmp_path / "ray" / "results.csv") == local
    assert (tmp_path / "ray" / "configs" / "fp32" / "result.json").stat().st_mtime_ns == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_cli_calibrate_on_a_head_node_by_address(calib: Path, tmp_path: Path) -> None:
    """`ray start --head` here; `quantkit calibrate --ray-address 127.0.0.1:PORT` (a subprocess).

    Ray resolves 127.0.0.1 to the node's own IP before connecting, so the head node is started
    on its default address (binding it to 127.0.0.1 alone makes the client time out).
    """
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    # `ray start` (Ray >= 2.5x) enables token authentication; a driver then needs
    # RAY_AUTH_MODE=token (the token is in ~/.ray/auth_token), as docs/ray.md says
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)  # its own process group: stopped below without `ray stop`
    try:
        (tmp_path / "local").mkdir()
        local = _cli_outputs(tmp_path / "local", calib, "--method", "minmax")
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        out = tmp_path / "remote"
        out.mkdir()
        while True:
            assert head.poll() is None, f"ray start failed: {head.communicate()[0][-3000:]}"
            proc = subprocess.run(
                [sys.executable, "-m", "quantkit.cli.main", "calibrate", str(MODEL), "--data",
                 str(calib), "--batch-size", str(BATCH), "--method", "minmax",
                 "--scales", str(out / "s.json"), "--cache", str(out / "c.cache"),
                 "--executor", "ray", "--ray-address", address, "--shards", "2"],
                capture_output=True, text=True, timeout=90, env=env)
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)  # the head node may still be starting
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ((out / "s.json").read_bytes(), (out / "c.cache").read_bytes()) == local
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)  # the head stops its GCS and raylet first
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_sensitivity_probes_on_ray_match_local(ray_local: object, tmp_path: Path) -> None:
    """Each layer's probes run as a Ray task; results, evaluation count and CSV are the same."""
    from quantkit.model import load_model
    from quantkit.sweep import Evaluator, layer_sensitivity
    from quantkit.sweep.ray_executor import RayExecutor

    model = small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    data = rng.standard_normal((48, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "d.npy", data)
    scales = calibrate(model, tmp_path / "d.npy", method="minmax", batch_size=16).scales
    fp = load_model(model)

    def evaluator() -> Evaluator:
        return Evaluator(str(model), [{"x": data[i: i + 16]} for i in range(0, 48, 16)],
                         None, None)

    class Spy(RayExecutor):
        """Records the process each task ran in."""

        pids: set[int] = set()

        def map_unordered(self, fn, items):  # type: ignore[no-untyped-def]
            def with_pid(item):  # type: ignore[no-untyped-def]
                return os.getpid(), fn(item)

            for item, res in super().map_unordered(with_pid, items):
                if not isinstance(res, BaseException):
                    self.pids.add(res[0])
                    res = res[1]
                yield item, res

    ev_local, ev_ray = evaluator(), evaluator()
    local = layer_sensitivity(fp, scales, ev_local)
    on_ray = layer_sensitivity(fp, scales, ev_ray, executor=Spy(), threads=1)
    assert len(local) >= 3
    assert Spy.pids and os.getpid() not in Spy.pids  # the probes ran in Ray workers
    assert on_ray == local  # Scores (floats) compared exactly, in graph order
    assert ev_ray.evaluations == ev_local.evaluations == 2 * len(local)

    args = ["sensitivity", str(model), "--data", str(tmp_path / "d.npy"), "--batch-size", "16",
            "--method", "minmax"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 0
    assert main([*args, "-o", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert (tmp_path / "ray" / "sensitivity.csv").read_bytes() == \
        (tmp_path / "local" / "sensitivity.csv").read_bytes()


def test_autotune_probes_on_ray_match_local(ray_local: object, tmp_path: Path) -> None:
    """`quantkit autotune --executor ray` writes the same precision YAML as the local run."""
    model = small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    np.save(tmp_path / "d.npy", rng.standard_normal((48, 3, 8, 8)).astype(np.float32))
    args = ["autotune", str(model), "--data", str(tmp_path / "d.npy"), "--batch-size", "16",
            "--method", "entropy", "--max-accuracy-drop", "0"]
    codes = [main([*args, "-o", str(tmp_path / "local.yaml")]),
             main([*args, "-o", str(tmp_path / "ray.yaml"), "--executor", "ray"])]
    assert codes[0] == codes[1]  # 0, or 1 (target unreachable) for both
    assert (tmp_path / "ray.yaml").read_text() == (tmp_path / "local.yaml").read_text()
