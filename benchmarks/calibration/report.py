"""Markdown report of ``calibration/run.py``'s results (the JSON it writes)."""

from __future__ import annotations

from typing import Any

#: targets from the issue
TARGETS = {"peer_wall": 0.5, "peer_rss": 0.3, "overhead": 1.5, "flat": 0.10,
           "bigfile_mb": 700.0, "kl_ms": 50.0}


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def render(R: dict) -> str:
    out = []
    m = R["machine"]
    out += [f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['mem_total_gib']} GiB, {m['os']}; "
            f"Python {m['versions']['python']}, onnxruntime {m['versions']['onnxruntime']}, "
            f"numpy {m['versions']['numpy']}; "
            f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE'] or 'unset'}; "
            f"{m['date_utc']}",
            f"CPUs allowed: {R.get('cpus_allowed', '?')}; ONNX Runtime intra-op threads: "
            f"{R.get('ort_threads', 'ONNX Runtime default')}", ""]
    summary = []
    if "peers" in R:
        p = R["peers"]
        out += [f"### Peers: {p['model']}, {p['samples']} samples, batch {p['batch_size']}", "",
                "| tool | calibration wall (s) | process wall (s) | CPU (s) | load avg "
                "before/after | peak RSS (MB) | peak anon / file (MB) | tensors | "
                "quantkit/peer wall | quantkit/peer RSS |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for key, name in (("quantkit", "quantkit entropy"), ("ort", "ORT EntropyCalibrater"),
                          ("modelopt", "ModelOpt ONNX PTQ (entropy)")):
            r = p.get(key, {})
            if not r.get("ok"):
                why = r.get("skipped") or (f"failed (rc {r.get('returncode')}, see "
                                           f"{r.get('log')})")
                out.append(f"| {name} | {why} | | | | | | | | |")
                continue
            out.append(f"| {name} | {r['time_s']:.1f} | {r['process_wall_s']:.1f} | "
                       f"{r['cpu_s']:.0f} | {r['loadavg_1min'][0]:.1f} / "
                       f"{r['loadavg_1min'][1]:.1f} | {r['peak_rss_mb']:.0f} | "
                       f"{r['peak_anon_mb']:.0f} / "
                       f"{r['peak_file_mb']:.0f} | {len(r['amax'])} | "
                       f"{_f(r.get('wall_ratio'))} | {_f(r.get('rss_ratio'))} |")
        out += ["", "| amax agreement | common tensors | median rel. diff | max rel. diff | "
                "within 10% |", "|---|---|---|---|---|"]
        pairs = [("quantkit vs ORT", p.get("ort", {}).get("agreement_vs_quantkit")),
                 ("quantkit vs ModelOpt", p.get("modelopt", {}).get("agreement_vs_quantkit")),
                 ("ORT vs max abs (from quantkit's histogram)",
                  p.get("ort", {}).get("agreement_vs_absmax")),
                 ("ModelOpt vs max abs", p.get("modelopt", {}).get("agreement_vs_absmax")),
                 ("quantkit vs max abs", p.get("quantkit", {}).get("agreement_vs_absmax"))]
        for name, a in pairs:
            if a and a.get("common"):
                out.append(f"| {name} | {a['common']} | {a['median_rel']:.3f} | "
                           f"{a['max_rel']:.3f} | {a['within_10pct']} |")
        ort = p.get("ort", {})
        out += ["", f"Process CPU time ratio quantkit/ORT: {_f(ort.get('cpu_ratio'), '{:.2f}x')} "
                "(less sensitive than wall time to other load on the machine).", ""]
        summary.append(("quantkit wall <= 0.5x ORT", _f(ort.get("wall_ratio"), "{:.2f}x"),
                        ort.get("wall_ratio") and ort["wall_ratio"] <= TARGETS["peer_wall"]))
        summary.append(("quantkit peak RSS <= 0.3x ORT", _f(ort.get("rss_ratio"), "{:.2f}x"),
                        ort.get("rss_ratio") and ort["rss_ratio"] <= TARGETS["peer_rss"]))
    if "overhead" in R:
        o = R["overhead"]
        pl, qk, qn = o.get("plain", {}), o.get("quantkit", {}), o.get("quantkit-numpy", {})
        out += ["### Overhead vs plain ONNX Runtime inference (same outputs, batch, threads)", "",
                f"Best of {o['repeats']} alternating runs each (all runs in the JSON).", "",
                "| run | wall (s) | of which session.run (s) | session.run CPU / wall (ORT "
                "parallelism) | of which histogram updates (s) | CPU (s) | load avg before/after |",
                "|---|---|---|---|---|---|---|"]
        for name, r, run_key in ((f"quantkit calibrate() ({qk.get('histogram_kernel', '?')} "
                                  "binning)", qk, "run_batch_s"),
                                 ("quantkit calibrate(), QUANTKIT_HISTOGRAM_KERNEL=numpy", qn,
                                  "run_batch_s"),
                                 (f"plain ORT: load + session + run, {pl.get('outputs', '?')} "
                                  "outputs", pl, "run_s")):
            load = r.get("loadavg_1min", [None, None])
            par = (r["run_cpu_s"] / r[run_key]) if r.get("run_cpu_s") and r.get(run_key) else None
            out.append(f"| {name} | {_f(r.get('time_s'), '{:.1f}')} | "
                       f"{_f(r.get(run_key), '{:.1f}')} | {_f(par, '{:.2f}')} | "
                       f"{_f(r.get('update_many_s'), '{:.1f}')} | {_f(r.get('cpu_s'), '{:.0f}')} | "
                       f"{_f(load[0], '{:.1f}')} / {_f(load[1], '{:.1f}')} |")
        out += [f"| ratio | {_f(o.get('ratio'), '{:.2f}x')} | | | | "
                f"{_f(o.get('cpu_ratio'), '{:.2f}x')} | |",
                f"| ratio, numpy binning | {_f(o.get('ratio_numpy_path'), '{:.2f}x')} | | | | "
                f"{_f(o.get('cpu_ratio_numpy_path'), '{:.2f}x')} | |", ""]
        summary.append(("calibration <= 1.5x plain inference", _f(o.get("ratio"), "{:.2f}x"),
                        o.get("ratio") and o["ratio"] <= TARGETS["overhead"]))
        prof = o.get("profile", {})
        if prof.get("ok"):
            out += [f"Profile (cProfile, {prof['time_s']:.1f} s total):", "",
                    "| phase | time (s) | share |", "|---|---|---|"]
            out += [f"| {r['phase']} | {r['time_s']:.2f} | {r['share']:.0%} |"
                    for r in prof["phases"]]
            out += ["", "| top functions by own time | calls | tottime (s) | cumtime (s) |",
                    "|---|---|---|---|"]
            out += [f"| `{r['function']}` | {r['ncalls']} | {r['tottime_s']:.2f} | "
                    f"{r['cumtime_s']:.2f} |" for r in prof["top_tottime"][:12]]
            out.append("")
    if "flat" in R:
        f = R["flat"]
        out += [f"### Flat memory: {f['model']}, data {f['data']}", "",
                "| reader | samples | calibration wall (s) | peak RSS (MB) | peak anon (MB) | "
                "peak file-backed (MB) |", "|---|---|---|---|---|---|"]
        for r in f["runs"]:
            label = ("NpySource (library, mmap)" if r["reader"] == "library" else
                     "diagnostic: NpySource patched to read()")
            out.append(f"| {label} | {r.get('num_samples', r['max_samples'])} | "
                       f"{_f(r.get('time_s'), '{:.1f}')} | {_f(r.get('peak_rss_mb'), '{:.0f}')} "
                       f"| {_f(r.get('peak_anon_mb'), '{:.0f}')} | "
                       f"{_f(r.get('peak_file_mb'), '{:.0f}')} |")
        n = f["n"]
        out += ["", f"Growth {n} -> {8 * n} samples, library reader: peak RSS "
                f"{_f(f.get('growth_library'), '{:+.1%}')} (anonymous "
                f"{_f(f.get('growth_anon_library'), '{:+.1%}')}); diagnostic read() reader: "
                f"{_f(f.get('growth_plain-read'), '{:+.1%}')}", ""]
        g = f.get("growth_library")
        summary.append((f"peak RSS {8 * n} vs {n} samples within +10%", _f(g, "{:+.1%}"),
                        g is not None and g <= TARGETS["flat"]))
    if "bigfile" in R:
        b = R["bigfile"]
        q = b.get("library", {})
        out += ["### Big file", ""]
        if "skipped" in b:
            out += [f"Skipped: {b['skipped']}", ""]
        else:
            out += ["| reader | file | samples | calibration wall (s) | peak RSS (MB) | peak anon "
                    "/ file-backed (MB) |", "|---|---|---|---|---|---|"]
            for key, label in (("library", "NpySource (library, mmap)"),
                               ("plain-read", "diagnostic: NpySource patched to read()")):
                r = b.get(key)
                if r is None:
                    continue
                out.append(f"| {label} | {b['file_bytes'] / 2**30:.2f} GiB float32 .npy | "
                           f"{r.get('num_samples', '?')} | {_f(r.get('time_s'), '{:.1f}')} | "
                           f"{_f(r.get('peak_rss_mb'), '{:.0f}')} | "
                           f"{_f(r.get('peak_anon_mb'), '{:.0f}')} / "
                           f"{_f(r.get('peak_file_mb'), '{:.0f}')} |")
            out.append("")
        summary.append(("2 GiB .npy: peak RSS < 700 MB", _f(q.get("peak_rss_mb"), "{:.0f} MB"),
                        q.get("ok") and q["peak_rss_mb"] < TARGETS["bigfile_mb"]))
    if "kl" in R:
        k = R["kl"]
        out += ["### KL search (2048 bins, 1,921 candidates)", "",
                "| implementation | median (ms) | runs |", "|---|---|---|",
                f"| quantkit.calibrators.entropy_amax | {k['median_ms']:.2f} | {k['runs']} |",
                f"| reference-style Python loop | {k['ref_median_ms']:.0f} | {k['ref_runs']} |",
                "", f"Speed-up {k['speedup']:.0f}x; same amax: {k['same_amax']} "
                f"({k['amax']:.6g} vs {k['ref_amax']:.6g})", ""]
        summary.append(("KL search < 50 ms", f"{k['median_ms']:.2f} ms",
                        k["median_ms"] < TARGETS["kl_ms"]))
    head = ["### Targets", "", "| target | measured | result |", "|---|---|---|"]
    head += [f"| {t} | {v} | {_met(None if ok is None and v == 'n/a' else bool(ok))} |"
             for t, v, ok in summary]
    return "\n".join(out[:2] + head + [""] + out[2:])
