"""The one implementation of building (and loading) engines with TensorRT 10/11 and TensorRT-RTX.

TensorRT and TensorRT-RTX share the builder API quantkit uses
(docs/tensorrt_rules.md#shared-builder-api: ``Builder``, ``create_network``,
``OnnxParser.parse_from_file`` + ``get_error``, optimisation profiles,
``builder_optimization_level``, ``build_serialized_network``,
``Runtime.deserialize_cuda_engine``), so :class:`TrtBackendBase` holds all of it and the two
backends (:mod:`quantkit.backends.tensorrt`, :mod:`quantkit.backends.tensorrt_rtx`) only name
their module and differ in a few switches:

* network creation: TensorRT 10 needs ``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
  TensorRT 11 and TensorRT-RTX are always strongly typed (``create_network(0)``).
* timing cache: TensorRT loads/saves it; in TensorRT-RTX the timing-cache API is a deprecated
  no-op (since TensorRT-RTX 1.2), so ``--timing-cache`` is reported as unsupported there.
* compute capability: TensorRT-RTX only. The default (none set) builds a portable engine on a
  machine without a GPU; ``CURRENT`` needs a GPU and driver
  (docs/tensorrt_rules.md#building-on-a-cpu-only-machine).

The library module is imported on first use, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantkit import __version__
from quantkit._io import atomic_write, check_output_path, write_bytes_atomic, write_text_atomic
from quantkit.backends._trt_logging import (
    _NO_DRIVER,
    capturing,
    defer_sigint,
    error_lines,
    logger_for,
)
from quantkit.backends.base import (
    BuildOptions,
    BuildResult,
    ShapeRange,
    StatusCallback,
    resolve_profile,
)
from quantkit.backends.engine_log import parse_engine_log
from quantkit.backends.sidecar import (
    SIDECAR_FORMAT,
    as_shape,
    compare,
    file_sha256,
    io_entry,
    network_layers,
    read_plan,
    sidecar_path,
)
from quantkit.errors import InputError, MissingExtraError, PipelineError, QuantkitError
from quantkit.qdq.fp8 import check_fp8_targets

if TYPE_CHECKING:
    import tensorrt as trt

    from quantkit.backends.runner import TrtRunner

logger = logging.getLogger(__name__)

VERBOSE = 4  # ILogger.Severity: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose


class TrtBackendBase:
    """Build and load engines with one TensorRT flavour. Subclasses set the class attributes."""

    name = ""
    module_name = ""
    extra = ""
    display_name = ""
    #: TensorRT-RTX: strongly typed only, portable AOT builds without a GPU
    rtx = False

    def __init__(self) -> None:
        self._module: types.ModuleType | None = None

    # -- import --------------------------------------------------------------------------------

    #: appended to the "not installed" message when only a namespace package (no
    #: ``__init__.py``, e.g. type stubs) answers to the module name
    namespace_hint = ""

    def _missing(self, namespace: bool = False) -> MissingExtraError:
        err = MissingExtraError(f"The {self.display_name} backend (backend={self.name!r})",
                                self.extra, self.module_name)
        if namespace and self.namespace_hint:
            err.args = (f"{err} {self.namespace_hint}",)
        return err

    def check_module(self, module: types.ModuleType) -> None:
        """Reject an importable module that is not the real library (overridden)."""

    def import_module(self) -> types.ModuleType:
        """Import the library.

        Raises:
            MissingExtraError: not installed (exit 2, names the extra to install).
            PipelineError: installed but broken.
        """
        if self._module is not None:
            return self._module
        if self.module_name not in sys.modules:
            # Look before importing: a namespace package (spec.origin None) is not the library,
            # and importing it would leave a bogus module in sys.modules.
            try:
                spec = importlib.util.find_spec(self.module_name)
            except (ImportError, ValueError):
                spec = None
            if spec is None or spec.origin is None:
                raise self._missing(namespace=spec is not None)
        try:
            module = importlib.import_module(self.module_name)
        except ImportError as err:
            if isinstance(err, ModuleNotFoundError) and err.name in (self.module_name, None):
                raise self._missing() from None
            raise PipelineError(f"{self.module_name} is installed but failed to import: {err}. "
                                f"Reinstall it: pip install --force-reinstall "
                                f"'quantkit[{self.extra}]'") from err
        self.check_module(module)
        self._module = module
        return module

    def available(self) -> bool:
        """Whether the library imports (and is the real one)."""
        try:
            self.import_module()
        except QuantkitError as err:
            logger.debug("%s backend unavailable: %s", self.name, err)
            return False
        return True

    def version(self) -> str | None:
        """The library's ``__version__``, or None when it is not installed."""
        if not self.available():
            return None
        return str(getattr(self.import_module(), "__version__", "unknown"))

    def major_version(self) -> int:
        """The library's major version (0 when unknown)."""
        head = (self.version() or "0").split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    # -- differences between TensorRT 10, 11 and TensorRT-RTX ------------------------------------

    def network_flags(self, trt_mod: types.ModuleType) -> int:
        """Flags for ``create_network``: strongly typed wherever that is a choice."""
        if self.rtx or self.major_version() >= 11:
            return 0  # always strongly typed (docs/tensorrt_rules.md#strongly-typed-networks)
        flag = getattr(trt_mod.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 0 if flag is None else 1 << int(flag)

    @property
    def supports_timing_cache(self) -> bool:
        """TensorRT-RTX's timing-cache API is a deprecated no-op."""
        return not self.rtx

    def describe(self) -> dict[str, Any]:
        """Name, module, install command, availability, version and capabilities."""
        ok = self.available()
        return {
            "name": self.name, "display_name": self.display_name, "module": self.module_name,
            "install": f"pip install 'quantkit[{self.extra}]'", "available": ok,
            "version": self.version() if ok else None,
            "strongly_typed_only": self.rtx or (ok and self.major_version() >= 11),
            "timing_cache": self.supports_timing_cache,
            "compute_capability_option": self.rtx,
            "builds_without_gpu": self.rtx,
        }

    def runner(self, engine: str | os.PathLike[str], **kwargs: Any) -> TrtRunner:
        """Load ``engine`` for inference (:class:`quantkit.backends.runner.TrtRunner`)."""
        from quantkit.backends.runner import TrtRunner

        return TrtRunner(self.import_module(), engine, backend=self.name, **kwargs)

    # -- build ---------------------------------------------------------------------------------

    def build(self, model: str | os.PathLike[str], output: str | os.PathLike[str],
              options: BuildOptions | None = None, *,
              status: StatusCallback | None = None) -> BuildResult:
        """Parse ``model``, build an engine, write ``output`` and ``output + ".json"``.

        Both files are written only after a successful build, each atomically. The timing
        cache (full TensorRT) is saved only on success as well.

        Raises:
            InputError: bad paths or options, shapes that do not fit the inputs, or a model the
                ONNX parser rejects (the message lists the parser's errors with node names).
            MissingExtraError: the library is not installed.
            PipelineError: the builder failed (the message holds its error lines).
        """
        options = options or BuildOptions()
        model_path, out, side = self._check_paths(model, output, options)
        # an FP8 model for a target without FP8 is refused before the (long) build
        check_fp8_targets(model_path, options.compute_capabilities)
        trt_mod = self.import_module()
        ccs = self._compute_capabilities(trt_mod, options)
        say = status or (lambda _msg: None)
        log = logger_for(trt_mod)
        with defer_sigint(), capturing(log) as sink:
            say(f"parsing {model_path.name} with {self.display_name} {self.version()}")
            builder = self._builder(trt_mod, log)
            flags = self.network_flags(trt_mod)
            network = builder.create_network(flags)
            parser = trt_mod.OnnxParser(network, log)
            t0 = time.perf_counter()
            if not parser.parse_from_file(str(model_path)):
                raise InputError(self._parser_message(parser, model_path, sink))
            parse_s = time.perf_counter() - t0
            inputs = [network.get_input(i) for i in range(network.num_inputs)]
            ranges = resolve_profile({t.name: as_shape(t.shape) for t in inputs}, options)
            config = builder.create_builder_config()
            builder_info = self._configure(trt_mod, builder, config, inputs, ranges, options, ccs,
                                           flags, sink)
            layers, constants = network_layers(network)
            say(f"building {out.name} with {self.display_name} {self.version()}")
            t1 = time.perf_counter()
            try:
                serialized = builder.build_serialized_network(network, config)
            except Exception as err:  # pybind11 turns C++ failures into RuntimeError etc.
                raise PipelineError(f"{self.display_name} failed to build {model_path}: {err}. "
                                    + "; ".join(error_lines(sink))) from err
            build_s = time.perf_counter() - t1
            if serialized is None:
                raise PipelineError(self._build_message(model_path, sink, ccs))
            if not sink:
                logger.warning("TensorRT logged nothing to quantkit: another logger was "
                               "registered first in this process, so the engine's per-kernel "
                               "view cannot be recorded")
            verbose = [msg for sev, msg in sink if sev == VERBOSE]
            cache_data = self._timing_cache_bytes(config, options)
        kernels = parse_engine_log(verbose) if options.engine_log else None
        plan, plan_info = read_plan(model_path)
        disagreements, plan_stats = compare(layers, kernels, plan)
        view = memoryview(serialized)
        doc = {
            "format": SIDECAR_FORMAT, "backend": self.name, "backend_version": self.version(),
            "quantkit_version": __version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_time_s": round(build_s, 3), "parse_time_s": round(parse_s, 3),
            "engine_bytes": view.nbytes, "model": str(model_path),
            "model_sha256": file_sha256(model_path),
            "inputs": [io_entry(t) for t in inputs],
            "outputs": [io_entry(network.get_output(i)) for i in range(network.num_outputs)],
            "shapes": {name: r.to_json() for name, r in ranges.items()},
            "builder": builder_info, "plan": {**plan_info, **plan_stats},
            "layers": layers, "constant_layers": constants,
            "engine_log": {"parsed": kernels is not None,
                           "kernels": len(kernels) if kernels else 0,
                           "source": "builder VERBOSE log after 'Layers:' (not a stable API)"},
            "engine_layers": kernels or [], "disagreements": disagreements,
        }
        text = json.dumps(doc, indent=2) + "\n"
        if cache_data is not None and options.timing_cache is not None:
            write_bytes_atomic(options.timing_cache, cache_data)
        with atomic_write(out, "wb") as fh:
            fh.write(view)
        try:
            write_text_atomic(side, text)
        except BaseException:
            with contextlib.suppress(OSError):
                out.unlink()  # never leave an engine without its sidecar
            raise
        logger.info("built %s (%d bytes) in %.2f s", out, view.nbytes, build_s)
        return BuildResult(out, side, doc)

    def _check_paths(self, model: str | os.PathLike[str], output: str | os.PathLike[str],
                     options: BuildOptions) -> tuple[Path, Path, Path]:
        model_path = Path(model)
        if not model_path.is_file():
            what = "is a folder" if model_path.is_dir() else "no such file"
            raise InputError(f"{model_path}: {what}; give the path of an .onnx model.")
        out = check_output_path(output, model_path, options.timing_cache)
        side = check_output_path(sidecar_path(out), model_path, options.timing_cache)
        outputs = {out.resolve(), side.resolve()}
        if model_path.resolve() in outputs:
            raise InputError(f"-o {out}: would overwrite the input model {model_path}; quantkit "
                             "never overwrites its inputs. Choose another output path.")
        cache = options.timing_cache
        if cache is not None:
            if cache.resolve() in outputs | {model_path.resolve()}:
                raise InputError(f"timing_cache={str(cache)!r}: is the model, the engine or its "
                                 "sidecar; give a separate file.")
            if cache.is_dir():
                raise InputError(f"timing_cache={str(cache)!r}: is a folder; give a file path.")
            check_output_path(cache, model_path, flag="timing_cache=")
        return model_path, out, side

    def _compute_capabilities(self, trt_mod: types.ModuleType, options: BuildOptions
                              ) -> list[Any]:
        if not options.compute_capabilities:
            return []
        enum = getattr(trt_mod, "ComputeCapability", None)
        if not self.rtx or enum is None:
            raise InputError(f"compute_capabilities= is a TensorRT-RTX option; {self.display_name} "
                             "builds for the GPU it runs on. Leave the option out.")
        members = {k: v for k, v in enum.__members__.items() if k != "NONE"}
        out = []
        for text in options.compute_capabilities:
            key = text.strip().upper().replace("_", "").replace(".", "")
            key = key if key.startswith("SM") or key == "CURRENT" else f"SM{key}"
            if key not in members:
                raise InputError(f"compute_capabilities={text}: {self.display_name} "
                                 f"{self.version()} knows {', '.join(members)} (8.9 = SM89).")
            out.append(members[key])
        return out

    def _builder(self, trt_mod: types.ModuleType, log: Any) -> trt.Builder:
        try:
            builder: trt.Builder | None = trt_mod.Builder(log)
        except Exception as err:
            hint = ("" if self.rtx else " Full TensorRT needs an NVIDIA GPU and driver to build; "
                    "on a machine without one use backend='tensorrt-rtx'.")
            raise PipelineError(f"{self.display_name} could not create a builder: {err}.{hint}"
                                ) from err
        if builder is None:
            raise PipelineError(f"{self.display_name} could not create a builder.")
        return builder

    def _configure(self, trt_mod: types.ModuleType, builder: trt.Builder,
                   config: trt.IBuilderConfig, inputs: list[trt.ITensor],
                   ranges: dict[str, ShapeRange], options: BuildOptions, ccs: list[Any],
                   flags: int, sink: list[tuple[int, str]]) -> dict[str, Any]:
        """Apply the options to ``config``; return what the sidecar records under ``builder``."""
        if options.engine_log:
            config.profiling_verbosity = trt_mod.ProfilingVerbosity.DETAILED
        pool = trt_mod.MemoryPoolType.WORKSPACE
        if options.workspace_mib is not None:
            config.set_memory_pool_limit(pool, int(options.workspace_mib) << 20)
        if options.opt_level is not None:
            config.builder_optimization_level = int(options.opt_level)
        if ccs:
            rtx_config: Any = config  # TensorRT-RTX API, absent from TensorRT's stubs
            rtx_config.num_compute_capabilities = len(ccs)
            for i, cc in enumerate(ccs):
                rtx_config.set_compute_capability(cc, i)
        dynamic = [t for t in inputs if any(d < 0 for d in as_shape(t.shape))]
        for t in dynamic:
            if t.is_shape_tensor:
                raise InputError(f"model input '{t.name}' is a shape tensor; quantkit build does "
                                 "not support shape-tensor inputs yet.")
        if dynamic:
            profile = builder.create_optimization_profile()
            for t in dynamic:
                r = ranges[t.name]
                profile.set_shape(t.name, trt_mod.Dims(list(r.min)), trt_mod.Dims(list(r.opt)),
                                  trt_mod.Dims(list(r.max)))
            if config.add_optimization_profile(profile) < 0:
                raise InputError("the optimisation profile was rejected: "
                                 + "; ".join(error_lines(sink)))
        info: dict[str, Any] = {
            "workspace_mib": config.get_memory_pool_limit(pool) >> 20,
            "opt_level": int(config.builder_optimization_level),
            "network_flags": flags, "strongly_typed": True,
            "profiling_verbosity": "DETAILED" if options.engine_log else "default",
            "compute_capabilities": [c.name for c in ccs] if ccs else "default",
            "timing_cache": self._load_timing_cache(config, options),
        }
        if not self.rtx:
            info.pop("compute_capabilities")
        return info

    def _load_timing_cache(self, config: trt.IBuilderConfig, options: BuildOptions
                           ) -> dict[str, Any] | None:
        path = options.timing_cache
        if path is None:
            return None
        if not self.supports_timing_cache:
            logger.warning("timing_cache=%r: TensorRT-RTX does not use timing caches (its "
                           "timing-cache API is a deprecated no-op since TensorRT-RTX 1.2); the "
                           "file is neither read nor written", str(path))
            return {"path": str(path), "status": "unsupported by TensorRT-RTX"}
        try:
            data = path.read_bytes() if path.exists() else b""
        except OSError as err:
            raise InputError(f"timing_cache={str(path)!r}: cannot be read: {err}") from err
        cache = config.create_timing_cache(data)
        status = "loaded" if data else "created"
        if cache is None or not config.set_timing_cache(cache, False):
            logger.warning("timing_cache=%r: does not match this GPU or TensorRT version; a "
                           "fresh cache is used and replaces it after the build", str(path))
            config.set_timing_cache(config.create_timing_cache(b""), False)
            status = "replaced (mismatch)"
        return {"path": str(path), "status": status, "bytes_loaded": len(data)}

    def _timing_cache_bytes(self, config: trt.IBuilderConfig, options: BuildOptions
                            ) -> bytes | None:
        if options.timing_cache is None or not self.supports_timing_cache:
            return None
        cache = config.get_timing_cache()
        return None if cache is None else bytes(memoryview(cache.serialize()))

    def _parser_message(self, parser: trt.OnnxParser, model: Path,
                        sink: list[tuple[int, str]]) -> str:
        count = int(parser.num_errors)
        items = []
        for i in range(min(count, 10)):
            err = parser.get_error(i)
            node = _call(err, "node_name")
            op = _call(err, "node_operator")
            index = _call(err, "node")
            where = (f"node '{node}' ({op})" if node else
                     f"node #{index} ({op})" if isinstance(index, int) and index >= 0 else "model")
            lines = [" ".join(s.split()) for s in str(_call(err, "desc")).splitlines()]
            lines = [s for s in lines if s and _NO_DRIVER not in s] or lines
            items.append(f"{where}: {' / '.join(lines)}")
        if not items:
            items = error_lines(sink) or ["no details were given"]
        more = f" ({count - 10} more not shown)" if count > 10 else ""
        return (f"{model}: the {self.display_name} {self.version()} ONNX parser rejected the "
                f"model{more}: " + "; ".join(items) + ". Fix these nodes (TensorRT's Q/DQ rules: "
                "symmetric INT8, zero point 0, no quantized bias) and build again.")

    def _build_message(self, model: Path, sink: list[tuple[int, str]], ccs: list[Any]) -> str:
        lines = error_lines(sink)
        text = "; ".join(lines) if lines else "the builder logged no error (re-run with --debug)"
        hint = ""
        if any(getattr(c, "name", "") == "CURRENT" for c in ccs) and any(
                _NO_DRIVER in s for s in lines):
            hint = (" compute_capabilities=CURRENT needs a GPU and driver; name the target GPU "
                    "(e.g. SM89) or leave the option out for a portable engine.")
        if any("dimensions with this name" in s for s in lines):
            hint += _shared_dim_names(model)
        flow = _control_flow_nodes(model) if any("Internal Error" in s for s in lines) else []
        if flow:
            shown = ", ".join(f"'{n}'" for n in flow[:3]) + (" ..." if len(flow) > 3 else "")
            hint += (f" The model has control flow ({len(flow)} If/Loop/Scan node(s): {shown}); "
                     f"{self.display_name}'s builder fails on some conditionals with an internal "
                     "assertion, in FP32 as well (Silero VAD's opset-15 model, for one): a "
                     "limitation of the builder, not of the quantized model. Build the FP32 model "
                     "to confirm; use a variant of the model without those nodes, or another "
                     "TensorRT backend.")
        return f"{self.display_name} could not build an engine from {model}: {text}.{hint}"


def _shared_dim_names(model: Path) -> str:
    """A hint naming the inputs whose dynamic dimensions share one symbolic name."""
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # the message is a hint only
        return ""
    shared = []
    for vi in proto.graph.input:
        names = [d.dim_param for d in vi.type.tensor_type.shape.dim]
        for name in dict.fromkeys(n for n in names if n and names.count(n) > 1):
            axes = [str(i) for i, n in enumerate(names) if n == name]
            shared.append(f"input '{vi.name}' names dimensions {' and '.join(axes)} '{name}'")
    if not shared:
        return ""
    return (" " + "; ".join(shared) + ": TensorRT takes dimensions of one name as one size, so "
            "shapes that give them different sizes contradict the model. Give those "
            "dimensions distinct names in the model (their dim_param), or equal sizes.")


def _control_flow_nodes(model: Path) -> list[str]:
    """Names of the main graph's If/Loop/Scan nodes (empty when the file cannot be read)."""
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # the message is a hint only; never fail while explaining a failure
        return []
    return [n.name or n.op_type for n in proto.graph.node if n.op_type in ("If", "Loop", "Scan")]


def _call(obj: Any, method: str) -> Any:
    """``obj.method()`` if it exists (ParserError grew methods over TensorRT versions)."""
    fn = getattr(obj, method, None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # a missing detail only shortens the message
        return None
