"""Plain-text tables for command output."""

from __future__ import annotations

from collections.abc import Sequence

import click


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                max_width: int = 60) -> None:
    """Print an aligned table to stdout; long cells are shortened in the middle."""

    def cell(v: object) -> str:
        s = str(v)
        return s if len(s) <= max_width else s[: max_width // 2 - 2] + "..." + s[-(max_width // 2
                                                                                  - 1):]

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in body:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _num(v: object, spec: str = ".3g") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and v == v else "-"


def latency_columns(row: dict[str, object]) -> tuple[str, str, str]:
    """``(p50 ms, its source, ONNX Runtime CPU p50 ms with its source)`` of a results row."""
    from quantkit.evaluate.latency import cpu_source, latency_label

    batch = row.get("latency_batch")
    source = latency_label(str(row.get("latency_source") or "-"),
                           str(row.get("latency_target") or "") or None,
                           int(batch) if isinstance(batch, (int, float)) else None)
    cpu = row.get("cpu_latency_ms_p50")
    cpu_text = "-" if not isinstance(cpu, (int, float)) else \
        f"{_num(cpu)} ({cpu_source(bool(row.get('int8_layers') or row.get('fp8_layers')))})"
    if row.get("latency_ms_p50") is None:
        source = "-"
    return _num(row.get("latency_ms_p50")), source, cpu_text


#: printed under a table with ONNX Runtime CPU timings of Q/DQ models
CPU_NOTE = ("cpu-fake-quant: ONNX Runtime on this CPU runs the Q/DQ model in float; it checks "
            "accuracy and says nothing about a TensorRT engine's speed.")
