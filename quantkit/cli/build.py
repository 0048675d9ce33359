"""``quantkit build``: parse an ONNX model and build a TensorRT / TensorRT-RTX engine."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from quantkit._log import progress_enabled
from quantkit.cli.options import Bounded
from quantkit.cli.render import print_table

if TYPE_CHECKING:
    from quantkit.backends import BuildResult

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _status() -> Iterator[Callable[[str], None]]:
    """A one-line spinner on stderr (TTY, not --quiet); otherwise INFO log lines."""
    if not progress_enabled():
        yield lambda msg: logger.info("%s", msg)
        return
    from rich.console import Console

    with Console(stderr=True).status("starting") as status:
        yield lambda msg: status.update(msg)


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if nbytes < 1024 or unit == "MiB":
            return f"{nbytes} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    return f"{nbytes:.1f} GiB"


def _render(doc: dict[str, Any], engine: Path, sidecar: Path) -> None:
    from quantkit.backends.sidecar import precision_counts

    layers = [x for x in doc["layers"]
              if "onnx_node" in x and x["type"] not in ("QUANTIZE", "DEQUANTIZE")]
    has_plan = any("plan_precision" in x for x in layers)
    has_engine = any("engine_precision" in x for x in layers)
    headers = ["layer", "type", "precision"] + (["plan"] if has_plan else []) + (
        ["engine"] if has_engine else []) + ["outputs"]
    flagged = {(d.get("layer"), d.get("kind")) for d in doc.get("disagreements", [])}
    rows = []
    for x in layers:
        row = [x["name"], x["type"].lower(), x["precision"]]
        for key, kind, shown in (("plan_precision", "plan", has_plan),
                                 ("engine_precision", "engine", has_engine)):
            if shown:
                value = x.get(key, "")
                # mark what the sidecar lists as a disagreement (a helper layer such as a
                # Gemm's bias add may differ from its node's plan without being one)
                hit = (x["name"], kind) in flagged or (x.get("onnx_node"), kind) in flagged
                row.append(f"{value} (!)" if value and value != x["precision"] and hit
                           else value)
        rows.append(row + [",".join(x["output_dtypes"])])
    print_table(headers, rows)
    counts = ", ".join(f"{n} {p}" for p, n in precision_counts(doc).items())
    click.echo(f"\nwrote {engine} ({_size(doc['engine_bytes'])}) and {sidecar.name}: "
               f"{doc['backend']} {doc['backend_version']}, built in {doc['build_time_s']:.2f} s; "
               f"layers: {counts or 'none'}")
    for item in doc["disagreements"]:
        click.echo(f"warning: {item['message']}", err=True)


@click.command("build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Engine to write; the sidecar JSON goes next to it as OUTPUT.json.")
@click.option("--backend", default=None, metavar="tensorrt|tensorrt-rtx",
              help="Builder to use (default: tensorrt if installed, else tensorrt-rtx).")
@click.option("--shapes", default=None, metavar="NAME:DIMS[,...]",
              help="Opt shape per dynamic input, e.g. x:8x3x224x224.")
@click.option("--min-shapes", default=None, metavar="NAME:DIMS[,...]",
              help="Smallest shape per input (default: the --shapes value).")
@click.option("--max-shapes", default=None, metavar="NAME:DIMS[,...]",
              help="Largest shape per input (default: the --shapes value).")
@click.option("--workspace", type=Bounded(int, 1), default=None, metavar="MiB",
              help="Builder workspace memory limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Timing cache to reuse and update (TensorRT; ignored by TensorRT-RTX).")
@click.option("--opt-level", type=int, default=None, metavar="0-5",
              help="Builder optimisation level (default 3; 5 tunes longest).")
@click.option("--compute-capability", "compute_capabilities", multiple=True,
              metavar="SM89[,SM120]",
              help="TensorRT-RTX target GPUs (default: portable across its supported GPUs).")
@click.option("--no-engine-log", is_flag=True,
              help="Do not read per-kernel precision from the builder's verbose log.")
@click.option("--estimate-gpu", "estimate_gpus", multiple=True, metavar="NAME[,NAME]",
              help="Also estimate the engine's TensorRT latency on these GPUs (quantkit estimate "
                   "--list-gpus); stored under 'estimates' in the sidecar.")
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar JSON to stdout.")
def build_cmd(model: str, output: str, backend: str | None, shapes: str | None,
              min_shapes: str | None, max_shapes: str | None, workspace: int | None,
              timing_cache: str | None, opt_level: int | None,
              compute_capabilities: tuple[str, ...], no_engine_log: bool,
              estimate_gpus: tuple[str, ...], as_json: bool) -> None:
    """Build an engine from MODEL and record each layer's precision next to it.

    Writes OUTPUT and OUTPUT.json (backend, version, build time, shapes, per-layer precision of
    the parsed network, the engine's per-kernel precision where the builder reports it, and any
    disagreement with quantkit's precision plan). Nothing is written unless the build succeeds.

    \b
    Examples:
      quantkit build model.qdq.onnx -o model.engine
      quantkit build model.qdq.onnx --backend tensorrt-rtx -o model.engine \\
          --shapes images:8x3x224x224 --min-shapes images:1x3x224x224 \\
          --max-shapes images:32x3x224x224
    """
    from quantkit.backends import BuildOptions, default_backend_name, get_backend, parse_shapes

    options = BuildOptions(
        shapes=parse_shapes(shapes),
        min_shapes=parse_shapes(min_shapes, "min_shapes"),
        max_shapes=parse_shapes(max_shapes, "max_shapes"),
        workspace_mib=workspace, opt_level=opt_level,
        timing_cache=Path(timing_cache) if timing_cache else None,
        compute_capabilities=_split(compute_capabilities), engine_log=not no_engine_log,
    )
    gpus = _split(estimate_gpus)
    if gpus:  # unknown names and precisions a GPU lacks are refused before anything is built
        from quantkit.latency import check_available, check_model_precisions, get_gpu

        for name in gpus:
            check_model_precisions(model, get_gpu(name))
        check_available()  # the estimates build with TensorRT-RTX, whatever builds the engine
    builder = get_backend(backend or default_backend_name())
    with _status() as status:
        result = builder.build(model, output, options, status=status)
        if gpus:
            status(f"estimating the latency on {', '.join(gpus)}")
            _add_estimates(result, model, gpus)
    if as_json:
        click.echo(json.dumps(result.sidecar, indent=2))
        for item in result.disagreements:
            click.echo(f"warning: {item['message']}", err=True)
        return
    _render(result.sidecar, result.engine_path, result.sidecar_path)
    for est in result.sidecar.get("estimates", []):
        click.echo(f"estimated TensorRT latency on {est['gpu']}: {est['latency_ms']:.4g} ms "
                   f"({est['label']}; quantkit estimate shows the kernels)")


def _add_estimates(result: BuildResult, model: str, gpus: tuple[str, ...]) -> None:
    """Estimate the engine on each GPU and rewrite the sidecar with ``estimates``.

    If an estimate fails, the engine and its sidecar are removed: nothing half-done is left.
    """
    from quantkit._io import write_text_atomic
    from quantkit.latency import estimate_build

    try:
        estimates = [estimate_build(result.sidecar, model, name).to_json() for name in gpus]
        result.sidecar["estimates"] = estimates
        write_text_atomic(result.sidecar_path, json.dumps(result.sidecar, indent=2) + "\n")
    except BaseException:
        for path in (result.engine_path, result.sidecar_path):
            with contextlib.suppress(OSError):
                Path(path).unlink()
        raise
