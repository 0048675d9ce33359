"""Hostile / corrupt inputs: crafted ONNX models, recipes and data files are refused with
quantkit's own errors (exit 2 on the command line), and nothing read from disk is unpickled."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantkit
from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.model import load_model
from quantkit.sweep import load_recipe
from tests.builders.cnn import small_cnn

# -- ONNX models ---------------------------------------------------------------------------


def _external_model(folder: Path, location: str, *, data: bytes | None = None,
                    shape: tuple[int, ...] = (4, 4), length: int | None = None) -> Path:
    """A one-node model whose weight lives in external data at ``location``."""
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    del weight.dims[:]
    weight.dims.extend(shape)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": "0"}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        weight.external_data.add(key=k, value=v)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", shape[-1]])],
        initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (folder / "w.bin").write_bytes(data)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin", data=np.ones(16, np.float32).tobytes())
    model = load_model(path)
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert w.shape == (4, 4) and float(w.sum()) == 16.0


@pytest.mark.parametrize("location, needle", [
    ("../secret.bin", "leads outside the model's folder"),
    ("sub/../../secret.bin", "leads outside the model's folder"),
    ("/etc/passwd", "is an absolute path"),
    ("", "location is empty"),
])
def test_external_data_escaping_the_folder_is_refused(tmp_path: Path, location: str,
                                                      needle: str) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_model(tmp_path / "model", location)
    with pytest.raises(InputError) as err:
        load_model(path)
    msg = str(err.value)
    assert needle in msg and "initializer 'w'" in msg and str(path) in msg
    with pytest.raises(InputError, match="outside|absolute|empty"):
        load_model(path, load_external_data=False)  # checked even when data is not read


def test_external_data_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_model(tmp_path / "model", "w.bin")
    os.symlink(tmp_path / "secret.bin", tmp_path / "model" / "w.bin")
    with pytest.raises(InputError, match="leads outside the model's folder"):
        load_model(path)


def test_external_data_shorter_than_the_shape_is_refused(tmp_path: Path) -> None:
    # a 4-byte file for a declared 65536 x 65536 float tensor (16 GiB)
    path = _external_model(tmp_path, "w.bin", data=b"\0\0\0\0", shape=(65536, 65536))
    with pytest.raises(InputError, match=r"declares shape \[65536, 65536\].*holds 4 bytes"):
        load_model(path)
    path = _external_model(tmp_path / "b", "w.bin", data=b"\0" * 64, length=10**12)
    with pytest.raises(InputError, match="lies outside w.bin"):
        load_model(path)


def test_missing_external_data_file(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin")
    with pytest.raises(InputError, match="external-data file w.bin is missing"):
        load_model(path)


def _model_with(tmp_path: Path, edit: str) -> Path:
    path = small_cnn(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    if edit == "huge_input":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims, (1 << 20, 3, 1 << 10, 1 << 10), strict=True):
            d.dim_value = v
    elif edit == "negative_input":
        model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = -5
    elif edit == "minus_one_input":
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    elif edit == "huge_initializer":
        w = model.graph.initializer[0]
        del w.dims[:]
        w.dims.extend([1 << 20, 1 << 20, 3, 3])  # 10^13 elements declared, 216 stored
    elif edit == "negative_initializer":
        w = model.graph.initializer[0]
        w.dims[0] = -8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("edit, needle", [
    ("huge_input", "tensor 'x' declares 3298534883328 elements"),
    ("negative_input", "tensor 'x' has the dimension -5"),
    ("huge_initializer", "initializer 'w1' declares shape [1048576, 1048576, 3, 3]"),
    ("negative_initializer", "initializer 'w1' has a negative dimension"),
])
def test_absurd_dims_are_refused(tmp_path: Path, edit: str, needle: str) -> None:
    path = _model_with(tmp_path, edit)
    with pytest.raises(InputError) as err:
        load_model(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_minus_one_dim_is_accepted(tmp_path: Path) -> None:
    load_model(_model_with(tmp_path, "minus_one_input"))


def test_cli_refuses_a_hostile_model_with_exit_2(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    path = _external_model(tmp_path / "model", "../secret.bin")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    code = main(["quantize", str(path), "--data", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "outside the model's folder" in err
    assert not (tmp_path / "q.onnx").exists()


# -- recipes -------------------------------------------------------------------------------

RECIPE = """\
model: m.onnx
data:
  calibration: {source: calib.npy}
  evaluation: {source: val.npy, labels: labels.npy}
