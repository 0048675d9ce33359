"""Calibrators: streaming, mergeable statistics that turn activations into INT8 scales.

Built-in methods: ``auto`` (the default: per tensor, the entropy / percentile / mse / max
threshold with the least expected INT8 error), ``entropy`` (TensorRT-exact KL), ``minmax``,
``percentile``, ``mse``.
Plugins subclass :class:`Calibrator` and register with :func:`register_calibrator`.
The legacy TensorRT adapters live in :mod:`quantkit.calibrators.tensorrt` (imported on demand).
"""

from quantkit.calibrators._kernel import PRELOAD_PER_SAMPLE as KERNEL_PRELOAD_PER_SAMPLE
from quantkit.calibrators._kernel import expect_values as expect_binned_values
from quantkit.calibrators._kernel import preload as preload_kernel
from quantkit.calibrators.auto import auto_choice, expected_error
from quantkit.calibrators.base import (
    CACHE_ALGORITHMS,
    DEFAULT_METHOD,
    Calibrator,
    NonFiniteError,
    available_methods,
    canonical_method,
    create_calibrator,
    get_calibrator_class,
    load_calibrator_plugin,
    register_calibrator,
)
from quantkit.calibrators.cache import (
    ScaleTable,
    parse_scales_json,
    parse_trt_cache,
    read_scales,
)
from quantkit.calibrators.entropy import entropy_amax, kl_divergences
from quantkit.calibrators.histogram import AbsHistogram
from quantkit.calibrators.methods import (
    AutoCalibrator,
    EntropyCalibrator,
    HistogramCalibrator,
    MinMaxCalibrator,
    MSECalibrator,
    PercentileCalibrator,
)
from quantkit.calibrators.mse import mse_amax
from quantkit.calibrators.percentile import percentile_amax

__all__ = [
    "KERNEL_PRELOAD_PER_SAMPLE",
    "expect_binned_values",
    "preload_kernel",
    "CACHE_ALGORITHMS",
    "DEFAULT_METHOD",
    "AbsHistogram",
    "AutoCalibrator",
    "Calibrator",
    "EntropyCalibrator",
    "HistogramCalibrator",
    "MSECalibrator",
    "MinMaxCalibrator",
    "NonFiniteError",
    "PercentileCalibrator",
    "ScaleTable",
    "auto_choice",
    "available_methods",
    "canonical_method",
    "create_calibrator",
    "entropy_amax",
    "expected_error",
    "get_calibrator_class",
    "kl_divergences",
    "load_calibrator_plugin",
    "mse_amax",
    "parse_scales_json",
    "parse_trt_cache",
    "percentile_amax",
    "read_scales",
    "register_calibrator",
]
