"""Markdown tables of ``qdq/run.py`` (the generated part of RESULTS.md's Q/DQ section)."""

from __future__ import annotations

from typing import Any

_METRIC_HEAD = {
    "effnet": ("agreement", "top-1 (labels)", "logit SQNR"),
    "rec": ("CER", "line agreement"),
    "det": ("map IoU", "mean abs diff"),
}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _metrics(key: str, m: dict | None) -> list[str]:
    if not m:
        return ["-"] * len(_METRIC_HEAD[key])
    if key == "effnet":
        return [_pct(m["agreement"]), _pct(m["top1"]), f"{m['sqnr_db']:.1f} dB"]
    if key == "rec":
        return [_pct(m["cer"]), _pct(m["agreement"])]
    return [f"{m['iou']:.4f}", f"{m['mean_abs_diff']:.4f}"]


def _rtx(r: dict | None) -> tuple[str, str]:
    if not r or not r.get("ok"):
        return "crashed", "-"
    if not r.get("parse_ok"):
        return "**fail**", "-"
    parse = f"ok ({r['rtx_layers']['int8']} INT8)"
    if not r.get("build_ok"):
        return parse, "**fail**"
    return parse, f"ok, {r['build_s']:.1f} s"


def _load(r: dict) -> str:
    la = r.get("loadavg_1min")
    return f"{la[0]:.1f}/{la[1]:.1f}" if la else "-"


def table(key: str, rows: list[dict[str, Any]], fp32: dict[str, float]) -> str:
    head = ["tool", "config", *(_METRIC_HEAD[key]), "Q / DQ", "INT8 compute ops",
            "lint E / W / I", "RTX parse", "RTX build", "wall s", "CPU s", "peak RSS MB",
            "load 1-min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| FP32 | reference | " + " | ".join(_metrics(key, fp32)) + " |"
                 + " - |" * (len(head) - 2 - len(_METRIC_HEAD[key])))
    for r in rows:
        q = r["quantize"]
        d = r.get("describe") or {}
        if not q.get("ok"):
            err = (q.get("error_tail") or "").strip().splitlines()[-1:] or ["?"]
            lines.append(f"| {r['tool']} | {r['config']} | FAILED: `{err[0][:150]}` |"
                         + " |" * (len(head) - 3))
            continue
        lint = d.get("lint", {})
        parse, build = _rtx(r.get("rtx"))
        int8 = d.get("compute_precision", {}).get("int8", 0)
        total = sum(d.get("compute_precision", {}).values())
        cells = [r["tool"], r["config"], *_metrics(key, r.get("metrics")),
                 f"{d.get('Q', '-')} / {d.get('DQ', '-')}", f"{int8} / {total}",
                 f"{lint.get('errors', '-')} / {lint.get('warnings', '-')} / "
                 f"{lint.get('info', '-')}", parse, build, f"{q['time_s']:.1f}",
                 f"{q['cpu_s']:.0f}", f"{q['peak_rss_mb']:.0f}", _load(q)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(rows: list[dict[str, Any]]) -> str:
    """Lint codes, RTX errors and quantkit phase times, one bullet per row."""
    out = []
    for r in rows:
        q, d, x = r["quantize"], r.get("describe") or {}, r.get("rtx") or {}
        bits = []
        if q.get("ok") and "calibrate_s" in q:
            bits.append(f"calibrate {q['calibrate_s']:.1f} s + load {q['load_s']:.2f} s + "
                        f"quantize_model {q['quantize_s']:.2f} s + save {q['save_s']:.2f} s")
        if q.get("ok") and q.get("preprocess_s"):
            bits.append(f"quant_pre_process {q['preprocess_s']:.1f} s")
        if d.get("lint_codes"):
            codes = sorted(d["lint_codes"].items())
            bits.append("lint " + ", ".join(f"{k} x{v}" for k, v in codes))
        if d.get("dq_fed_ops"):
            bits.append("ops reading a DQ: " + ", ".join(
                f"{k} {v}" for k, v in sorted(d["dq_fed_ops"].items(), key=lambda kv: -kv[1])))
        if x.get("parse_error"):
            bits.append(f"RTX parse error: `{_short(x['parse_error'])}`")
        if x.get("build_error"):
            bits.append(f"RTX build error: `{_short(x['build_error'])}`")
        if x.get("parse_ok"):
            bits.append(f"RTX parse {x['parse_s']:.2f} s, parsed layers "
                        f"int8/fp16/fp32 = {x['rtx_layers']['int8']}/{x['rtx_layers']['fp16']}/"
                        f"{x['rtx_layers']['fp32']}")
        if r.get("eval_s") is not None:
            bits.append(f"eval {r['eval_s']:.0f} s")
        out.append(f"- {r['tool']} {r['config']}: " + "; ".join(bits))
    return "\n".join(out)


def _short(msg: str) -> str:
    msg = " ".join(msg.split()).replace("`", "'")
    return msg[:400]


__all__ = ["details", "table"]