configs:
  - {name: fp32, precision: fp32}
  - {name: p, precision_file: p.yaml}
"""


def _recipe_dir(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    small_cnn(tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 8, 8), np.float32))
    np.save(tmp_path / "val.npy", np.zeros((4, 3, 8, 8), np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(4, np.int64))
    (tmp_path / "p.yaml").write_text("default: int8\n")
    (tmp_path / "r.yaml").write_text(RECIPE)
    return tmp_path / "r.yaml"


def test_recipe_paths_are_relative_to_the_recipe(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _recipe_dir(tmp_path / "proj")
    monkeypatch.chdir(tmp_path)  # somewhere else: paths still resolve next to the recipe
    r = load_recipe(Path("proj") / "r.yaml")
    assert r.path(r.model) == (tmp_path / "proj" / "m.onnx").resolve()
    assert r.path(r.data.calibration.source).is_file()


@pytest.mark.parametrize("old, new, needle", [
    ("source: calib.npy", "source: nope.npy", "data.calibration.source: "),
    ("labels: labels.npy", "labels: nope.npy", "data.evaluation.labels: "),
    ("precision_file: p.yaml", "precision_file: nope.yaml", "configs[1].precision_file: "),
    ("model: m.onnx", "model: nope.onnx", "model: "),
    ("source: val.npy", "source: ''", "data.evaluation.source: "),
])
def test_recipe_paths_must_exist(tmp_path: Path, old: str, new: str, needle: str) -> None:
    recipe = _recipe_dir(tmp_path)
    recipe.write_text(RECIPE.replace(old, new))
    with pytest.raises(InputError) as err:
        load_recipe(recipe)
    msg = str(err.value)
    assert str(recipe) in msg and needle in msg and "relative to the recipe" in msg


def test_recipe_hf_sources_are_not_paths(tmp_path: Path) -> None:
    recipe = _recipe_dir(tmp_path)
    recipe.write_text(RECIPE.replace("source: calib.npy", "source: 'hf:mnist'"))
    assert load_recipe(recipe).data.calibration.source == "hf:mnist"


def test_recipe_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    recipe = _recipe_dir(tmp_path)
    marker = tmp_path / "pwned"
    recipe.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(InputError, match="YAML"):
        load_recipe(recipe)
    assert not marker.exists()


# -- nothing read from disk is unpickled or evaluated -------------------------------------


def test_pickled_npy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small_cnn(tmp_path / "m.onnx")
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "evil.npy"),
                 "--scales", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "evil.npy" in err
    assert not (tmp_path / "s.json").exists()


_FORBIDDEN_CALLS = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"),
                    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("marshal", "loads"),
                    ("dill", "load"), ("cloudpickle", "load"), ("joblib", "load")}


def test_source_never_unpickles_or_evals() -> None:
    """Static audit of quantkit's source: no eval/exec/pickle/unsafe YAML, np.load and
    torch.load only with pickling off."""
    root = Path(quantkit.__file__).parent
    problems = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in ("eval", "exec"):
                problems.append(f"{where}: {fn.id}()")
            if not isinstance(fn, ast.Attribute):
                continue
            owner = fn.value.id if isinstance(fn.value, ast.Name) else ""
            if (owner, fn.attr) in _FORBIDDEN_CALLS:
                problems.append(f"{where}: {owner}.{fn.attr}()")
            kw = {k.arg: k.value for k in node.keywords}
            if owner == "np" and fn.attr == "load":
                v = kw.get("allow_pickle")
                if not (isinstance(v, ast.Constant) and v.value is False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
            if owner == "torch" and fn.attr == "load":
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert not problems, problems


def test_deeply_nested_yaml_files_are_input_errors(tmp_path: Path) -> None:
    from quantkit._yaml import load_yaml
    from quantkit.errors import InputError

    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 20000 + "]" * 20000)
    with pytest.raises(InputError, match="nested too deeply|YAML"):
        load_yaml(deep, "--precision")
