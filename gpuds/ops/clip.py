"""``clip``: limit fields to fixed bounds or to fitted percentiles."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError, SourceError
from gpuds.ops.base import Block, Spec, parse_number
from gpuds.ops.stats import (
    FittedOp,
    Histogram,
    RunningMinMax,
    as_channels,
    channel_name,
    parse_per,
)

__all__ = ["Clip"]

Bound = np.ndarray | None


class Clip(FittedOp):
    """Limit values to ``[min, max]``: fixed bounds, or percentiles fitted on the data.

    Each side is set by a fixed value (``min``, ``max``) or by a percentile (``lower``,
    ``upper``), or left open; at least one side must be set. Values below the lower bound become
    the lower bound, values above the upper bound the upper bound; NaN stays NaN. The output dtype
    is the input dtype; other fields pass through unchanged.

    Bounds are converted to the field's dtype *inward*, to the nearest value the dtype can hold
    inside ``[min, max]``, so the output never leaves the bounds and no value inside them changes:
    for integer fields the lower bound is rounded up and the upper bound down (``min: 0.5`` on an
    integer field clips to 1) and a bound beyond the dtype's range is clamped to it; for float
    fields a bound the dtype cannot hold exactly becomes the next float16/float32 above a lower
    bound, below an upper bound. Bounds that leave no value of the dtype between them are an
    error.

    Percentiles are fitted in two passes, per field and per channel, over the non-NaN values:

    1. the exact min and max of the finite values;
    2. a histogram of ``2**16`` equal bins between them. An integer field whose channel spans
       fewer than ``2**16`` values (``max - min < 65536``, e.g. any uint8/uint16/int16 data) gets
       one bin per integer instead, which makes its percentiles **exact**.

    The percentile is NumPy's ``method="inverted_cdf"``: the smallest value ``v`` such that at
    least ``p`` percent of the values are ``<= v`` (the value of rank ``ceil(n * p / 100)``, at
    least 1). With float bins, the lower bound is the lower edge of the bin holding that value and
    the upper bound the upper edge of its bin, so each fitted bound is within one bin width
    ``(max - min) / 65536`` of the exact percentile and the fitted interval always contains the
    exact one (the op never clips more than exact percentiles would). ``lower: 0`` and
    ``upper: 100`` give the exact min and max. ``±inf`` values count as lying below/above every
    finite value; a percentile that falls on them gives the finite min or max. A field with more
    than 256 channels (``per: channel``) gets fewer bins per channel, to keep the histogram
    within ``2**24`` counters; its bin width (and error bound) grows accordingly. A channel with
    no finite value is an error while fitting, naming the field and channel.

    Integer and float fields are accepted; bool, category, label and mask fields are refused.

    Config keys
    -----------
    fields : str or list of str
        The fields to clip.
    min, max : number, optional
        Fixed bounds; ``min <= max``.
    lower, upper : number in [0, 100], optional
        Percentiles to fit (e.g. 1 and 99); ``lower <= upper``. A side takes either a fixed bound
        or a percentile (``min`` with ``upper`` is fine, ``min`` with ``lower`` is not).
    per : {"none", "channel"}, default "none"
        With percentiles: one bound over all values of a field, or one per entry of the last
        sample axis (image channel, feature column). Only valid with ``lower``/``upper``.

    Statistics
    ----------
    With percentiles, :meth:`stats` gives per field the fitted bounds, as applied (in the field's
    dtype), one per channel: ``{"min": [...], "max": [...], "per": ...}`` (only the fitted
    sides); :meth:`load_stats` restores them.

    Examples
    --------
    >>> import numpy as np
    >>> op = Clip({"op": "clip", "fields": "x", "min": 0, "max": 1})
    >>> _ = op.plan({"x": Spec(np.dtype("float32"), ())})
    >>> op.apply(Block({"x": np.array([-2, 0.5, np.nan, 7], "float32")}, np.arange(4))).fields["x"]
    array([0. , 0.5, nan, 1. ], dtype=float32)
    """

    name = "clip"
    keys = ("fields", "min", "max", "lower", "upper", "per")
    unfitted = "fitted bounds"
    stats_in_field_dtype = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        w = self.where
        self.fixed_min = _parse_bound(config.get("min"), f"{w} key 'min'")
        self.fixed_max = _parse_bound(config.get("max"), f"{w} key 'max'")
        self.lower = _parse_percent(config.get("lower"), f"{w} key 'lower'")
        self.upper = _parse_percent(config.get("upper"), f"{w} key 'upper'")
        if self.fixed_min is not None and self.lower is not None:
            raise ConfigError(f"{w}: give the lower bound as 'min' or 'lower', not both")
        if self.fixed_max is not None and self.upper is not None:
            raise ConfigError(f"{w}: give the upper bound as 'max' or 'upper', not both")
        if all(v is None for v in (self.fixed_min, self.fixed_max, self.lower, self.upper)):
            raise ConfigError(
                f"{w}: expected a bound: 'min' and/or 'max' (fixed values), or 'lower' and/or "
                "'upper' (percentiles, 0..100)"
            )
        lo, hi = self.fixed_min, self.fixed_max
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{w}: expected min <= max, got min={lo!r}, max={hi!r}")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ConfigError(
                f"{w}: expected lower <= upper, got lower={self.lower!r}, upper={self.upper!r}"
            )
        if "per" in config and self.lower is None and self.upper is None:
            raise ConfigError(f"{w}: 'per' applies to fitted percentiles ('lower'/'upper') only")
        self.per = parse_per(config, w)
        # Two passes with percentiles (min and max, then a histogram), none with fixed bounds.
        self.fit_passes = 2 if self.statistics() else 0
        self._ranges: dict[str, RunningMinMax] = {}
        self._histograms: dict[str, Histogram] = {}

    def statistics(self) -> tuple[str, ...]:
        return tuple(s for s, p in (("min", self.lower), ("max", self.upper)) if p is not None)

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        self.plan_fields(specs, numeric="iuf")
        for name, spec in self.specs.items():
            lo, hi = self._bounds(name, spec.dtype)
            if lo is not None and hi is not None and (lo > hi).any():
                raise ConfigError(
                    f"{self.where}: no {spec.dtype} value of field {name!r} lies in "
                    f"[{self.fixed_min}, {self.fixed_max}]; widen the bounds"
                )
        return specs

    def _bounds(
        self, name: str, dtype: np.dtype[Any], fitted: Mapping[str, np.ndarray] | None = None
    ) -> tuple[Bound, Bound]:
        """The bounds of a field as applied: fixed or ``fitted`` (default: fitted so far), in the
        field's dtype, or None."""
        fitted = self.fitted.get(name, {}) if fitted is None else fitted
        lo = fitted.get("min")
        hi = fitted.get("max")
        if self.fixed_min is not None:
            lo = _inward(np.array([self.fixed_min], dtype=object), dtype, upper=False)
        if self.fixed_max is not None:
            hi = _inward(np.array([self.fixed_max], dtype=object), dtype, upper=True)
        return lo, hi

    def accumulating(self, pass_index: int) -> tuple[str, ...]:
        return ("_ranges",) if pass_index == 0 else ("_histograms",)

    def fit_start(self, pass_index: int) -> None:
        if pass_index == 0:
            self._ranges = {name: RunningMinMax() for name in self.fields}
            self._histograms = {}

    def fit_block(self, block: Block) -> None:
        for name in self.fields:
            x2 = as_channels(block.fields[name], self.per)
            if name in self._histograms:
                self._histograms[name].update(x2)
            else:
                self._ranges[name].update(x2)

    def fit_end(self, pass_index: int) -> None:
        if pass_index == 0:
            self._histograms = {
                name: Histogram(*self._ranges[name].result(name, self.where))
                for name in self.fields
            }
            return
        for name in self.fields:
            dtype = self.specs[name].dtype
            histogram = self._histograms.pop(name)
            fitted: dict[str, np.ndarray] = {}
            if self.lower is not None:
                low, _ = histogram.percentile(self.lower)
                fitted["min"] = _inward(low, dtype, upper=False)
            if self.upper is not None:
                _, high = histogram.percentile(self.upper)
                fitted["max"] = _inward(high, dtype, upper=True)
            self.fitted[name] = fitted
            self._check_order(name, dtype)

    def _check_order(self, name: str, dtype: np.dtype[Any]) -> None:
        lo, hi = self._bounds(name, dtype)
        if lo is None or hi is None:
            return
        lo, hi = np.broadcast_arrays(lo, hi)
        crossed = np.flatnonzero(lo > hi)
        if crossed.size:
            c = int(crossed[0])
            raise SourceError(
                f"{self.where}: {channel_name(name, c, len(lo))}: the lower bound {lo[c]} "
                f"exceeds the upper bound {hi[c]}; check the fixed bound against the data's "
                "percentiles"
            )

    def apply(self, block: Block) -> Block:
        fields = dict(block.fields)
        for name in self.fields:
            x = fields[name]
            xp = array_module(x)
            lo, hi = self._bounds(name, x.dtype, self.fitted_for(name) if self.statistics() else {})
            # maximum/minimum propagate NaN, and arrays of the field's dtype keep its dtype.
            if lo is not None:
                x = xp.maximum(x, xp.asarray(lo))
            if hi is not None:
                x = xp.minimum(x, xp.asarray(hi))
            fields[name] = x
        return block.with_fields(fields)


