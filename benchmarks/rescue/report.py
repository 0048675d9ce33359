"""Markdown of ``rescue/peers.py``: ``RESULTS-section.md`` from ``results.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _metric(key: str, m: dict | None) -> list[str]:
    if not m:
        return ["-", "-", "-"]
    if key == "effnet":
        return [_pct(m["agreement"]), _pct(m["top1"]), f"{m['sqnr_db']:.1f}"]
    return [f"{m['mean_cosine']:.4f}", f"{m['min_cosine']:.3f}", _pct(m["retrieval"])]


def _main_value(key: str, m: dict | None) -> float | None:
    if not m:
        return None
    return m["agreement"] if key == "effnet" else m["mean_cosine"]


def _delta(key: str, row: dict, rows: list[dict]) -> str:
    """Change of the headline metric against the same tool's (and plan's) no-rescue row."""
    if not row["rescue"]:
        return ""
    base = next((r for r in rows if r["tool"] == row["tool"] and not r["rescue"]
                 and r.get("group") == row.get("group")), None)
    a, b = _main_value(key, row.get("metrics")), _main_value(key, (base or {}).get("metrics"))
    if a is None or b is None:
        return "-"
    return f"{100 * (a - b):+.1f} pts" if key == "effnet" else f"{a - b:+.4f}"


def _acts(s: dict | None) -> str:
    if not s:
        return "-"
    return ", ".join(f"{v} {k}" for k, v in sorted(s["activation_quantizers"].items(),
                                                    key=lambda kv: -kv[1]))


def _rtx(r: dict | None) -> str:
    if not r:
        return "-"
    if not r.get("ok"):
        return "crashed"
    if not r.get("parse_ok"):
        return "**rejected**"
    return f"ok, {r['rtx_layers']['int8']} INT8"


def table(key: str, rows: list[dict[str, Any]]) -> str:
    heads = {"effnet": ["top-1 agreement %", "top-1 vs labels %", "logit SQNR dB"],
             "minilm": ["mean cosine", "min cosine", "retrieval agreement %"]}[key]
    head = ["tool", "config", *heads, "rescue effect", "as TensorRT INT8 (uint8 -> int8)",
            "Q / DQ", "activation quantizers", "TRT-RTX parse", "quantize wall s",
            "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        q = r.get("quantize") or {}
        if not q.get("ok"):
            err = (q.get("error") or "?").replace("|", "/").replace("`", "'")[:220]
            lines.append(f"| {r['tool']} | {r['config']} | **failed**: `{err}` |"
                         + " |" * (len(head) - 3))
            continue
        s = r.get("settings") or {}
        view = r.get("int8_view_metrics")
        view_txt = "-" if not view else (
            f"{_metric(key, view)[0]} ({r['int8_view']['rewritten']} rewritten; RTX "
            f"{_rtx(r.get('rtx_int8_view'))})")
        config = r["config"] + (" †" if r.get("resumed") else "")
        cells = [r["tool"], config, *_metric(key, r.get("metrics")), _delta(key, r, rows),
                 view_txt, f"{s.get('Q', '-')} / {s.get('DQ', '-')}", _acts(s),
                 _rtx(r.get("rtx")), f"{q['time_s']:.1f}", f"{q['peak_rss_mb']:.0f}"]
        if r.get("metrics_error"):
            cells[2] = f"eval failed: `{r['metrics_error'][:150]}`"
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def details(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        q, s = r.get("quantize") or {}, r.get("settings") or {}
        bits = []
        if q.get("ok"):
            bits.append(f"process {q['process_wall_s']:.1f} s, CPU {q['cpu_s']:.0f} s, load "
                        f"{q['loadavg_1min'][0]:.1f}->{q['loadavg_1min'][1]:.1f}")
        if q.get("settings"):
            bits.append("settings " + ", ".join(f"{k}={v}" for k, v in q["settings"].items()))
        if q.get("transforms_recorded"):
            bits.append("transforms " + ", ".join(
                f"{t['transform']} ({t['changed']} changed, {t['skipped']} skipped)"
                for t in q["transforms_recorded"]))
        if q.get("smoothquant"):
            bits.append(str(q["smoothquant"]))
        if "cle_changed_initializers" in q:
            bits.append(f"CLE changed {q['cle_changed_initializers']} initializers, op types "
                        f"{'changed' if q['cle_op_types_changed'] else 'unchanged'}")
        if r.get("transformed_fp32_metrics"):
            bits.append("equalized FP32 model alone: " + ", ".join(
                f"{k} {v:.4f}" for k, v in r["transformed_fp32_metrics"].items()
                if isinstance(v, float)))
        hdr = q.get("opset_header") or {}
        if hdr.get("restored_to"):
            bits.append(f"PPQ exported opset {hdr['exported_opset']} / IR {hdr['exported_ir']}; "
                        f"header restored to the source's {hdr['restored_to']}")
        if q.get("dropped_empty_inputs"):
            bits.append(f"{q['dropped_empty_inputs']} empty optional inputs dropped before PPQ")
        if s.get("weight_quantizers"):
            bits.append("weights: " + ", ".join(f"{v} {k}"
                                                for k, v in s["weight_quantizers"].items()))
        if s.get("dq_fed_ops"):
            bits.append("ops reading a DQ: " + ", ".join(
                f"{k} {v}" for k, v in sorted(s["dq_fed_ops"].items(), key=lambda kv: -kv[1])))
        if (r.get("metrics") or {}).get("batch1"):
            bits.append("fixed batch 1: evaluated one sample at a time")
        x = r.get("rtx") or {}
        if x.get("parse_error"):
            bits.append(f"RTX parse error: `{x['parse_error'][-300:]}`")
        if not q.get("ok") and q.get("error_tail"):
            bits.append(f"log: `{q.get('log')}`")
        out.append(f"- {r['tool']}, {r['config']}: " + "; ".join(bits))
    return "\n".join(out)


def installs_table(installs: dict[str, dict]) -> str:
    lines = ["| peer | installed here | versions | pins (why) | install time |",
             "|---|---|---|---|---|"]
    for peer, i in installs.items():
        vers = ", ".join(f"{k} {v}" for k, v in (i.get("versions") or {}).items()) or "-"
        if i.get("ok"):
            status = "yes" + (" (reused venv)" if i.get("reused") else "")
        else:
            err = " ".join(str(i.get("error", "?")).split()).replace("|", "/")[:500]
            status = f"**no** ({i.get('stage', '?')}): `{err}`"
        t = f"{i['install_s']:.0f} s" if i.get("install_s") else "-"
        lines.append(f"| {peer} | {status} | {vers} | `{' '.join(i.get('requirements', []))}`"
                     f" ({i.get('why_pins', '')}) | {t} |")
    return "\n".join(lines)


def _ok(r: dict | None) -> bool:
    return bool(r and (r.get("quantize") or {}).get("ok") and r.get("metrics"))


def _pick(rows: list[dict], tool: str, rescue: bool, group: str | None = None,
          contains: str = "") -> dict | None:
    for r in rows:
        if (r["tool"] == tool and r["rescue"] == rescue and contains in r["config"]
                and (group is None or r.get("group") == group) and _ok(r)):
            return r
    return None


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} %" if key == "effnet" else f"{v:.4f}"


def _rescue_pairs(key: str, rows: list[dict]) -> list[tuple[str, dict | None, list[dict]]]:
    """(label, no-rescue row, rescue rows) per tool (quantkit: per plan)."""
    out = []
    for tool in dict.fromkeys(r["tool"] for r in rows):
        groups = dict.fromkeys(r.get("group") for r in rows if r["tool"] == tool)
        for g in groups:
            base = _pick(rows, tool, False, g)
            resc = [r for r in rows if r["tool"] == tool and r["rescue"] and r.get("group") == g]
            out.append((tool + (f" ({g})" if g else ""), base, resc))
    return out


def summary_table(R: dict[str, Any]) -> str:
    """The acceptance figure: each tool without and with its rescue features."""
    lines = ["| model (metric) | tool | no rescue | with rescue | change |",
             "|---|---|---|---|---|"]
    names = {"effnet": "EfficientNet-Lite0 (top-1 agreement with FP32)",
             "minilm": "MiniLM (mean embedding cosine to FP32)"}
    for key, M in R["models"].items():
        for label, base, resc in _rescue_pairs(key, M["rows"]):
            b = _main_value(key, (base or {}).get("metrics"))
            for r in resc:
                if not _ok(r):
                    err = ((r.get("quantize") or {}).get("error") or "failed")[:80]
                    lines.append(f"| {names[key]} | {label} | {_fmt(key, b)} | {r['config']}: "
                                 f"failed (`{err}`) | - |")
                    continue
                a = _main_value(key, r["metrics"])
                cfg = r["config"].split(" (")[0]
                lines.append(f"| {names[key]} | {label} | {_fmt(key, b)} | {cfg}: "
                             f"{_fmt(key, a)} | {_delta(key, r, M['rows'])} |")
    return "\n".join(lines)


def _n_act(r: dict | None) -> int:
    return sum(((r or {}).get("settings") or {}).get("activation_quantizers", {}).values())


def _rtx_int8(r: dict | None) -> int | None:
    x = (r or {}).get("rtx") or {}
    return x.get("rtx_layers", {}).get("int8") if x.get("parse_ok") else None


def _load(r: dict) -> str:
    la = (r.get("quantize") or {}).get("loadavg_1min") or [0, 0]
    return f"{la[0]:.1f} -> {la[1]:.1f}"


def what_this_shows(R: dict[str, Any]) -> str:
    """Bullets computed from the results (numbers) around what each tool documents."""
    out: list[str] = []
    eff, mini = R["models"].get("effnet"), R["models"].get("minilm")

    def m(r: dict | None, key: str) -> float | None:
        return _main_value(key, (r or {}).get("metrics"))

    def f(r: dict | None, key: str) -> str:
        return _fmt(key, m(r, key))

    if eff:
        rows, k = eff["rows"], "effnet"
        q0 = _pick(rows, "quantkit", False, "rest FP32")
        q1 = _pick(rows, "quantkit", True, "rest FP32", "bias correction")
        qc = _pick(rows, "quantkit", True, "rest FP32", "CLE")
        if q0 and q1:
            eq = next((t for t in (qc or {}).get("quantize", {}).get("transforms_recorded", [])
                       if t["transform"] == "equalize"), None)
            out.append(
                f"- **EfficientNet-Lite0, quantkit** (every Conv/Gemm INT8, rest FP32 as the "
                f"peers write it): bias correction {f(q0, k)} -> {f(q1, k)} top-1 agreement "
                f"(logit SQNR {q0['metrics']['sqnr_db']:.1f} -> {q1['metrics']['sqnr_db']:.1f}"
                f" dB)" + (f", CLE + bias correction {f(qc, k)} (CLE: {eq['changed']} "
                           f"changed, {eq['skipped']} skipped in its report; ReLU6 and "
                           "residual joins are not equalized), so nearly all the gain is bias "
                           "correction" if qc and eq else "")
                + ". One view = 0.22 points; SQNR is the steadier signal.")
        n0, n1 = _pick(rows, "NNCF", False), _pick(rows, "NNCF", True)
        if n0 and n1:
            acts = (n0.get("settings") or {}).get("activation_quantizers", {})
            u8 = sum(v for kk, v in acts.items() if kk.startswith("uint8"))
            v0, v1 = n0.get("int8_view_metrics"), n1.get("int8_view_metrics")
            out.append(
                f"- **NNCF** (preset PERFORMANCE: symmetric per-tensor activations, symmetric "
                f"per-channel int8 weights; NNCF's hardware config refuses forced signed "
                f"activations, so {u8} of its {_n_act(n0)} activation quantizers are uint8 with "
                f"zero point 0, [0, 255] steps on non-negative tensors): fast bias correction "
                f"{f(n0, k)} -> {f(n1, k)} as written (SQNR {n0['metrics']['sqnr_db']:.1f} -> "
                f"{n1['metrics']['sqnr_db']:.1f} dB)"
                + (f"; {_pct(v0['agreement'])} -> {_pct(v1['agreement'])} % with those "
                   "quantizers made signed INT8 over the same range ('as TensorRT INT8' "
                   "column: TensorRT documents signed INT8 with zero point 0; TensorRT-RTX's "
                   "parser accepted the uint8 file, what an engine computes from it was not "
                   "checked)" if v0 and v1 else "")
                + ". NNCF also places Q/DQ in front of Pad, GlobalAveragePool and Flatten "
                f"(TensorRT-RTX parse: {_rtx_int8(n0)} of 50 Conv/Gemm counted INT8 by the "
                "DQ-input rule, the others read a Pad), and its activation ranges are the mean "
                "over samples of per-sample min/max (its default), not a percentile.")
        a0, a1 = _pick(rows, "AIMET-ONNX", False), _pick(rows, "AIMET-ONNX", True)
        if a0 and a1:
            qa = a1.get("quantize") or {}
            relu = ("its ReLU6 -> ReLU rewrite found nothing in this export's Clip nodes"
                    if not qa.get("cle_op_types_changed") else "it replaced ReLU6 by ReLU")
            out.append(
                f"- **AIMET-ONNX** has no bias correction for ONNX models (aimet-onnx ships "
                f"CLE, AdaRound, SeqMSE, AMP; bias correction is in aimet-torch and "
                f"aimet-tensorflow), so its rescue row is CLE alone: {f(a0, k)} -> {f(a1, k)} "
                f"({qa.get('cle_changed_initializers')} initializers changed; {relu}; the "
                f"equalized FP32 model alone: "
                f"{_pct((a1.get('transformed_fp32_metrics') or {}).get('agreement'))} % "
                f"agreement). AIMET quantizes every op output: {_n_act(a0)} activation "
                f"quantizers against {_n_act(q0)} for quantkit (also the model input and the "
                f"Clip, Add, Pad and pooling outputs), a likely reason for its lower baseline "
                f"(not isolated here). Activations were configured symmetric and signed "
                f"(TensorRT's INT8), ranges min/max (AIMET's default scheme).")
        p0, p1 = _pick(rows, "PPQ", False), _pick(rows, "PPQ", True)
        if p0 and p1:
            out.append(
                f"- **PPQ** (TRT_INT8 quantizer: symmetric per-tensor activations, 99.99 "
                f"percentile, per-channel weights; it also quantizes the inputs of Add, Pad and "
                f"pooling: {_n_act(p0)} activation quantizers): equalization + bias correction "
                f"{f(p0, k)} -> {f(p1, k)}."
                + (f" PPQ's own TorchExecutor on its quantized graph (no rescue) agrees with "
                   f"FP32 on {_pct(xc['executor_agreement'])} % of the recipe's {xc['views']} "
                   f"views, its exported ONNX on {_pct(xc['exported_agreement'])} % (the two "
                   f"agree on {_pct(xc['executor_vs_exported'])} %): the level is PPQ's "
                   "quantization, not its export." if (xc := p0.get("executor_check")) else "")
                + " PPQ needed two recorded repairs (an empty optional "
                "Pad input dropped before, the opset header restored after export) and "
                "exports batch 1.")
    if mini:
        rows, k = mini["rows"], "minilm"
        q0 = _pick(rows, "quantkit", False, "rest FP32")
        q5 = _pick(rows, "quantkit", True, "rest FP32", "0.5")
        q8 = _pick(rows, "quantkit", True, "rest FP32", "0.8")
        n0, nb = _pick(rows, "NNCF", False), _pick(rows, "NNCF", True, None, "only")
        n95, n8 = _pick(rows, "NNCF", True, None, "0.95"), _pick(rows, "NNCF", True, None,
                                                                 "alpha 0.8")
        if q0 and q8:
            applied = (n95 or {}).get("nncf_applied") or {}
            out.append(
                f"- **MiniLM:** quantkit SmoothQuant alpha 0.8 {f(q0, k)} -> {f(q8, k)} mean "
                f"cosine (alpha 0.5 on every MatMul: {f(q5, k)}, the harm docs/transforms.md "
                f"explains). NNCF {f(n0, k)} without rescue"
                + (f", {f(nb, k)} with fast bias correction alone" if nb else "")
                + (f", {f(n95, k)} with SmoothQuant (its default alpha 0.95) + fast bias "
                   f"correction" if n95 else "")
                + (f", {f(n8, k)} at alpha 0.8" if n8 else "")
                + (" (NNCF's log: " + ", ".join(f"{a} on {c} layers" for a, c in applied.items())
                   + ")" if applied else "")
                + ". With SmoothQuant both tools land at the same level (differences in the "
                f"fourth decimal: 256 sentences, one run). Placement differs: quantkit's plan "
                f"quantizes the inputs of all 48 MatMuls (TensorRT-RTX parse: {_rtx_int8(q0)} "
                f"INT8 layers) and nothing else; NNCF's TRANSFORMER mode quantizes the weight "
                f"MatMuls and the attention operands before their Reshape / Transpose "
                f"({_rtx_int8(n0)} INT8 layers in the parse)"
                + (" and the embedding tables (Gather)" if ((n0 or {}).get("settings") or {})
                   .get("dq_fed_ops", {}).get("Gather") else "") + ".")
        a0, p0, p1 = (_pick(rows, "AIMET-ONNX", False), _pick(rows, "PPQ", False),
                      _pick(rows, "PPQ", True))
        if a0 or p0:
            w = ((a0 or p0).get("settings") or {}).get("widest_activation", {})
            same = p0 and p1 and abs(m(p1, k) - m(p0, k)) < 1e-4
            a1q = (_pick(rows, "AIMET-ONNX", True) or {}).get("quantize") or {}
            out.append(
                "- **AIMET-ONNX and PPQ on MiniLM** are not a rescue comparison: AIMET's CLE "
                f"changed {a1q.get('cle_changed_initializers')} initializers (no Conv pairs)"
                + ("; PPQ's equalization + bias correction left the result unchanged" if same
                   else "")
                + ". Both quantize far more than the MatMul inputs (AIMET every op output, PPQ "
                "also Add, LayerNorm, Softmax, Mul/Div inputs), including the attention-score "
                f"Add that carries the -10000 padding mask: its per-tensor range is "
                f"~{w.get('amax', 0):.0f} (`{w.get('tensor', '?')}`), one INT8 step ~"
                f"{w.get('amax', 0) / 127:.0f}, so the scores between real tokens mostly fall "
                "on one level: mean cosine "
                + " and ".join(x for x in (a0 and f"{m(a0, k):.3f} (AIMET)",
                                          p0 and f"{m(p0, k):.3f} (PPQ)") if x) + ".")
    qe0 = eff and _pick(eff["rows"], "quantkit", False, "rest FP32")
    qe1 = eff and _pick(eff["rows"], "quantkit", True, "rest FP32", "bias correction")
    ne1 = eff and _pick(eff["rows"], "NNCF", True)
    pe1 = eff and _pick(eff["rows"], "PPQ", True)
    if qe0 and qe1:
        out.append(
            f"- **Cost** (whole quantization in its own process, shared 2-core VM): "
            f"EfficientNet quantkit {qe0['quantize']['time_s']:.1f} s / "
            f"{qe0['quantize']['peak_rss_mb']:.0f} MB without rescue, "
            f"{qe1['quantize']['time_s']:.1f} s / {qe1['quantize']['peak_rss_mb']:.0f} MB with "
            f"bias correction"
            + (f"; NNCF {ne1['quantize']['time_s']:.1f} s / "
               f"{ne1['quantize']['peak_rss_mb']:.0f} MB with fast bias correction" if ne1
               else "")
            + (f"; PPQ {pe1['quantize']['time_s']:.0f} s (CPU {pe1['quantize']['cpu_s']:.0f} s,"
               f" 1-min load {_load(pe1)}) with its rescue" if pe1 else "")
            + ". The load average before -> after each row is in the per-row lists; the VM is "
              "shared, so other jobs' load inflates some wall times (compare CPU s).")
    out.append(
        "- **Caveats:** one run; every model evaluated with ONNX Runtime CPU running the Q/DQ "
        "as written (TensorRT-like numerics, not a TensorRT engine; TensorRT-RTX only parsed the"
        " files); tools differ in calibration statistics and placement as well as in rescue, so "
        "the change within one tool is the cleaner comparison than levels across tools.")
    return "\n".join(out)


def write_report(R: dict[str, Any], work: Path) -> str:
    mi = R["machine"]
    md = ["## Rescue transforms vs peers (issue 10 item 6)", "",
          f"Run {mi['date_utc']}, total {R.get('total_s', 0) / 60:.1f} min. Command (repository "
          f"root): `{R['command']}`", "",
          *([("Earlier runs whose finished rows were kept (`--resume`, marked † in the "
              "tables): " + "; ".join(f"`{x['command']}` ({x['date_utc']}, "
                                      f"{x.get('total_s', 0) / 60:.1f} min)"
                                      for x in R.get("runs", [])[:-1])), ""]
            if len(R.get("runs", [])) > 1 else []),
          f"Machine: {mi['cpu_model']}, `nproc` = {mi['nproc']} (shared 2-core VM, other jobs "
          f"running: load average at start {mi['loadavg_start'].split()[0]}, at end "
          f"{R.get('loadavg_end', '?').split()[0]}), {mi['mem_total_gib']} GiB, {mi['os']}; "
          "dev venv " + ", ".join(f"{k} {v}" for k, v in mi["versions"].items()) + ".", "",
          "### Peers installed by the benchmark (one venv each)", "",
          installs_table(R["installs"]), "",
          "### Without and with rescue, per tool", "", summary_table(R), "",
          "### What this shows", "", what_this_shows(R), ""]
    for key, M in R["models"].items():
        md += [f"### {M['title']}", "",
               "Data: " + "; ".join(f"{k}: {v}" for k, v in M["info"].items()) + ".", "",
               table(key, M["rows"]), "", "Per row:", "", details(M["rows"]), ""]
    text = "\n".join(md)
    (work / "RESULTS-section.md").write_text(text)
    return text


__all__ = ["write_report"]
