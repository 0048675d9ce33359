"""The built-in calibration methods: auto (the default), entropy, minmax, percentile, mse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from quantkit.calibrators.auto import auto_choice
from quantkit.calibrators.base import Calibrator, register_calibrator
from quantkit.calibrators.entropy import entropy_amax
from quantkit.calibrators.histogram import BASE_BINS, AbsHistogram
from quantkit.calibrators.mse import mse_amax
from quantkit.calibrators.percentile import percentile_amax
from quantkit.errors import InputError


class HistogramCalibrator(Calibrator):
    """Base of the methods that work on a 2048-bin |x| histogram per tensor.

    The first batch of each tensor fixes the bin width (TensorRT-compatible default). For an
    order-independent result pass ``widths={tensor: width}`` (for instance from a first pass
    over the data's max); shards of one run share the width of the run's first batch through
    :meth:`Calibrator.empty_like`.

    Args:
        num_bins: bins spanning the first batch's range.
        widths: optional fixed bin width per tensor.
        allow_nonfinite: see :class:`Calibrator`.
    """

    parallel_updates = True

    def __init__(self, *, num_bins: int = BASE_BINS, widths: Mapping[str, float] | None = None,
                 allow_nonfinite: bool = False) -> None:
        super().__init__(allow_nonfinite=allow_nonfinite)
        if num_bins < 256:
            raise InputError(f"num_bins={num_bins}: must be at least 256 (default 2048).")
        self.num_bins = num_bins
        for name, w in (widths or {}).items():
            if not (w > 0 and np.isfinite(w)):
                raise InputError(f"widths['{name}']={w}: a bin width must be positive.")
            self._stats[name] = AbsHistogram(hi0=float(np.float32(w * num_bins)),
                                             base_bins=num_bins,
                                             counts=np.zeros(num_bins, dtype=np.int64))

    def settings(self) -> dict[str, Any]:
        """Settings recorded with the scales."""
        return {"num_bins": self.num_bins}

    def histogram(self, name: str) -> AbsHistogram:
        """The histogram of tensor ``name``."""
        stat: AbsHistogram = self._stats[name]
        return stat

    def clipping(self, amax: Mapping[str, float]) -> dict[str, tuple[float, float]]:
        """``{tensor: (amax / max|x|, fraction of values above amax)}`` from the histograms.

        The maximum is the histogram's last non-empty bin edge (exact to one bin width).
        """
        out: dict[str, tuple[float, float]] = {}
        for name, value in amax.items():
            hist = self._stats.get(name)
            if hist is None or hist.hi0 is None or not hist.counts.any():
                continue
            counts, width = hist.counts, hist.width
            top = (int(np.flatnonzero(counts)[-1]) + 1) * width
            above = int(counts[int(np.ceil(value / width)):].sum()) if width > 0 else 0
            out[name] = (value / top if top > 0 else 1.0, above / max(hist.total, 1))
        return out

    def _new_tensor(self) -> AbsHistogram:
        return AbsHistogram(base_bins=self.num_bins)

    def update(self, name: str, array: npt.ArrayLike) -> None:
        """Fold one batch of tensor ``name`` into its histogram.

        Once the tensor's bin width is known, a batch that fits the existing bins is binned in
        one pass (:meth:`AbsHistogram.try_accumulate`); the first batch, batches that grow the
        range and batches with NaN/Inf take the general path. Both give the same counts.
        """
        stat = self._stats.get(name)
        if stat is not None and stat.hi0 is not None:
            x = np.asarray(array, dtype=np.float32)
            if stat.try_accumulate(x.reshape(-1)):
                return
            array = x
        super().update(name, array)

    def _update_tensor(self, name: str, stat: AbsHistogram, x: npt.NDArray[np.float32],
                       absmax: float) -> None:
        stat.update(x, absmax)

    def _merge_tensor(self, name: str, stat: AbsHistogram, other: AbsHistogram) -> None:
        stat.merge(other, name)

    def _empty_like_tensor(self, stat: AbsHistogram) -> AbsHistogram:
        return stat.empty_like()

    def _tensor_state(self, stat: AbsHistogram) -> dict[str, Any]:
        return stat.state()

    def _tensor_from_state(self, state: Mapping[str, Any]) -> AbsHistogram:
        return AbsHistogram.from_state(dict(state))

    def _amax(self, name: str, stat: AbsHistogram) -> float:
        if stat.hi0 is None:
            return 0.0
        return self._amax_from_histogram(stat.counts, stat.width)

    def _amax_from_histogram(self, counts: npt.NDArray[np.int64], width: float) -> float:
        raise NotImplementedError


@register_calibrator("entropy")
class EntropyCalibrator(HistogramCalibrator):
    """TensorRT's entropy (KL) calibration (``IInt8EntropyCalibrator2``)."""

    cache_algorithm = "EntropyCalibration2"

    def _amax_from_histogram(self, counts: npt.NDArray[np.int64], width: float) -> float:
        return entropy_amax(counts, width)


@register_calibrator("percentile")
class PercentileCalibrator(HistogramCalibrator):
    """Amax = the given percentile of |x| (left edge of its histogram bin).

    Args:
        percentile: in ``(0, 100]``; default 99.99.
    """

    cache_algorithm = "EntropyCalibration2"

    def __init__(self, *, percentile: float = 99.99, num_bins: int = BASE_BINS,
                 widths: Mapping[str, float] | None = None,
                 allow_nonfinite: bool = False) -> None:
        if not 0 < percentile <= 100:
            raise InputError(f"--percentile {percentile}: must be in (0, 100], e.g. 99.99.")
        super().__init__(num_bins=num_bins, widths=widths, allow_nonfinite=allow_nonfinite)
        self.percentile = float(percentile)

    def settings(self) -> dict[str, Any]:
        """Settings recorded with the scales."""
        return {"num_bins": self.num_bins, "percentile": self.percentile}

    def _amax_from_histogram(self, counts: npt.NDArray[np.int64], width: float) -> float:
        return percentile_amax(counts, width, self.percentile)


@register_calibrator("mse")
class MSECalibrator(HistogramCalibrator):
    """Amax minimising the INT8 quantisation mean squared error."""

    cache_algorithm = "EntropyCalibration2"

    def _amax_from_histogram(self, counts: npt.NDArray[np.int64], width: float) -> float:
        return mse_amax(counts, width)


@register_calibrator("auto")
class AutoCalibrator(HistogramCalibrator):
    """Per tensor, the entropy / percentile / mse / max amax with the least expected error.

    quantkit's default method (``docs/calibration_methods.md``): one histogram per tensor, four
    candidate thresholds from it, and the one whose INT8 quantize-dequantize of the histogram's
    distribution has the smallest mean squared error (:mod:`quantkit.calibrators.auto`). After
    :meth:`compute_amax`, :attr:`choices` names the candidate each tensor took.
    """

    cache_algorithm = "EntropyCalibration2"

    def __init__(self, *, num_bins: int = BASE_BINS, widths: Mapping[str, float] | None = None,
                 allow_nonfinite: bool = False) -> None:
        super().__init__(num_bins=num_bins, widths=widths, allow_nonfinite=allow_nonfinite)
        #: ``{tensor: candidate}`` of the last :meth:`compute_amax`.
        self.choices: dict[str, str] = {}

    def compute_amax(self) -> dict[str, float]:
        """Amax of every tensor; :attr:`choices` in the same order (threads fill it)."""
        amax = super().compute_amax()
        self.choices = {name: self.choices[name] for name in amax}
        return amax

    def _amax(self, name: str, stat: AbsHistogram) -> float:
        if stat.hi0 is None:
            self.choices[name] = "max"
            return 0.0
        choice, amax = auto_choice(stat.counts, stat.width)
        self.choices[name] = choice
        return amax

    def choice_counts(self) -> dict[str, int]:
        """How many tensors took each candidate (after :meth:`compute_amax`)."""
        out: dict[str, int] = {}
        for choice in self.choices.values():
            out[choice] = out.get(choice, 0) + 1
        return dict(sorted(out.items()))


@register_calibrator("minmax")
class MinMaxCalibrator(Calibrator):
    """Amax = max |x| over all samples (``IInt8MinMaxCalibrator``)."""

    cache_algorithm = "MinMaxCalibration"

    def _new_tensor(self) -> list[float]:
        return [0.0]

    def _update_tensor(self, name: str, stat: list[float], x: npt.NDArray[np.float32],
                       absmax: float) -> None:
        stat[0] = max(stat[0], absmax)

    def _merge_tensor(self, name: str, stat: list[float], other: list[float]) -> None:
        stat[0] = max(stat[0], other[0])

    def _empty_like_tensor(self, stat: list[float]) -> list[float]:
        return [0.0]

    def _amax(self, name: str, stat: list[float]) -> float:
        return float(np.float32(stat[0]))

    def _tensor_state(self, stat: list[float]) -> dict[str, Any]:
        return {"amax": stat[0]}

    def _tensor_from_state(self, state: Mapping[str, Any]) -> list[float]:
        return [float(state["amax"])]
