"""Sweeps over precision configurations, per-layer sensitivity and accuracy-target autotune."""

from quantkit.sweep.autotune import AutotuneResult, autotune
from quantkit.sweep.executor import Executor, LocalExecutor
from quantkit.sweep.recipe import Recipe, load_recipe
from quantkit.sweep.run import COLUMNS, SweepResult, run_sweep
from quantkit.sweep.scoring import Evaluator, Score
from quantkit.sweep.sensitivity import LayerSensitivity, layer_sensitivity, rank

__all__ = ["COLUMNS", "AutotuneResult", "Evaluator", "Executor", "LayerSensitivity",
           "LocalExecutor", "Recipe", "Score", "SweepResult", "autotune", "layer_sensitivity",
           "load_recipe", "rank", "run_sweep"]
