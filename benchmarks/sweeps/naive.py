#!/usr/bin/env python
"""Autotune vs a naive rule, on the outputs of a finished ``quantkit sweep`` (see sweeps/run.py).

The naive rule: rank the layers by the sweep's own sensitivity scan (``sensitivity.csv``,
``rank`` column: the order autotune searched), keep the top-k most sensitive layers out of
INT8 (in the auto config's ``default_float``, FP32 unless ``fp16: true``) and take the smallest
k that meets the auto config's ``max_accuracy_drop``, scanning k = 0, 1, 2, ... Both use the
same evaluation batches, labels, metric, calibration scales and Q/DQ writer as the sweep.

For models with few quantizable layers (``--exhaustive-max`` 10), every subset is scored too:
the true minimum number of layers that must leave INT8 for the target.

Usage: ``python -m benchmarks.sweeps.naive SWEEP_DIR --result OUT.json [--config auto]``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any


def _evaluator(recipe: Any) -> Any:
    """The sweep's evaluator, rebuilt from the recipe with public APIs."""
    from quantkit.data import open_source
    from quantkit.evaluate.metrics import metric_text_labels
    from quantkit.evaluate.run import load_labels
    from quantkit.model import input_specs, load_model
    from quantkit.sweep import Evaluator

    model_path = recipe.path(recipe.model)
    specs = input_specs(load_model(model_path))
    ev = recipe.data.evaluation or recipe.data.calibration
    src = open_source(recipe.source(ev.source), specs, preprocess=ev.preprocess,
                      columns=ev.columns, streaming=ev.streaming, seed=ev.seed)
    batches = list(src.batches(ev.batch_size, ev.max_samples))
    labels = (load_labels(recipe.path(ev.labels), text=metric_text_labels(recipe.metric))
              if ev.labels else None)
    if labels is not None and ev.max_samples is not None:
        labels = labels[: ev.max_samples]
    return Evaluator(str(model_path), batches, labels, recipe.metric, recipe.output)


def compare(sweep_dir: Path, config_name: str = "auto", exhaustive_max: int = 10,
            naive_max_evaluations: int = 30) -> dict[str, Any]:
    """Score the naive rule (and, for small models, every subset) against the sweep's autotune."""
    import onnx

    from quantkit.calibrators import read_scales
    from quantkit.qdq.plan import PrecisionConfig, Rule
    from quantkit.qdq.writer import quantize_model
    from quantkit.sweep.recipe import load_recipe

    env = json.loads((sweep_dir / "environment.json").read_text())
    recipe = load_recipe(env["recipe"])  # the original recipe: its paths resolve next to it
    config = next(c for c in recipe.configs if c.name == config_name)
    assert config.autotune is not None
    target = config.autotune.max_accuracy_drop
    method = config.method or recipe.calibration.method
    pct = config.percentile if config.percentile is not None else recipe.calibration.percentile
    key = method if pct is None else f"{method}-p{pct:g}"
    scales = read_scales(sweep_dir / "calibration" / f"{key}.json")
    auto = json.loads((sweep_dir / "autotune.json").read_text())
    with open(sweep_dir / "sensitivity.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["rank"]))
    order = [r["layer"] for r in rows]
    keep_as = "fp16" if config.fp16 else "fp32"
    model = onnx.load(str(recipe.path(recipe.model)))
    t0 = time.perf_counter()
    ev = _evaluator(recipe)
    setup_s = time.perf_counter() - t0
    fp32 = ev.reference_score()
    cache: dict[tuple[str, ...], Any] = {}

    def score(kept: list[str]) -> Any:
        key = tuple(sorted(kept))
        if key not in cache:
            cfg = PrecisionConfig(default="int8", default_float=keep_as,
                                  overrides=tuple(Rule(name=n, precision=keep_as)
                                                  for n in kept))
            cache[key] = ev.score(quantize_model(model, scales, cfg).model)
        return cache[key]

    def drop(s: Any) -> float:
        return float(ev.drop(fp32, s))

    t0 = time.perf_counter()
    naive: dict[str, Any] = {"reached": False, "scan": []}
    for k in range(len(order) + 1):
        if len(naive["scan"]) >= naive_max_evaluations:
            break
        s = score(order[:k])
        naive["scan"].append({"k": k, "accuracy": s.accuracy, "drop": drop(s)})
        if drop(s) <= target + 1e-9:
            naive.update(reached=True, k=k, kept=order[:k], accuracy=s.accuracy,
                         agreement=s.agreement, sqnr_db=s.sqnr_db)
            break
    naive["evaluations"] = len(naive["scan"])
    naive["seconds"] = time.perf_counter() - t0

    # autotune's final plan, re-scored here (same evaluator: must match the sweep's number)
    kept_auto = list(auto["kept"])
    s_auto = score(kept_auto)
    out: dict[str, Any] = {
        "sweep": str(sweep_dir), "config": config_name, "metric": ev.metric or "agreement",
        "higher_is_better": ev.higher_is_better, "target_drop": target,
        "evaluation_samples": ev.samples, "layers": len(order), "keep_as": keep_as,
        "fp32_accuracy": fp32.accuracy, "all_int8_accuracy": score([]).accuracy,
        "sensitivity_evaluations": 2 * len(order),
        "autotune": {"reached": auto["reached"], "k": len(kept_auto), "kept": kept_auto,
                     "accuracy": auto["final_accuracy"], "accuracy_rescored": s_auto.accuracy,
                     "evaluations": auto["evaluations"],
                     "search_evaluations": auto["evaluations"] - 2 * len(order)
                     if auto["evaluations"] > 1 else auto["evaluations"]},
        "naive": naive, "setup_s": setup_s,
    }
    if len(order) <= exhaustive_max:
        t0 = time.perf_counter()
        best: dict[str, Any] | None = None
        subsets = 0
        for k in range(len(order) + 1):
            for subset in itertools.combinations(order, k):
                subsets += 1
                s = score(list(subset))
                if drop(s) <= target + 1e-9 and (best is None or s.accuracy * (
                        1 if ev.higher_is_better else -1) > best["accuracy"] * (
                        1 if ev.higher_is_better else -1)):
                    best = {"k": k, "kept": list(subset), "accuracy": s.accuracy}
            if best is not None:
                break
        out["exhaustive"] = {"subsets": subsets, "seconds": time.perf_counter() - t0,
                             **(best or {"k": None})}
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--config", default="auto")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--exhaustive-max", type=int, default=10)
    parser.add_argument("--naive-max-evaluations", type=int, default=30)
    args = parser.parse_args(argv)
    res = compare(args.sweep_dir, args.config, args.exhaustive_max, args.naive_max_evaluations)
    args.result.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(json.dumps({k: res[k] for k in ("autotune", "naive")}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
