"""Recipes: a model, its data, a metric and the precision configurations to compare.

```yaml
name: demo-cnn
model: demo_cnn.onnx                # paths are relative to the recipe file
metric: top1                        # a registered metric; without labels: FP32 agreement
data:
  calibration: {source: calib.npy, max_samples: 256, batch_size: 32}
  evaluation: {source: val.npy, labels: val_labels.npy, batch_size: 32}
calibration: {method: auto}         # default method of int8 configs
configs:
  - {name: fp32, precision: fp32}
  - {name: fp16, precision: fp16}
  - {name: int8-entropy, precision: int8, method: entropy}
  - {name: int8-minmax, precision: int8, method: minmax}
  - {name: fp8, precision: fp8, method: minmax}   # FP8 E4M3 (Ada/Hopper/Blackwell), docs/fp8.md
  - name: mixed
    precision: {default: int8, default_float: fp16,
                overrides: [{op_type: Softmax, precision: fp32}]}
  - {name: auto, autotune: {max_accuracy_drop: 0.5}}
  - {name: int8-bc, precision: int8, rescue: [bias_correction]}   # docs/transforms.md
  - {name: int8-cle-sq, precision: int8, rescue: ["cle", "smoothquant:0.8"]}
build: {backend: tensorrt-rtx, shapes: "input:1x1x28x28"}   # optional
latency: {iterations: 30, warmup: 5, repeats: 5, batch_size: 32,
          estimate_gpus: [H100-SXM, L4]}   # estimated TensorRT latency; the first is primary
report: {tolerance: 0.5}            # headline: fastest INT8 config within 0.5 points of the best
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantkit._yaml import load_yaml
from quantkit.calibrators import DEFAULT_METHOD, available_methods, get_calibrator_class
from quantkit.errors import InputError
from quantkit.transforms.precision_file import PrecisionFile
from quantkit.transforms.registry import REGISTRY, parse_rescue


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """One data set: a ``--data`` source and how to read it."""

    source: str
    labels: str | None = None
    batch_size: int = Field(32, ge=1)
    max_samples: int | None = Field(None, ge=1)
    seed: int | None = None
    preprocess: dict[str, Any] | None = None
    columns: dict[str, str] | None = None
    streaming: bool = False


class DataSets(_Strict):
    """Calibration and evaluation sets (evaluation defaults to the calibration set)."""

    calibration: DataSpec
    evaluation: DataSpec | None = None


def _known_method(value: str | None) -> str | None:
    """A registered calibration method (built-in or entry-point plugin), else a short error."""
    if value is None:
        return value
    try:
        get_calibrator_class(value)
    except InputError:
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise ValueError(f"unknown calibration method {shown!r}; choose one of: "
                         f"{', '.join(available_methods())}") from None
    return value


class CalibrationSpec(_Strict):
    """Default calibration settings."""

    method: str = DEFAULT_METHOD
    percentile: float | None = Field(None, gt=0, le=100)

    _method = field_validator("method")(_known_method)


class AutotuneSpec(_Strict):
    """Accuracy target for ``auto`` configs."""

    max_accuracy_drop: float = Field(0.5, ge=0)
    max_evaluations: int = Field(200, ge=1)
    #: the deployment GPU (``quantkit estimate --list-gpus``) or compute capability: when it
    #: has FP8, layers that fail in INT8 try FP8 before float (:mod:`quantkit.sweep.tiers`)
    target_gpu: str | None = None
    compute_capability: str | None = None

    @model_validator(mode="after")
    def _target(self) -> AutotuneSpec:
        from quantkit.sweep.tiers import fp8_target

        try:
            fp8_target(self.target_gpu, self.compute_capability)
        except InputError as err:
            raise ValueError(str(err).rstrip(".")) from None
        return self


class ConfigSpec(_Strict):
    """One precision configuration."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    precision: Literal["fp32", "fp16", "int8", "fp8"] | PrecisionFile | None = None
    precision_file: str | None = None
    method: str | None = None
    percentile: float | None = Field(None, gt=0, le=100)
    fp16: bool = False
    autotune: AutotuneSpec | None = None

    _method = field_validator("method")(_known_method)
    #: transforms applied to the FP32 model before quantizing (spec strings of
    #: :func:`quantkit.transforms.registry.parse_rescue`: ``cle``, ``high-bias``,
    #: ``smoothquant[:ALPHA]``, ``bias-correction``; see docs/transforms.md), recorded in
    #: results.csv and the report
    rescue: list[str] = Field(default_factory=list)
    #: SmoothQuant's migration strength when the ``rescue`` entry gives none
    alpha: float | None = Field(None, gt=0, le=1)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> Any:
        if isinstance(value, dict):
            try:
                return PrecisionFile.model_validate(value)
            except ValidationError as err:
                first = err.errors()[0]
                got = "" if first["type"] == "missing" else f" (got {first.get('input')!r})"
                raise ValueError(f"{_loc(first['loc'])}: {first['msg']}{got}") from None
        if isinstance(value, str) and value not in ("fp32", "fp16", "int8", "fp8"):
            raise ValueError(f"{value!r} is not one of fp32, fp16, int8, fp8 (or a precision "
                             "mapping)")
        return value

    @field_validator("rescue", mode="before")
    @classmethod
    def _rescue(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("a list of transform names, e.g. [cle, \"smoothquant:0.8\", "
                             "bias-correction]")
        for item in (p for v in value for p in v.split(",")):
            head = item.partition(":")[0].strip()
            if head and REGISTRY.lookup(head) is None:
                raise ValueError(REGISTRY.not_one_of(head))
        try:
            parse_rescue(value, where="rescue")
        except InputError as err:
            raise ValueError(str(err).removeprefix("rescue: ").rstrip(".")) from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ConfigSpec:
        given = [k for k in ("precision", "precision_file", "autotune")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of precision / precision_file / autotune, not "
                             f"{' and '.join(given)}")
        if not given:
            raise ValueError("give one of precision (fp32 | fp16 | int8 | fp8 | a mapping), "
                             "precision_file or autotune")
        if self.rescue and self.kind in ("fp32", "fp16", "fp8"):
            raise ValueError("rescue transforms apply to int8 / mixed / autotune configs only")
        return self

    @property
    def kind(self) -> str:
        """``fp32``, ``fp16``, ``fp8``, ``auto`` or ``int8`` (any other quantized plan)."""
        if self.autotune is not None:
            return "auto"
        if isinstance(self.precision, str):
            return self.precision
        return "int8"


class BuildSpec(_Strict):
    """Engine builds (optional; skipped with a note when the backend is not installed)."""

    backend: Literal["tensorrt", "tensorrt-rtx"] = "tensorrt-rtx"
    shapes: str | None = None
    min_shapes: str | None = None
    max_shapes: str | None = None
    opt_level: int | None = Field(None, ge=0, le=5)


class LatencySpec(_Strict):
    """Latency settings: CPU timing, estimates for named GPUs, the feed's batch size.

    Every source (GPU measurement, estimate, ONNX Runtime on the CPU) times the same feed: the
    first evaluation batch cut to ``batch_size`` samples. ``repeats`` rounds of ``iterations``
    timed runs each give the spread of the median; ``estimate_gpus`` names GPUs of the latency
    model (``quantkit estimate --list-gpus``), the first being the report's latency target.
    """

    iterations: int = Field(30, ge=0)
    warmup: int = Field(5, ge=0)
    batch_size: int | None = Field(None, ge=1)
    repeats: int = Field(5, ge=1)
    estimate_gpus: tuple[str, ...] = ()

    @field_validator("estimate_gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("a list of GPU names, e.g. [H100-SXM, L4] (quantkit estimate "
                             "--list-gpus lists them)")
        from quantkit.sweep.latency import check_gpus

        try:
            names = check_gpus(value, where="estimate_gpus")
        except InputError as err:
            raise ValueError(str(err).removeprefix("estimate_gpus: ").rstrip(".")) from None
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{', '.join(dup)} appears more than once")
        return tuple(names)


class ReportSpec(_Strict):
    """How the report picks its headline config.

    The headline is the fastest config with INT8 layers (by the primary latency) among the
    configs whose metric is within ``tolerance`` metric points of the best config's.
    """

    tolerance: float = Field(0.5, ge=0)


class Recipe(_Strict):
    """A validated recipe; paths are resolved relative to the recipe file."""

    name: str = "recipe"
    model: str
    #: task metric: a registered name, ``NAME:KEY=VALUE,...``, or a mapping ``{name: ...}`` /
    #: ``{plugin: FILE.py:CLASS}`` with the metric's options (docs/metrics.md)
    metric: str | dict[str, Any] | None = None
    #: the model output the metric and the headline agreement score (default: the first)
    output: str | None = None
    data: DataSets
    calibration: CalibrationSpec = CalibrationSpec()
    configs: tuple[ConfigSpec, ...]
    build: BuildSpec | None = None
    latency: LatencySpec = LatencySpec()
    report: ReportSpec = ReportSpec()
    base_dir: str = "."

    @model_validator(mode="before")
    @classmethod
    def _metric_plugin_path(cls, doc: Any) -> Any:
        """A plugin file named by ``metric`` is relative to the recipe's folder."""
        if not isinstance(doc, dict) or doc.get("metric") is None:
            return doc
        from quantkit.evaluate.metrics import parse_metric

        try:
            spec = parse_metric(doc["metric"])
        except InputError as err:
            raise ValueError(str(err).removeprefix("metric: ").rstrip(".")) from None
        if spec.plugin is None:
            return doc
        path, _, cls_name = spec.plugin.partition(":")
        full = Path(path).expanduser()
        if not full.is_absolute():
            full = Path(str(doc.get("base_dir", "."))) / full
        doc = dict(doc)
        doc["metric"] = {"plugin": f"{full}:{cls_name}", **dict(spec.options)}
        return doc

    @model_validator(mode="after")
    def _metric_known(self) -> Recipe:
        if self.metric is not None:
            from quantkit.evaluate.metrics import create_metric

            try:
                create_metric(self.metric)  # unknown names, bad options, missing plugins
            except InputError as err:
                raise ValueError(str(err).rstrip(".")) from None
        return self

    @field_validator("configs")
    @classmethod
    def _unique(cls, configs: tuple[ConfigSpec, ...]) -> tuple[ConfigSpec, ...]:
        names = [c.name for c in configs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"config names must be unique; repeated: {', '.join(dup)}")
        if not configs:
            raise ValueError("at least one config is needed")
        return configs

    def path(self, relative: str) -> Path:
        """Resolve a recipe path: relative paths are taken from the recipe's folder."""
        p = Path(relative).expanduser()
        if relative.startswith("hf:"):
            return p
        return p if p.is_absolute() else Path(self.base_dir) / p

    def source(self, relative: str) -> str:
        """A data ``source`` resolved like :meth:`path` (``hf:`` specs unchanged)."""
        return relative if relative.startswith("hf:") else str(self.path(relative))

    def precision_config(self, config: ConfigSpec) -> PrecisionFile:
        """The precision file of an int8/fp8/fp16 config (its plan and its ``rescue:``)."""
        if config.precision_file is not None:
            cfg = PrecisionFile.from_yaml(self.path(config.precision_file))
        elif isinstance(config.precision, PrecisionFile):
            cfg = config.precision
        elif config.precision == "fp16":
            cfg = PrecisionFile(default="fp16", default_float="fp16")
        elif config.precision == "fp8":
            cfg = PrecisionFile(default="fp8")
        else:
            cfg = PrecisionFile()
        if config.fp16:
            cfg = cfg.model_copy(update={"default_float": "fp16"})
        return cfg


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "PrecisionFile", "literal['fp32','fp16','int8','fp8']"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _path_fields(recipe: Recipe) -> list[tuple[str, str, bool]]:
    """``(YAML path, value, must be a file)`` of every path in a recipe."""
    fields = [("model", recipe.model, True)]
    for which in ("calibration", "evaluation"):
        spec = getattr(recipe.data, which)
        if spec is None:
            continue
        if not spec.source.startswith("hf:"):
            fields.append((f"data.{which}.source", spec.source, False))  # a file or DIR/
        if spec.labels is not None:
            fields.append((f"data.{which}.labels", spec.labels, True))
    for i, config in enumerate(recipe.configs):
        if config.precision_file is not None:
            fields.append((f"configs[{i}].precision_file", config.precision_file, True))
    return fields


def _check_paths(recipe: Recipe, p: Path) -> None:
    """Every path of the recipe exists (resolved relative to the recipe's folder)."""
    where = f"paths are relative to the recipe's folder {recipe.base_dir}"
    for field, value, is_file in _path_fields(recipe):
        if not value.strip() or "\0" in value:
            raise InputError(f"{p}: {field}: {value!r} is not a path; give a file ({where}).")
        full = recipe.path(value)
        try:
            ok = full.is_file() if is_file else full.exists()
        except OSError as err:  # e.g. a name too long for the file system
            raise InputError(f"{p}: {field}: {value!r}: {err.strerror} ({where}).") from err
        if not ok:
            what = "does not exist" if not full.exists() else "is not a file"
            raise InputError(f"{p}: {field}: {full} {what} ({where}).")


#: limits on a recipe document: deeper or larger is refused before validation (YAML aliases can
#: make a small file expand exponentially, and deep nesting exhausts the parser's recursion)
MAX_DEPTH = 64
MAX_VALUES = 100_000


def _check_size(doc: Any, p: Path) -> None:
    """Refuse a document that is absurdly deep or (with aliases expanded) absurdly large."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    count = 0
    while stack:
        obj, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise InputError(f"{p}: the recipe nests more than {MAX_DEPTH} levels deep; a "
                             "recipe is a few levels of mappings and lists. Check the file.")
        if count > MAX_VALUES:
            raise InputError(f"{p}: the recipe holds more than {MAX_VALUES} values (with YAML "
                             "aliases expanded); check the file for alias bombs or pasted "
                             "data.")
        if isinstance(obj, dict):
            stack.extend((k, depth + 1) for k in obj)
            stack.extend((v, depth + 1) for v in obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, depth + 1) for v in obj)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; errors name the file and the YAML path of the bad field.

    Paths in the recipe (model, data sources, labels, precision files) are resolved relative
    to the recipe's folder and must exist.
    """
    p = Path(path)
    try:
        doc = load_yaml(p, "recipe")
    except RecursionError:
        raise InputError(f"{p}: the recipe nests too deeply to parse; a recipe is a few levels "
                         "of mappings and lists. Check the file.") from None
    if not isinstance(doc, dict):
        raise InputError(f"{p}: a recipe is a mapping with model, data and configs.")
    _check_size(doc, p)
    folder = p.resolve().parent
    base = doc.get("base_dir")
    if isinstance(base, str):  # an explicit base folder is itself relative to the recipe
        doc["base_dir"] = str(folder / Path(base).expanduser())
    doc.setdefault("base_dir", str(folder))
    try:
        recipe = Recipe.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        got = ("" if first["type"] in ("missing", "value_error")
               else f" (got {first.get('input')!r})")
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InputError(f"{p}: {_loc(first['loc']) or 'recipe'}: {msg}{got}.") from err
    _check_paths(recipe, p)
    return recipe
