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
    report = _lint(path, model)
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
