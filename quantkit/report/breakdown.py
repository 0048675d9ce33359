"""Where the time goes: the latency estimate of each config split by precision and by kernel.

Reads the estimates a sweep wrote (``configs/<config>/estimate.json``, one per GPU of the
recipe's ``latency.estimate_gpus``) and draws, for the report's latency GPU, one bar per config
stacked by kernel precision, with the kernels that take the most time listed per config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from quantkit.report.figures import PRECISION_COLORS, _figure
from quantkit.report.load import Sweep
from quantkit.report.sources import RankingSource

#: kernels listed per config
TOP_KERNELS = 5


def primary_estimates(sweep: Sweep, source: RankingSource) -> dict[str, dict[str, Any]]:
    """``{config: estimate}`` on the sweep's latency GPU (else the first GPU estimated)."""
    gpus = [e.get("gpu") for docs in sweep.estimates.values() for e in docs]
    if not gpus:
        return {}
    gpu = source.target if source.kind == "estimated" and source.target in gpus else gpus[0]
    out = {}
    for config, docs in sweep.estimates.items():
        est = next((e for e in docs if e.get("gpu") == gpu), None)
        if est is not None and isinstance(est.get("latency_ms"), (int, float)):
            out[config] = est
    return out


def top_kernels(est: Mapping[str, Any], n: int = TOP_KERNELS) -> list[tuple[dict[str, Any], str]]:
    """The ``n`` slowest kernels of an estimate with their share of its time (``"23%"``)."""
    kernels = [k for k in est.get("kernels") or [] if isinstance(k, dict) and "ms" in k]
    total = float(est.get("latency_ms") or 0.0) or sum(float(k["ms"]) for k in kernels) or 1.0
    ranked = sorted(kernels, key=lambda k: -float(k["ms"]))[:n]
    return [(k, f"{float(k['ms']) / total:.0%}") for k in ranked]


def by_precision(estimates: Mapping[str, Mapping[str, Any]], label: str) -> Figure:
    """One horizontal bar per config: estimated milliseconds stacked by kernel precision.

    Args:
        estimates: ``{config: Estimate.to_json() document}`` for one GPU.
        label: the estimate's label for the axis (``estimated, L4, batch 8``).
    """
    configs = list(estimates)
    order = ["int8", "fp8", "fp16", "bf16", "fp32"]
    seen = {p for e in estimates.values() for p in (e.get("by_precision") or {})}
    precisions = [p for p in order if p in seen] + sorted(seen - set(order))
    fig = _figure(9.6, 0.42 * len(configs) + 1.5)
    ax = fig.add_subplot()
    left = np.zeros(len(configs))
    for prec in precisions:
        values = np.array([float((estimates[c].get("by_precision") or {}).get(prec, 0.0))
                           for c in configs])
        ax.barh(range(len(configs)), values, left=left, height=0.62,
                color=PRECISION_COLORS.get(prec, PRECISION_COLORS["other"]),
                edgecolor="white", linewidth=0.6)
        left += values
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:#.3g} ms", va="center", fontsize=7.5)
    ax.set_yticks(range(len(configs)))
    ax.set_yticklabels(configs, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, float(left.max()) * 1.18 if len(left) and left.max() > 0 else 1.0)
    ax.set_xlabel(f"estimated ms per batch ({label}), by kernel precision", fontsize=8)
    ax.tick_params(axis="x", labelsize=7.5)
    ax.grid(True, axis="x", lw=0.4, alpha=0.5)
    handles = [Patch(color=PRECISION_COLORS.get(p, PRECISION_COLORS["other"]), label=p.upper())
               for p in precisions]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


__all__ = ["TOP_KERNELS", "by_precision", "primary_estimates", "top_kernels"]
