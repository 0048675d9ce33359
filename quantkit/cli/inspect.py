"""``quantkit inspect``: Q/DQ placement, per-node precision and lint findings of a model/engine.

For ``.onnx`` files: :func:`quantkit.qdq.lint.lint_model` (TensorRT's Q/DQ rules, see
docs/tensorrt_rules.md#qdq-placement). For ``.engine`` files: the sidecar ``FILE.engine.json``
written by ``quantkit build`` (per-layer precision of the parsed network, the builder's kernels
and the
plan), plus TensorRT's engine inspector when a GPU and a full TensorRT are present.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from quantkit.cli.render import print_table
from quantkit.errors import InputError, PipelineError

if TYPE_CHECKING:
    import onnx

    from quantkit.qdq.lint import LintReport, NodeInfo

logger = logging.getLogger(__name__)

INSPECT_FORMAT = "quantkit-inspect/1"
_ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_HIDDEN = ("QuantizeLinear", "DequantizeLinear", "Constant")


@click.command("inspect")
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a quantkit-inspect/1 JSON document.")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a finding has severity error (for CI).")
@click.option("--all", "show_all", is_flag=True,
              help="Also list QuantizeLinear/DequantizeLinear/Constant nodes in the table.")
def inspect_cmd(file: str, as_json: bool, strict: bool, show_all: bool) -> None:
    """Show Q/DQ placement, per-node precision and TensorRT lint findings.

    FILE is an .onnx model (linted against TensorRT's Q/DQ rules) or an .engine built by
    quantkit build (its FILE.engine.json sidecar is shown). Findings do not change the exit
    code unless --strict is given.

    \b
    Examples:
      quantkit inspect model.int8.onnx
      quantkit inspect model.int8.onnx --json > lint.json
      quantkit inspect model.int8.onnx --strict     # exit 1 on error findings
      quantkit inspect model.engine
    """  # noqa: D301 -- a real backspace: click keeps the \b paragraph unwrapped
    path = Path(file)
    if not path.exists():
        raise InputError(f"{path}: no such file. Give an .onnx model, or an .engine built by "
                         "quantkit build (with its .engine.json sidecar next to it).")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give an .onnx model or an .engine file.")
    name = path.name.lower()
    if name.endswith(_ENGINE_SUFFIXES) or name.endswith(tuple(s + ".json"
                                                               for s in _ENGINE_SUFFIXES)):
        _inspect_engine(path, as_json)
        return
    model = load_onnx(path)
    report = _with_body_precision(_lint(path, model), model)
    transforms = model_transforms(model)
    if as_json:
        doc = {"format": INSPECT_FORMAT, "file": str(path), "kind": "onnx", **report.to_dict(),
               "transforms": transforms}
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_report(path, report, show_all)
        _print_transforms(transforms)
    if strict and report.has_errors:
        raise PipelineError(f"{path}: {report.count('error')} error finding(s) (--strict); "
                            "TensorRT would reject this model or run the flagged nodes in "
                            "float. Fix the findings listed above.")


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX model for inspection (no checker, no external data: lint reports both).

    Raises:
        InputError: the file is not a readable ONNX model.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # DecodeError, OSError, ValueError...
        raise InputError(
            f"{path}: not a readable ONNX model ({type(err).__name__}: {err}). quantkit inspect "
            "reads .onnx models and .engine files built by quantkit build; check that the file "
            "is complete and was exported as ONNX.") from err
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{path}: not an ONNX model (the graph is empty). quantkit inspect "
                         "reads .onnx models and .engine files built by quantkit build.")
    return model


def _lint(path: Path, model: onnx.ModelProto) -> LintReport:
    from quantkit.qdq.lint import lint_model

    return lint_model(model, source=str(path), base_dir=str(path.parent))


def _with_body_precision(report: LintReport, model: onnx.ModelProto) -> LintReport:
    """``report`` with each If/Loop/Scan's precision taken from its bodies' compute nodes.

    The node's own first input is a condition or a trip count, not what it computes in.
    """
    import dataclasses

    bodies = body_precisions(model)
    if not bodies:
        return report
    nodes = []
    for n in report.nodes:
        counts = bodies.get(n.name)
        if counts is not None:
            kinds = sorted(counts)
            precision = (kinds[0] if len(kinds) == 1 else "mixed") if kinds else "-"
            inside = ", ".join(f"{c} {k}" for k, c in sorted(counts.items()))
            note = (f"bodies: {inside} compute node(s)" if counts
                    else "no compute node in its bodies")
            n = dataclasses.replace(n, precision=precision, notes=(*n.notes, note))
        nodes.append(n)
    return dataclasses.replace(report, nodes=nodes)


def body_precisions(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """``{If/Loop/Scan node of the main graph: {precision: compute nodes in its bodies}}``.

    A body's Conv/ConvTranspose/Gemm/MatMul counts as ``int8``/``fp8`` when its first two
    inputs come from DequantizeLinear nodes of that type (``int8`` when the type is not known;
    uint8 counts as int8), else as the float type it reads (shape inference; ``fp32`` when
    unknown).
    """
    import onnx

    from quantkit.graph import has_subgraph, subgraphs, type_name, walk_graphs
    from quantkit.qdq.rules import QUANTIZABLE_OPS

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # best effort: unknown types read as fp32
        inferred = model
    types: dict[str, int] = {}
    for g, _ in walk_graphs(inferred.graph):
        for vi in (*g.input, *g.value_info, *g.output):
            if vi.type.HasField("tensor_type"):
                types[vi.name] = vi.type.tensor_type.elem_type
        for t in g.initializer:
            types[t.name] = t.data_type
    out: dict[str, dict[str, int]] = {}
    for i, node in enumerate(model.graph.node):
        if not has_subgraph(node):
            continue
        counts: dict[str, int] = {}
        for body in subgraphs(node):
            for g, _ in walk_graphs(body):
                deq = {o: n for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
                for n in g.node:
                    if n.op_type not in QUANTIZABLE_OPS:
                        continue
                    src = [deq.get(x) for x in n.input[:2]]
                    if all(src) and len(src) == 2:
                        # uint8 (QuantizeLinear's default) also runs INT8 kernels
                        qt = {types.get(d.input[0], 0) for d in src if d is not None} - {0}
                        qt = {onnx.TensorProto.INT8 if t == onnx.TensorProto.UINT8 else t
                              for t in qt} or {onnx.TensorProto.INT8}
                        kind = type_name(qt.pop()) if len(qt) == 1 else "mixed"
                    else:
                        kind = type_name(types.get(n.input[0], onnx.TensorProto.FLOAT))
                    counts[kind] = counts.get(kind, 0) + 1
        out[node.name or f"{node.op_type}_{i}"] = counts
    return out


def model_transforms(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """The transforms recorded in the model's ``quantkit.transforms`` metadata, summarized.

    One ``{transform, changed, skipped, settings, changed_layers}`` per transform, oldest
    first; unreadable metadata gives one ``{transform: "?", error: ...}`` entry.
    """
    from quantkit.transforms import TRANSFORMS_METADATA_KEY
    from quantkit.transforms.rescue import changed_layers

    raw = next((p.value for p in model.metadata_props if p.key == TRANSFORMS_METADATA_KEY),
               None)
    if raw is None:
        return []
    try:
        reports = json.loads(raw)
        if not isinstance(reports, list) or not all(isinstance(r, dict) and "transform" in r
                                                    for r in reports):
            raise ValueError("expected a JSON list of transform reports")
        return [{"transform": str(r["transform"]), "changed": len(r.get("changed") or []),
                 "skipped": len(r.get("skipped") or []),
                 "settings": r.get("settings") or {}, "changed_layers": changed_layers(r)}
                for r in reports]
    except (ValueError, TypeError) as err:
        return [{"transform": "?", "error": f"unreadable {TRANSFORMS_METADATA_KEY} metadata: "
                                            f"{err}"}]


def _settings(settings: Any) -> str:
    if not isinstance(settings, dict):
        return str(settings)
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in settings.items() if v is not None)


def _print_transforms(transforms: list[dict[str, Any]]) -> None:
    if not transforms:
        return
    click.echo("\ntransforms applied to the FP32 model (quantkit.transforms metadata, in order):")
    for t in transforms:
        if "error" in t:
            click.echo(f"  {t['error']}")
            continue
        line = (f"{t['transform']}: {t['changed']} changed, {t['skipped']} skipped"
                + (f" ({_settings(t['settings'])})" if t["settings"] else ""))
        click.echo(textwrap.fill(line, width=100, initial_indent="  ",
                                 subsequent_indent=" " * 6, break_on_hyphens=False,
                                 break_long_words=False))


def _notes(node: NodeInfo) -> str:
    parts = []
    for s in node.scales:
        if s.kind == "activation":
            parts.append(f"act {s.qtype} " + (f"{s.scale_min:.4g}" if s.channels == 1
                                              and s.scale_min is not None else f"x{s.channels}"))
        else:
            axis = f" axis {s.axis}" if s.axis is not None else ""
            parts.append(f"w {s.qtype} " + ("per-tensor" if s.channels == 1
                                            else f"per-channel[{s.channels}]{axis}"))
    return "; ".join(parts + list(node.notes))


def _print_report(path: Path, report: LintReport, show_all: bool) -> None:
    s = report.summary()
    counts = ", ".join(f"{n} {p}" for p, n in sorted(s["compute_precision"].items()))
    click.echo(f"{path}: opset {s['opset']}, {s['nodes']} nodes ({s['qdq_nodes']} Q/DQ), "
               f"compute ops: {counts or 'none'}")
    shown = [n for n in report.nodes if show_all or n.op_type not in _HIDDEN]
    print_table(["node", "op_type", "precision", "notes"],
                [(n.name, n.op_type, n.precision, _notes(n)) for n in shown], max_width=80)
    hidden = len(report.nodes) - len(shown)
    if hidden:
        click.echo(f"({hidden} Q/DQ and Constant nodes not shown; --all lists them)")
    click.echo("")
    if not report.findings:
        click.echo("no findings: the Q/DQ placement follows TensorRT's rules")
        return
    for f in report.findings:
        where = " ".join(x for x in (f.node or "", f"[{f.tensor}]" if f.tensor else "") if x)
        click.echo(f"{f.severity.upper():7s} {f.code} {where}".rstrip())
        click.echo(textwrap.fill(f.message, width=100, initial_indent=" " * 8,
                                 subsequent_indent=" " * 8, break_on_hyphens=False,
                                 break_long_words=False))
    click.echo(f"\n{s['errors']} error(s), {s['warnings']} warning(s), {s['info']} info")


def _gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def engine_inspector_layers(engine: Path, backend: str | None) -> list[Any] | None:
    """Layer information from TensorRT's engine inspector, or None where it cannot run.

    Needs a GPU and a real TensorRT (``tensorrt``, or ``tensorrt_rtx_bindings`` for engines of
    the tensorrt-rtx backend): deserializing an engine needs a driver
    (docs/tensorrt_rules.md#running-engines).
    ``tensorrt-stubs`` installs an empty ``tensorrt`` namespace package, hence the ``Builder``
    check.
    """
    module = "tensorrt_rtx_bindings" if backend == "tensorrt-rtx" else "tensorrt"
    if not _gpu_present() or importlib.util.find_spec(module) is None:
        return None
    try:
        trt = importlib.import_module(module)
        if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
            return None
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
        if cuda_engine is None:
            return None
        inspector = cuda_engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        layers = info.get("Layers", []) if isinstance(info, dict) else []
        return [x if isinstance(x, dict) else {"Name": str(x)} for x in layers]
    except Exception as err:  # no driver, version mismatch...: the sidecar still stands
        logger.warning("TensorRT's engine inspector could not read %s: %s", engine, err)
        return None


def _inspect_engine(path: Path, as_json: bool) -> None:
    from quantkit.backends.sidecar import precision_counts, read_sidecar, sidecar_path

    is_sidecar = path.suffix.lower() == ".json"
    engine = path.with_name(path.name[:-5]) if is_sidecar else path
    side = path if is_sidecar else sidecar_path(path)
    doc: dict[str, Any] | None = read_sidecar(side) if side.exists() else None
    backend = doc.get("backend") if doc else None
    inspector = engine_inspector_layers(engine, backend) if engine.exists() else None
    if doc is None and inspector is None:
        raise InputError(
            f"{path}: no sidecar {side.name} next to the engine. quantkit inspect shows the "
            "per-layer precision that quantkit build records there; rebuild with 'quantkit "
            f"build MODEL.onnx -o {path}'. Reading the layers from the engine itself needs a "
            "GPU with TensorRT.")
    layers = list(doc.get("layers", [])) if doc else []
    summary = {"layers": len(layers), "precision": precision_counts(doc) if doc else {},
               "disagreements": len(doc.get("disagreements", [])) if doc else 0,
               "engine_inspector": inspector is not None}
    if as_json:
        click.echo(json.dumps({"format": INSPECT_FORMAT, "file": str(path), "kind": "engine",
                               "sidecar": doc, "engine_inspector": inspector,
                               "summary": summary}, indent=2))
        return
    if doc is not None:
        _print_sidecar(side, doc, layers, summary)
    if inspector is None:
        click.echo("\nnote: the engine inspector's per-layer info (TensorRT's "
                   "create_engine_inspector)\nneeds a GPU with TensorRT; shown above is the "
                   "build-time sidecar.")
        return
    click.echo(f"\nTensorRT engine inspector: {len(inspector)} layers")
    print_table(["layer", "type", "precision"],
                [(x.get("Name", "?"), x.get("LayerType", ""), x.get("Precision", ""))
                 for x in inspector], max_width=80)


def _print_sidecar(side: Path, doc: dict[str, Any], layers: list[dict[str, Any]],
                   summary: dict[str, Any]) -> None:
    fields = [("backend", doc.get("backend")), ("version", doc.get("backend_version")),
              ("built", doc.get("created_utc")), ("engine bytes", doc.get("engine_bytes")),
              ("build s", doc.get("build_time_s")), ("model", doc.get("model"))]
    click.echo(f"{side}: " + ", ".join(f"{k} {v}" for k, v in fields if v is not None))
    for name, rng in (doc.get("shapes") or {}).items():
        if isinstance(rng, dict):
            click.echo(f"  shape {name}: " + " ".join(f"{k}={'x'.join(map(str, v))}"
                                                     for k, v in rng.items()))
    extra = [k for k in ("engine_precision", "plan_precision") if any(k in x for x in layers)]
    print_table(["layer", "type", "precision", *[k.split("_")[0] for k in extra], "outputs"],
                [(x.get("name", "?"), x.get("type", ""), x.get("precision", ""),
                  *[x.get(k, "") for k in extra], ",".join(x.get("output_dtypes", [])))
                 for x in layers], max_width=80)
    counts = ", ".join(f"{n} {p}" for p, n in summary["precision"].items())
    click.echo(f"\n{len(layers)} layers ({counts or 'no compute layers'})")
    for d in doc.get("disagreements", []):
        click.echo(f"disagreement: {d.get('message', d)}")
