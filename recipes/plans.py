"""Precision plans, read from the recipes' YAML: the one place a plan is written.

A recipe's INT8 configs are the plans the sweep compares; a model's ``plans.yaml`` holds the
plans its measurement scripts use beyond the recipe. Python code (measurement scripts, tests,
benchmarks) reads both through :func:`recipe_plans` and :func:`plans_file` rather than
restating them, so a plan changed in YAML is the plan every consumer runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def _load(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def recipe_plans(recipe: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{config name: precision mapping}`` of a recipe's INT8 configs.

    A config with a ``precision`` mapping gives that mapping as written; ``precision: int8``
    gives ``{"default": "int8", "default_float": "fp16"}`` with ``fp16: true`` and
    ``{"default": "int8", "default_float": "fp32"}`` without, as the sweep quantizes it.
    ``fp32`` / ``fp16`` / ``fp8`` and ``autotune`` configs have no plan and are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for config in _load(recipe).get("configs", []):
        precision = config.get("precision")
        if isinstance(precision, dict):
            out[config["name"]] = precision
        elif precision == "int8":
            out[config["name"]] = {"default": "int8",
                                   "default_float": "fp16" if config.get("fp16") else "fp32"}
    return out


def plans_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """A ``plans.yaml``: ``{plan name: precision mapping}``."""
    doc = _load(path)
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ValueError(f"{path}: expected a mapping of plan name to precision mapping")
    return doc


def plan(folder: str | os.PathLike[str], name: str, recipe: str = "recipe.yaml"
         ) -> dict[str, Any]:
    """The plan ``name`` of a model folder: a config of its recipe, else of its plans.yaml."""
    base = Path(folder)
    found = recipe_plans(base / recipe)
    if (base / "plans.yaml").is_file():
        found = {**plans_file(base / "plans.yaml"), **found}
    if name not in found:
        raise KeyError(f"no plan {name!r} in {base / recipe} or {base / 'plans.yaml'}; "
                       f"plans: {', '.join(sorted(found))}")
    return found[name]


__all__ = ["plan", "plans_file", "recipe_plans"]
