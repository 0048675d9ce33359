"""Markdown fragment of ``sweeps/run.py`` (``benchmarks/_work/sweeps/sweeps.md``), from results."""

from __future__ import annotations

import math
from typing import Any

_METRIC_COL = {"top1": "top-1 %", "agreement": "accuracy (= agreement) %",
               "cer": "CER % (lower is better)"}
_TITLES = {"demo": "Demo CNN (MNIST digits, `quantkit.demo.prepare_demo`)",
           "efficientnet_lite0": "EfficientNet-Lite0 (`recipes/efficientnet_lite0/recipe.yaml`)",
           "ppocr_rec": "PP-OCRv4 rec (`recipes/ppocr/rec.yaml`)"}


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    if v is None or v == "":
        return "-"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isinf(x):
        return "inf"
    return fmt.format(x)


def _load(step: dict[str, Any]) -> str:
    ld = step.get("load") or {}
    return (f"load avg (1 min) {ld.get('start', 0):.2f} at start, {ld.get('mean', 0):.2f} mean, "
            f"{ld.get('max', 0):.2f} max")


def _timing(step: dict[str, Any]) -> str:
    return (f"{step['wall_s']:.0f} s wall ({step['wall_s'] / 60:.1f} min), "
            f"{step['cpu_s']:.0f} s CPU; {_load(step)}")


