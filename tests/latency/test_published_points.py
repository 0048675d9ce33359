"""benchmarks/latency/published.yaml (schema, sources, split) and the model builders."""

from __future__ import annotations

import pytest
import yaml
from _bench import BENCH, load

from quantkit.latency import get_gpu

validate = load("validate")

REQUIRED = {"id", "source", "where", "model", "gpu", "gpu_published", "batch", "metric", "int8",
            "fp16"}
METRICS = {"latency_ms", "ms_per_image", "throughput"}


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load((BENCH / "published.yaml").read_text())


def test_every_point_is_complete_and_estimable(doc) -> None:
    models = load("models")
    ids = [p["id"] for p in doc["points"]]
    assert len(ids) >= 8 and len(set(ids)) == len(ids)
    for p in doc["points"]:
        missing = REQUIRED - set(p)
        assert not missing, f"{p['id']}: missing {missing}"
        assert set(p) <= REQUIRED | {"seq", "note"}, p["id"]
        assert p["source"] in doc["sources"], p["id"]
        assert get_gpu(p["gpu"]).name == p["gpu"], f"{p['id']}: use the table's canonical name"
        assert p["model"] in models.BUILDERS, p["id"]
        assert isinstance(p["batch"], int) and p["batch"] >= 1, p["id"]
        assert p["metric"] in METRICS, p["id"]
        assert p["int8"] > 0 and p["fp16"] > 0, p["id"]
        assert ("seq" in p) == p["model"].startswith("bert"), p["id"]
    for p in doc["not_in_gpu_table"]:
        assert p["source"] in doc["sources"] and p["int8"] > 0 and p["fp16"] > 0, p["id"]


def test_sources_name_a_url_and_a_version(doc) -> None:
    for key, src in doc["sources"].items():
        assert src["url"].startswith("https://"), key
        assert src["title"] and src["method"] and src["tensorrt"], key
    used = {p["source"] for p in doc["points"]}
    assert used == set(doc["sources"])


def test_split_alternates_in_file_order_and_covers_sources(doc) -> None:
    points, _ = validate.load_points()
    assert [p.half for p in points[:4]] == ["A", "B", "A", "B"]
    assert [p.id for p in points] == [p["id"] for p in doc["points"]]
    a = {p.source for p in points if p.half == "A"}
    b = {p.source for p in points if p.half == "B"}
    assert len(a & b) >= 3  # both halves see most sources


def test_published_figures_convert_to_ms_per_batch() -> None:
    base = dict(id="x", source="s", where="w", model="yolov8n", gpu="L4", gpu_published="L4")
    lat = validate.Point(**base, batch=8, metric="latency_ms", int8=2.2, fp16=3.3)
    assert lat.published_ms("int8") == 2.2
    per_image = validate.Point(**base, batch=8, metric="ms_per_image", int8=0.25, fp16=0.5)
    assert per_image.published_ms("fp16") == pytest.approx(4.0)  # 8 images x 0.5 ms
    fps = validate.Point(**base, batch=16, metric="throughput", int8=264.0, fp16=168.0)
    assert fps.published_ms("int8") == pytest.approx(16 / 264 * 1000)  # 60.61 ms per batch
    with pytest.raises(ValueError, match="metric"):
        validate.Point(**base, batch=1, metric="fps", int8=1.0, fp16=1.0).published_ms("int8")


@pytest.mark.parametrize(("name", "published_m", "tol"), [
    # parameter counts of the reference implementations (torchvision, ultralytics model
    # summaries, the BERT paper); ours have no BatchNorm (folded), so CNNs lose ~0.1-0.5%
    ("resnet50", 25.557, 0.01),
    ("yolov8n", 3.157, 0.01),
    ("yolov8s", 11.166, 0.01),
    ("yolo11n", 2.624, 0.01),
    ("yolo11s", 9.458, 0.01),
    ("yolo11m", 20.114, 0.01),
    ("yolov7", 36.9, 0.01),  # YOLOv7 paper, Table 1 (deployed, RepConv fused)
    ("bert_base", 110.0, 0.02),  # paper's 110M includes the 0.6M pooler we leave out
])
def test_builders_match_the_reference_parameter_counts(name, published_m, tol) -> None:
    pytest.importorskip("torch")
    model, _ = load("models").build(name)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(published_m, rel=tol)


def test_exported_models_are_valid_onnx_with_the_stated_inputs(tmp_path) -> None:
    pytest.importorskip("torch")
    import numpy as np
    import onnx
    import onnxruntime as ort

    models = load("models")
    path, spec = models.export("yolov8n", tmp_path)
    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in graph.input]
    assert dims == [["N", 3, 640, 640]] and spec.shapes(2)["images"] == [2, 3, 640, 640]
    out = ort.InferenceSession(str(path)).run(None, {"images": np.zeros((1, 3, 640, 640),
                                                                        np.float32)})[0]
    assert out.shape == (1, 84, 8400)  # 4 box + 80 class rows, 80^2 + 40^2 + 20^2 anchors

    # the BERT builder at a tiny size (same code path as bert_base/bert_large)
    bert = models.Bert(layers=1, hidden=64, heads=2, vocab=100).eval()
    _, bspec = models.bert_base()
    bpath = tmp_path / "bert_tiny.onnx"
    models.export_module(bert, bspec, bpath, batch=2, seq=8)
    onnx.checker.check_model(str(bpath))
    graph = onnx.load(str(bpath)).graph
    assert [i.name for i in graph.input] == ["input_ids", "segment_ids", "input_mask"]
    assert all([d.dim_param for d in i.type.tensor_type.shape.dim] == ["N", "L"]
               for i in graph.input)
    feeds = {k: np.ones(v, np.int64) for k, v in bspec.shapes(3, 5).items()}
    assert ort.InferenceSession(str(bpath)).run(None, feeds)[0].shape == (3, 5, 2)