def _parse_bound(value: Any, where: str) -> int | float | None:
    """A fixed bound; integers stay Python ints so int64 bounds stay exact."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_number(value, where)


def _parse_percent(value: Any, where: str) -> float | None:
    if value is None:
        return None
    p = parse_number(value, where, minimum=0.0)
    if p > 100:
        raise ConfigError(f"{where}: expected a percentile in 0..100, got {value!r}")
    return p


def _inward(values: np.ndarray, dtype: np.dtype[Any], *, upper: bool) -> np.ndarray:
    """Bounds in ``dtype``: the nearest value inside the kept interval.

    A lower bound becomes the smallest ``dtype`` value ``>=`` it, an upper bound the largest
    ``<=`` it, so clipping in ``dtype`` equals clipping the exact values and rounding the result
    into the interval. Integer bounds beyond the dtype's range are clamped to it.
    """
    out = []
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        for v in values.tolist():
            whole = v if isinstance(v, int) else (math.floor(v) if upper else math.ceil(v))
            out.append(min(max(whole, int(info.min)), int(info.max)))
        return np.array(out, dtype=dtype)
    for v in values.tolist():
        f = float(v)
        with np.errstate(over="ignore"):  # beyond the range: ±inf, then stepped inward below
            t = dtype.type(f)
        if upper and float(t) > f:
            t = np.nextafter(t, dtype.type(-math.inf))
        elif not upper and float(t) < f:
            t = np.nextafter(t, dtype.type(math.inf))
        out.append(float(t))
    return np.array(out, dtype=dtype)