def _sweep_table(step: dict[str, Any]) -> list[str]:
    metric = step.get("metric", "agreement")
    out = [f"| config | method | {_METRIC_COL.get(metric, metric)} | top-1 agreement % | "
           "SQNR dB | p50 ms (ORT CPU, batch 1) | model MB | INT8 / FP16 / FP32 nodes | "
           "engine MB (TRT-RTX) | status |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in step.get("rows", []):
        layers = f"{r.get('int8_layers') or 0} / {r.get('fp16_layers') or 0} / " \
                 f"{r.get('fp32_layers') or 0}"
        eng = r.get("engine_bytes")
        eng_s = _num(float(eng) / 2**20, "{:.1f}") if eng not in (None, "") else (
            r.get("engine_backend") or "-")
        status = r.get("status", "")
        if status != "ok" and r.get("error"):
            status += f": {r['error'][:120]}"
        out.append(
            f"| {r['config']} | {r.get('method') or '-'} | {_num(r.get('accuracy'))} | "
            f"{_num(r.get('agreement'))} | {_num(r.get('sqnr_db'), '{:.1f}')} | "
            f"{_num(r.get('latency_ms_p50'))} | "
            f"{_num(float(r['model_bytes']) / 1e6 if r.get('model_bytes') else None, '{:.2f}')}"
            f" | {layers} | {eng_s} | {status} |")
    return out


def _autotune_line(step: dict[str, Any]) -> str:
    a = step.get("autotune")
    if not a:
        return ""
    return (f"`auto`: target drop <= {a['target_drop']} points, "
            f"{'reached' if a['reached'] else '**not reached**'}; "
            f"{len(a['kept'])} layer(s) kept out of INT8 "
            f"({', '.join(f'`{k}`' for k in a['kept']) or 'none'}); FP32 "
            f"{_num(a['fp32_accuracy'])}, all-INT8 {_num(a['int8_accuracy'])}, final "
            f"{_num(a['final_accuracy'])}; {a['evaluations']} evaluations.")


def _compare(name: str, c: dict[str, Any]) -> list[str]:
    sens = c["sensitivity_evaluations"]
    a, n = c["autotune"], c["naive"]
    out = [f"**{_TITLES.get(name, name)}**: metric {c['metric']} on "
           f"{c['evaluation_samples']} evaluation samples, target: {c['metric']} within "
           f"{c['target_drop']} points of FP32 ({_num(c['fp32_accuracy'])}; all-INT8 "
           f"{_num(c['all_int8_accuracy'])}); {c['layers']} quantizable layers; kept layers "
           f"run in {c['keep_as'].upper()}.", "",
           "| rule | layers kept out of INT8 | accuracy reached | drop (points) | "
           "evaluations: search | evaluations: total |", "|---|---|---|---|---|---|"]
    a_total = a["evaluations"]
    out.append(f"| autotune (sweep `auto`) | {a['k']} | {_num(a['accuracy'])} | "
               f"{_num(_drop(c, a['accuracy']))} | {a['search_evaluations']} | {a_total} |")
    if n.get("reached"):
        out.append(f"| naive top-k by sensitivity rank | {n['k']} | {_num(n['accuracy'])} | "
                   f"{_num(_drop(c, n['accuracy']))} | {n['evaluations']} | "
                   f"{n['evaluations'] + sens} |")
    else:
        out.append(f"| naive top-k by sensitivity rank | not reached after k = "
                   f"{n['scan'][-1]['k'] if n['scan'] else '-'} | - | - | {n['evaluations']} | "
                   f"{n['evaluations'] + sens} |")
    ex = c.get("exhaustive")
    if ex and ex.get("k") is not None:
        out.append(f"| exhaustive (every subset, reference) | {ex['k']} | "
                   f"{_num(ex['accuracy'])} | {_num(_drop(c, ex['accuracy']))} | "
                   f"{ex['subsets']} | {ex['subsets']} |")
    out.append("")
    out.append(f"Totals include the {sens} sensitivity probes (2 per layer) that both rules "
               "need for the ranking; the naive scan starts at k = 0 (all-INT8). Autotune kept: "
               f"{', '.join(f'`{k}`' for k in a['kept']) or 'none'}; naive kept: "
               f"{', '.join(f'`{k}`' for k in n.get('kept', [])) or 'none'}. Autotune's plan "
               f"re-scored by the comparison script: {_num(a['accuracy_rescored'])}.")
    if ex and ex.get("k") is not None:
        out.append(f"Exhaustive minimum: {', '.join(f'`{k}`' for k in ex['kept']) or 'none'}.")
    return out


def _drop(c: dict[str, Any], acc: float) -> float:
    d = c["fp32_accuracy"] - acc
    return d if c["higher_is_better"] else -d


def render(R: dict[str, Any]) -> str:
    m = R["machine"]
    steps = R["steps"]
    lines = ["# Sweeps, autotune and per-layer sensitivity (issue 5)", "",
             f"Command (repository root): `{R['command']}`  ",
             f"Run: {R['started_utc']} to {R.get('finished_utc', '?')} UTC, "
             f"{R.get('total_s', 0) / 60:.1f} min in all.", "",
             f"Machine: {m['cpu_model']} ({m['processors']} logical CPUs in /proc/cpuinfo, "
             f"`nproc` = {m['nproc']}; flags {', '.join(m['cpu_flags'])}; no VNNI"
             if not {"avx512_vnni", "avx_vnni"} & set(m["cpu_flags"]) else
             f"Machine: {m['cpu_model']} (`nproc` = {m['nproc']}; flags "
             f"{', '.join(m['cpu_flags'])}",
             ]
    lines[-1] += f"), {m.get('mem_gib')} GiB RAM, {m['os']}, Python {m['python']}.  "
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines += [f"Packages: {pk}.", "",
              "The machine is shared with other jobs: each step gives its wall time, its CPU "
              "time (user + system of the process) and the 1-minute load average sampled every "
              "5 s while it ran. With a load above 2 on 2 cores, wall times and latencies are "
              "inflated by roughly load / 2; accuracy, agreement, SQNR, model sizes and "
              "evaluation counts do not depend on the load.", ""]

    lines += ["## a. Sweep tables (`quantkit sweep`)", "",
              "Every table is `results.csv` of a real `quantkit sweep RECIPE -o DIR --force`. "
              "Accuracy, agreement and SQNR are scored with ONNX Runtime on the CPU, Q/DQ run "
              "as written (fake quantisation, TensorRT's arithmetic); SQNR is of the logits "
              "(the Softmax input when the output is a Softmax) against FP32. p50 is ONNX "
              "Runtime CPU latency at batch 1 (30-50 runs): ONNX Runtime executes Q/DQ models "
              "as fake quantisation, so INT8 is *slower* than FP32 here -- the CPU latency "
              "column says nothing about TensorRT. 'nodes' counts graph nodes by precision "
              "(INT8 = quantized compute layers). Engines are TensorRT-RTX 1.7 builds on the "
              "CPU (engine size only; they cannot run here).", ""]
    for name in ("demo", "efficientnet_lite0", "ppocr_rec"):
        st = steps.get(name)
        if not st:
            continue
        lines += [f"### {_TITLES[name]}", "",
                  f"Recipe `{st.get('recipe')}` ({st.get('recipe_name')}): "
                  f"{st.get('calibration_samples')} calibration / "
                  f"{st.get('evaluation_samples')} evaluation samples; metric "
                  f"`{st.get('metric')}`. `quantkit sweep` took {_timing(st)}"
                  + (f"; **exit code {st['rc']}**" if st["rc"] else "") + ".", ""]
        lines += _sweep_table(st)
        lines += ["", _autotune_line(st), ""]
    if "prepare" in steps:
        st = steps["prepare"]
        fresh = "--force" in st["command"]
        lines += [f"`{st['command']}` (models + data for both recipes): {_timing(st)}"
                  + ("" if fresh else "; the folders were up to date, nothing was rewritten")
                  + ".", ""]

    naive = steps.get("naive") or {}
    if naive:
        lines += ["## b. Autotune vs the naive top-k rule", "",
                  "Naive rule: rank the layers by the sweep's own sensitivity scan "
                  "(`sensitivity.csv`, the ranking autotune searched: accuracy regained when "
                  "the layer alone leaves INT8, ties broken by the lowest SQNR when it alone is "
                  "INT8), keep the top-k out of INT8, take the smallest k that meets the target "
                  "(k = 0, 1, 2, ...). Same evaluation set, scales, plan base and writer as the "
                  "sweep (`benchmarks/sweeps/naive.py`).", ""]
        for name, st in naive.items():
            if "compare" not in st:
                lines += [f"{name}: comparison failed (exit {st['rc']}), see `{st['log']}`.", ""]
                continue
            lines += _compare(name, st["compare"])
            lines += ["", f"Comparison script: {_timing(st)}.", ""]
        lines += _naive_notes(naive)

    sens = steps.get("sensitivity")
    if sens:
        lines += ["## c. `quantkit sensitivity` on EfficientNet-Lite0", "",
                  f"`{sens['command']}`", ""]
        ok = sens["rc"] == 0
        n = sens.get("layers")
        target = "met" if ok and sens["wall_s"] < 600 else "**missed**"
        lines += [f"{n} layers probed (every Conv / Gemm the INT8 plan quantizes), 2 probes "
                  f"each ({2 * n if n else '?'} scored models + all-INT8) on the "
                  f"{steps.get('efficientnet_lite0', {}).get('evaluation_samples', 56)} "
                  f"evaluation images, after a percentile calibration on the 66 calibration "
                  f"images: **{sens['wall_s']:.0f} s wall ({sens['wall_s'] / 60:.1f} min)**, "
                  f"{sens['cpu_s']:.0f} s CPU; {_load(sens)}. Target < 10 min: {target}"
                  + ("" if ok else f" (exit code {sens['rc']})") + ".", ""]
        rows = sorted(sens.get("rows", []), key=lambda r: int(r["rank"]))[:8]
        if rows:
            lines += ["| rank | layer | op | SQNR dB, only this layer INT8 | agreement %, only "
                      "this layer left FP32 |", "|---|---|---|---|---|"]
            lines += [f"| {r['rank']} | `{r['layer']}` | {r['op_type']} | "
                      f"{_num(r['sqnr_int8_only'], '{:.1f}')} | {_num(r['metric_fp16_only'])} |"
                      for r in rows]
            lines.append("")
            lines += _sensitivity_vs_sweep(sens, steps.get("efficientnet_lite0"))
    lines += _notes(steps)
    return "\n".join(lines).rstrip() + "\n"


def _sensitivity_vs_sweep(sens: dict[str, Any], eff: dict[str, Any] | None) -> list[str]:
    """The CLI's probes against the same probes run by the sweep's ``auto`` config."""
    import csv
    from pathlib import Path

    if not eff or not eff.get("out"):
        return []
    path = Path(eff["out"]) / "sensitivity.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        sweep = {r["layer"]: r for r in csv.DictReader(fh)}
    cli = {r["layer"]: r for r in sens.get("rows", [])}
    common = sorted(set(sweep) & set(cli))
    if not common:
        return []
    dsqnr = max(abs(float(sweep[k]["sqnr_int8_only"]) - float(cli[k]["sqnr_int8_only"]))
                for k in common)
    diffs = [abs(float(sweep[k]["metric_fp16_only"]) - float(cli[k]["metric_fp16_only"]))
             for k in common]
    flips = sum(d > 1e-9 for d in diffs)
    n = eff.get("evaluation_samples") or 0
    most = f"{max(diffs) * n / 100:.0f} image(s) at most" if n else f"{max(diffs):.2f} points"
    same_rank = sum(sweep[k]["rank"] == cli[k]["rank"] for k in common)
    return [f"Against the same probes in the EfficientNet-Lite0 sweep's `auto` config "
            f"(`sensitivity.csv` there): int8-only SQNR within {dsqnr:.3f} dB on all "
            f"{len(common)} layers; the left-out agreement differs on {flips} layer(s) "
            f"({most}), and {same_rank} of {len(common)} ranks coincide. The two runs batch "
            "the data differently (calibration 32 vs 16, evaluation 32 vs 28 images), which "
            "moves scales and ONNX Runtime's float rounding slightly -- enough to flip "
            "near-tie images, and the ranking's first key is that whole-image agreement: at "
            "this set size, most of the ranking is noise; the SQNR column is the stable "
            "signal.", ""]


def _naive_notes(naive: dict[str, Any]) -> list[str]:
    """Who won, and why, from the numbers."""
    out = []
    for name, st in naive.items():
        c = st.get("compare")
        if not c:
            continue
        a, n = c["autotune"], c["naive"]
        title = _TITLES.get(name, name).split(" (")[0]
        if not n.get("reached"):
            out.append(f"- {title}: the naive scan did not reach the target within "
                       f"{n['evaluations']} evaluations; autotune kept {a['k']} layer(s).")
            continue
        if a["k"] < n["k"]:
            verdict = (f"autotune needs fewer layers ({a['k']} vs {n['k']}): its pruning pass "
                       "put back into INT8 layers that the ranking placed early but the "
                       "target did not need")
        elif a["k"] == n["k"]:
            verdict = f"a tie on layers ({a['k']} each)"
        else:
            verdict = (f"the naive rule needs fewer layers ({n['k']} vs {a['k']}): autotune's "
                       "binary search assumes that accuracy rises with the prefix length, "
                       "which a noisy metric breaks")
        cost = a["search_evaluations"] - n["evaluations"]
        cost_s = ("the same number of search evaluations" if cost == 0 else
                  f"{abs(cost)} search evaluation(s) {'more' if cost > 0 else 'fewer'} for "
                  "autotune")
        out.append(f"- {title}: {verdict}; {cost_s} ({a['search_evaluations']} vs "
                   f"{n['evaluations']}, on top of the {c['sensitivity_evaluations']} "
                   "sensitivity probes both need).")
    if not out:
        return []
    ks = sorted({str(st["compare"]["naive"].get("k")) for st in naive.values()
                 if st.get("compare") and st["compare"]["naive"].get("reached")})
    return ["Reading the comparison:", "", *out, "",
            "Why autotune does not do better here: when the passing prefix of the ranking is "
            f"short (k of {', '.join(ks)} here), a linear scan from k = 0 costs k + 1 "
            "evaluations, which is what the exponential + binary search costs too, and "
            "autotune then spends up to one evaluation per kept layer in its pruning pass "
            "(try each kept layer back in INT8; prefixes already scored are free). The search "
            "pays off when k is large (log k instead of k evaluations) and the pruning pass "
            "when the ranking puts a layer early that the target does not need. Both rules "
            "share the dominant cost, the sensitivity scan (2 evaluations per layer). The "
            "comparison was not tuned: the targets are the recipes' own (0.5 points for the "
            "demo, as its recipe ships).", ""]


def _notes(steps: dict[str, Any]) -> list[str]:
    out = ["## Notes", ""]
    eff = steps.get("efficientnet_lite0")
    if eff:
        n = eff.get("evaluation_samples") or 0
        rows = {r["config"]: r for r in eff.get("rows", [])}
        step = 100.0 / n if n else float("nan")
        out.append(
            f"- **Evaluation set sizes.** Demo: its 500 labelled digits. EfficientNet-Lite0: "
            f"{n} views (7 evaluation photos x {n // 7 if n else '?'}), no labels, so "
            f"accuracy = top-1 agreement with FP32 and one image is {step:.2f} points. "
            f"PP-OCRv4 rec: {steps.get('ppocr_rec', {}).get('evaluation_samples', '?')} "
            "lines. The sets are small on purpose: an `auto` config probes every quantizable "
            "layer twice (50 layers in EfficientNet-Lite0, 51 in the rec model), and that has "
            "to fit in minutes on 2 shared cores. `python -m recipes prepare "
            "--effnet-views 64 --rec-lines 128` writes the README's sizes (448 views, 128 "
            "lines).")
        if {"int8-percentile", "mixed-fp16"} <= set(rows):
            ip, mx = rows["int8-percentile"], rows["mixed-fp16"]
            out.append(
                f"- **EfficientNet-Lite0 agreement is coarse at {n} images.** int8-percentile "
                f"{_num(ip['agreement'])}% vs mixed-fp16 {_num(mx['agreement'])}% differ by "
                f"whole images, while the logit SQNR ({_num(ip['sqnr_db'], '{:.1f}')} vs "
                f"{_num(mx['sqnr_db'], '{:.1f}')} dB) shows the mixed plan's real gain; "
                "recipes/MODELS.md measured 96.65% vs 98.44% on 448 views. Read the "
                "SQNR column first for this model, and the autotune result as \"meets the "
                f"target on these {n} images\": on 448 views the README's per-layer SQNR "
                "ranking needed its 4 worst layers in FP16 (FP16 rest) to reach 97%.")
    ratios = []
    for name in ("demo", "efficientnet_lite0", "ppocr_rec"):
        rows = {r["config"]: r for r in (steps.get(name) or {}).get("rows", [])}
        try:
            base = float(rows["fp32"]["latency_ms_p50"])
            others = [float(r["latency_ms_p50"]) / base for c, r in rows.items()
                      if c != "fp32" and r.get("latency_ms_p50")]
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        if others:
            ratios.append(f"{_TITLES[name].split(' (')[0]} {min(others):.1f}-"
                          f"{max(others):.1f}x")
    out.append(
        "- **Latency.** p50 is ONNX Runtime on this CPU at batch 1 while other jobs ran (see "
        "the load: timings of configs measured minutes apart are not comparable below ~2x), "
        "Q/DQ executed as fake quantisation (`session.disable_quant_qdq`: extra float ops, no "
        "integer kernels), FP16 nodes through ONNX Runtime's CPU provider (casts around "
        "kernels AVX2 lacks). Non-FP32 configs relative to FP32: "
        f"{'; '.join(ratios) or '-'}. None of this predicts TensorRT; model bytes and engine "
        "sizes are load-independent.")
    for name in ("demo", "efficientnet_lite0", "ppocr_rec"):
        st = steps.get(name) or {}
        ev = st.get("entropy_vs_percentile")
        rows = {r["config"]: r for r in st.get("rows", [])}
        if not ev or "int8-entropy" not in rows:
            continue
        r = rows["int8-entropy"]
        low = ", ".join(f"`{x['tensor']}` {x['entropy']:.3g} vs {x['other_amax']:.3g}"
                        for x in ev["lowest"][:2])
        out.append(
            f"- **Entropy calibration, {_TITLES[name].split(' (')[0]}**: int8-entropy "
            f"{st.get('metric')} {_num(r['accuracy'])}, logit SQNR "
            f"{_num(r['sqnr_db'], '{:.1f}')} dB. Over the {ev['tensors']} calibrated tensors, "
            f"entropy's amax is below half the percentile-99.99 amax on {ev['below_0.5']} and "
            f"below a fifth on {ev['below_0.2']} (median ratio {ev['median']:.2f}; lowest: "
            f"{low}): KL calibration gives up the tails of these activations for "
            "resolution.")
    rec = steps.get("ppocr_rec")
    if rec:
        a = rec.get("autotune") or {}
        if a.get("evaluations") == 1:
            out.append(
                f"- **PP-OCRv4 rec `auto`** met its target (CER <= FP32 + "
                f"{a.get('target_drop')} points, the README's target) with every layer INT8: "
                "one evaluation, no sensitivity scan.")
    out.append(
        "- **PP-OCRv4 det has no recipe.** Its output is a per-pixel probability map; no "
        "registered metric scores one (the README's IoU of binarised maps lives in "
        "`recipes/ppocr/`), and without a metric a sweep's accuracy would be the "
        "top-1 agreement of the flattened map (whether the single most confident pixel moved).")
    out.append("")
    return out
