"""The plans the recipes' Python reads from YAML are the plans the sweep quantizes with.

``recipes.plans`` reads a recipe's configs with plain YAML; ``quantkit.sweep.load_recipe``
validates the same file and turns each config into the ``PrecisionConfig`` the sweep uses.
Both must agree for every INT8 config of every recipe in ``recipes/`` (the model and data
files a recipe names are stood in for by empty files: only their existence is checked when a
recipe loads). Each model's ``plans.yaml`` must hold valid precision mappings, and the module
constants (``MIXED_PLAN`` ...) must be those YAML plans. No model package is needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from quantkit.qdq.plan import PrecisionConfig
from quantkit.sweep.recipe import load_recipe
from recipes.plans import plan, plans_file, recipe_plans

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE_FILES = sorted(p for p in RECIPES.glob("*/*.yaml") if p.name != "plans.yaml")


def _stand_in(recipe: Path, root: Path) -> Path:
    """Copy ``recipe`` under ``root`` (same relative place) with empty files at its paths."""
    copy = root / recipe.relative_to(RECIPES)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe, copy)
    doc = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    paths = [doc["model"]]
    for spec in (doc.get("data") or {}).values():
        paths += [spec[k] for k in ("source", "labels") if spec.get(k)]
    for rel in paths:
        target = (copy.parent / rel).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    return copy


def test_every_model_folder_has_a_recipe() -> None:
    assert {p.parent.name for p in RECIPE_FILES} >= {"efficientnet_lite0", "ppocr", "minilm"}


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_plans_match_the_sweep(recipe: Path, tmp_path: Path) -> None:
    loaded = load_recipe(_stand_in(recipe, tmp_path))
    plans = recipe_plans(recipe)
    int8 = [c for c in loaded.configs if c.kind == "int8" and c.autotune is None]
    assert int8, f"{recipe}: no INT8 config"
    assert sorted(plans) == sorted(c.name for c in int8)
    for config in int8:
        file = loaded.precision_config(config)
        assert not file.rescue, config.name
        assert PrecisionConfig.from_mapping(plans[config.name]) == file.plan, config.name


@pytest.mark.parametrize("folder", sorted({p.parent for p in RECIPES.glob("*/plans.yaml")}),
                         ids=lambda p: p.name)
def test_plans_files_hold_precision_mappings(folder: Path) -> None:
    extra = plans_file(folder / "plans.yaml")
    assert extra
    for name, mapping in extra.items():
        PrecisionConfig.from_mapping(mapping)  # raises on a bad plan
        assert plan(folder, name, recipe=next(p.name for p in RECIPE_FILES
                                               if p.parent == folder)) == mapping


def test_module_plans_are_the_yaml_plans() -> None:
    from recipes import efficientnet_lite0, minilm, ppocr

    eff = recipe_plans(RECIPES / "efficientnet_lite0" / "recipe.yaml")
    assert eff["mixed-fp16"] == efficientnet_lite0.MIXED_PLAN
    assert eff["int8-minmax"] == efficientnet_lite0.INT8_PLAN
    assert efficientnet_lite0.EXPAND_ONLY_PLAN["overrides"][0]["precision"] == "int8"
    rec = recipe_plans(RECIPES / "ppocr" / "rec.yaml")
    assert rec["mixed-fp16"] == ppocr.REC_MIXED_PLAN
    assert rec["int8-minmax"] == ppocr.REC_INT8_PLAN
    assert plans_file(RECIPES / "ppocr" / "plans.yaml")["det-mixed"] == ppocr.DET_MIXED_PLAN
    mini = recipe_plans(RECIPES / "minilm" / "recipe.yaml")
    got = (minilm.INT8_PLAN, minilm.MIXED_PLAN, minilm.ATTENTION_ONLY_PLAN)
    assert (mini["int8"], mini["mixed"], mini["attention-only"]) == got


def test_unknown_plan_names_the_files(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text("configs:\n  - {name: a, precision: int8}\n")
    with pytest.raises(KeyError, match=r"no plan 'b' in .*recipe\.yaml.*plans: a"):
        plan(tmp_path, "b")
