"""Streaming statistics and config helpers shared by the value-transform ops.

Every statistic is kept per *channel*: with ``per="none"`` a field has one channel (all its values),
with ``per="channel"`` one per entry of the last axis of a sample (the colour channel of
``(H, W, C)`` images, the column of ``(F,)`` feature vectors; a field of scalars has one channel).
:func:`as_channels` views a block as ``(values, channels)`` so that every statistic is a reduction
over axis 0, and fitted statistics are 1-D host arrays of length ``channels`` that broadcast
against the block's last axis.

- :class:`RunningMinMax`: exact min and max of the finite values, and how many finite and
  infinite values were seen, merged block by block.
- :class:`Histogram`: counts in ``2**16`` equal bins between a fitted min and max (one bin per
  integer when an integer channel spans fewer than ``2**16`` values, which makes order statistics
  exact), from which :meth:`Histogram.percentile` and :meth:`Histogram.median` are read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpuds.backend import array_module, to_host
from gpuds.errors import ConfigError, SourceError
from gpuds.ops.base import Spec

__all__ = [
    "FLOAT_DTYPES",
    "HIST_BINS",
    "NON_NUMERIC_KINDS",
    "Histogram",
    "RunningMinMax",
    "as_channels",
    "channel_count",
    "channel_name",
    "check_stat_length",
    "parse_float_dtype",
    "parse_per",
    "refuse_infinite",
    "require_numeric",
    "stat_array",
    "stat_list",
    "stats_entry",
]

PER = ("none", "channel")
FLOAT_DTYPES = ("float16", "float32", "float64")
NON_NUMERIC_KINDS = frozenset({"category", "label", "mask"})
HIST_BINS = 2**16
"""Bins per channel of a float histogram (and the widest exact integer histogram)."""
HIST_BUDGET = 2**24
"""Counters of one field's histogram over all its channels (128 MiB of int64)."""
MIN_BINS = 2**10


def parse_per(config: Mapping[str, Any], where: str) -> str:
    """The ``per`` key: ``"none"`` (default) or ``"channel"``."""
    per = config.get("per", "none")
    if per not in PER:
        raise ConfigError(f"{where}: expected 'per' to be one of {', '.join(PER)}, got {per!r}")
    return str(per)


def parse_float_dtype(config: Mapping[str, Any], where: str) -> np.dtype[Any]:
    """The ``dtype`` key of an op that outputs floats (default float32)."""
    name = config.get("dtype", "float32")
    if name not in FLOAT_DTYPES:
        raise ConfigError(
            f"{where}: expected 'dtype' to be one of {', '.join(FLOAT_DTYPES)}, got {name!r}"
        )
    return np.dtype(str(name))


def require_numeric(
    specs: Mapping[str, Spec], names: Sequence[str], where: str, kinds: str
) -> None:
    """Each field must hold plain numbers: a dtype of ``kinds`` and not a category/label/mask."""
    for name in names:
        spec = specs[name]
        if spec.kind in NON_NUMERIC_KINDS:
            raise ConfigError(
                f"{where}: field {name!r} is a {spec.kind} field (codes, not quantities); "
                f"remove it from 'fields'"
            )
        if spec.dtype.kind not in kinds:
            wanted = {"b": "bool", "i": "integer", "u": "unsigned", "f": "float"}
            accepted = "/".join(wanted[k] for k in kinds)
            raise ConfigError(
                f"{where}: field {name!r} has dtype {spec.dtype}, expected a {accepted} dtype; "
                f"remove it from 'fields' or 'cast' it first"
            )


def channel_count(spec: Spec, per: str) -> int:
    """Channels of a field: 1, or the last sample axis with ``per="channel"``."""
    if per == "channel" and spec.sample_shape:
        return int(spec.sample_shape[-1])
    return 1


def as_channels(values: Any, per: str) -> Any:
    """View a block as ``(values, channels)`` (bool as uint8, so min/max/histograms work)."""
    xp = array_module(values)
    if values.dtype.kind == "b":
        values = values.astype(xp.uint8)
    channels = values.shape[-1] if per == "channel" and values.ndim > 1 else 1
    return values.reshape(-1, channels)


def channel_name(field: str, channel: int, channels: int) -> str:
    """``"field 'x'"`` or ``"field 'x' channel 2"`` for error messages."""
    return f"field {field!r}" if channels == 1 else f"field {field!r} channel {channel}"


def stat_list(values: np.ndarray) -> list[Any]:
    """A 1-D host statistic as a JSON-safe list (Python floats or ints)."""
    return [v.item() for v in np.asarray(values).reshape(-1)]


def stat_array(value: Any, where: str, *, dtype: Any = np.float64) -> np.ndarray:
    """A statistic read back from :func:`stat_list` output, checked to be a list of numbers."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of numbers, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{where}: expected a list of finite numbers, got {value!r}")
    return np.asarray(value, dtype=dtype)


def stats_entry(
    stats: Mapping[str, Any], name: str, per: str, where: str, keys: str
) -> Mapping[str, Any]:
    """The stored statistics of field ``name``: a mapping fitted with the op's ``per``."""
    entry = stats.get(name)
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with {keys}, got {entry!r}")
    if entry.get("per") != per:
        raise ConfigError(f"{where}: fitted with per={entry.get('per')!r}, the op has per={per!r}")
    return entry


def check_stat_length(stat: np.ndarray, spec: Spec, per: str, where: str, field: str) -> None:
    """Loaded statistics must have one entry per channel of the field they are applied to."""
    expected = channel_count(spec, per)
    if stat.shape[0] != expected:
        raise ConfigError(
            f"{where}: loaded statistics of field {field!r} have {stat.shape[0]} channel(s), but "
            f"the field has {expected} (per={per!r}, sample shape {spec.sample_shape}); refit"
        )


def _require_channels(count: np.ndarray, field: str, where: str, what: str) -> None:
    empty = np.flatnonzero(count == 0)
    if empty.size:
        name = channel_name(field, int(empty[0]), count.shape[0])
        raise SourceError(
            f"{where}: {name} has no {what} to fit on (every value is missing or NaN, or the fit "
            f"data is empty); fill or drop the missing values first, or leave the field out"
        )


def refuse_infinite(ranges: RunningMinMax, field: str, where: str, why: str) -> None:
    """A statistic that ``±inf`` makes meaningless: name the first channel holding one."""
    if ranges.infinite is None:
        return
    infinite = np.flatnonzero(ranges.infinite)
    if infinite.size:
        channel = channel_name(field, int(infinite[0]), ranges.infinite.shape[0])
        op = where.removeprefix("op ")
        raise SourceError(
            f"{where}: {channel} holds ±inf values, so {why}; run 'clip' or 'drop_invalid' "
            f"before {op}"
        )


class RunningMinMax:
    """Min and max of the finite, valid values per channel, merged block by block.

    Integer channels keep their own dtype (exact even for int64 timestamps); float channels are
    kept in float64. ``finite`` counts the values that took part, ``infinite`` the ``±inf`` values
    left out (NaN and invalid values are not counted at all).
    """

    def __init__(self) -> None:
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.finite: np.ndarray | None = None
        self.infinite: np.ndarray | None = None

    def update(self, x2: Any, valid: Any = None) -> None:
        """Add a ``(values, channels)`` block; ``valid`` (same shape) marks values to count."""
        xp = array_module(x2)
        if x2.shape[0] == 0:
            return
        if x2.dtype.kind == "f":
            x2 = x2.astype(xp.float64)
            finite = xp.isfinite(x2)
            infinite = xp.isinf(x2)
            if valid is not None:
                finite &= valid
                infinite &= valid
            lo = xp.where(finite, x2, xp.inf).min(axis=0)
            hi = xp.where(finite, x2, -xp.inf).max(axis=0)
            n_inf = infinite.sum(axis=0)
        else:
            info = np.iinfo(x2.dtype)
            finite = xp.ones(x2.shape, dtype=bool) if valid is None else valid
            lo = xp.where(finite, x2, x2.dtype.type(info.max)).min(axis=0)
            hi = xp.where(finite, x2, x2.dtype.type(info.min)).max(axis=0)
            n_inf = xp.zeros(x2.shape[1], dtype=xp.int64)
        # One stack per dtype keeps the device-to-host copies at two per block.
        bounds = to_host(xp.stack([lo, hi]))
        counts = to_host(xp.stack([finite.sum(axis=0), n_inf])).astype(np.int64)
        if self.min is None or self.max is None or self.finite is None or self.infinite is None:
            self.min, self.max = bounds[0], bounds[1]
            self.finite, self.infinite = counts[0], counts[1]
            return
        self.min = np.minimum(self.min, bounds[0])
        self.max = np.maximum(self.max, bounds[1])
        self.finite = self.finite + counts[0]
        self.infinite = self.infinite + counts[1]

    def result(self, field: str, where: str) -> tuple[np.ndarray, np.ndarray]:
        """``(min, max)``; a channel without a finite value is a :class:`SourceError`."""
        if self.min is None or self.max is None or self.finite is None:
            raise SourceError(
                f"{where}: field {field!r} has no values to fit on (the fit data is empty)"
            )
        _require_channels(self.finite, field, where, "finite values")
        return self.min, self.max


class Histogram:
    """Counts of the valid, non-NaN values per channel in bins between ``lo`` and ``hi``.

    Integer channels spanning fewer than ``2**16`` values (``max - min < 2**16``) get one bin per
    integer: order statistics read from them are exact. Otherwise each channel gets ``2**16``
    equal bins of width ``(hi - lo) / 2**16`` (fewer when a field has so many channels that
    ``channels * 2**16`` would exceed ``2**24`` counters, never fewer than ``2**10``), and an order
    statistic is known to lie within its bin. ``±inf`` and values beyond ``[lo, hi]`` count in the
    first or last bin, so ranks stay right. Counts accumulate on the values' device.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo = lo
        self.hi = hi
        self.integer = lo.dtype.kind in "iu"
        channels = lo.shape[0]
        span = max(int(h) - int(lo_) for lo_, h in zip(lo, hi, strict=True)) if self.integer else 0
        budget = max(MIN_BINS, min(HIST_BINS, HIST_BUDGET // channels))
        self.exact = self.integer and span < budget
        if self.exact:
            self.bins = span + 1
            self.width = np.ones(channels)
        else:
            self.bins = budget
            self.width = (hi.astype(np.float64) - lo.astype(np.float64)) / self.bins
        self.counts: Any = None

    def update(self, x2: Any, valid: Any = None) -> None:
        """Add a ``(values, channels)`` block; ``valid`` (same shape) marks values to count."""
        xp = array_module(x2)
        if x2.shape[0] == 0:
            return
        ok = xp.ones(x2.shape, dtype=bool) if valid is None else valid
        if x2.dtype.kind == "f":
            ok = ok & ~xp.isnan(x2)
        if self.exact:
            # Valid values lie in [lo, lo + span] with span < 2**16 (fitted on the same data):
            # unsigned differences cannot wrap; signed ones could in their own dtype (int16:
            # 29999 - -30000), so those subtract in int64.
            wide = x2.dtype if x2.dtype.kind == "u" else np.dtype(np.int64)
            lo = xp.asarray(self.lo.astype(wide))
            shifted = (xp.where(ok, x2, lo).astype(wide) - lo).astype(xp.int64)
            index = xp.clip(shifted, 0, self.bins - 1)
        else:
            lo64 = xp.asarray(self.lo.astype(np.float64))
            width = xp.asarray(np.where(self.width > 0, self.width, 1.0))
            x64 = xp.where(ok, x2.astype(xp.float64), lo64)
            index = xp.clip(xp.floor((x64 - lo64) / width), 0, self.bins - 1).astype(xp.int64)
        flat = index + xp.arange(x2.shape[1], dtype=xp.int64) * self.bins
        # Weights instead of boolean indexing: no data-dependent shape, so no device sync.
        counts = xp.bincount(
            flat.reshape(-1),
            weights=ok.reshape(-1).astype(xp.float64),
            minlength=x2.shape[1] * self.bins,
        )
        if self.counts is None:
            self.counts = counts
        else:
            self.counts += counts  # in place: a sum would be a third array of every counter

    def _host_counts(self) -> np.ndarray:
        channels = self.lo.shape[0]
        if self.counts is None:
            return np.zeros((channels, self.bins), dtype=np.int64)
        return np.rint(to_host(self.counts)).astype(np.int64).reshape(channels, self.bins)

    def total(self) -> np.ndarray:
        """Values counted per channel."""
        return self._host_counts().sum(axis=1)

    def order_statistic(self, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds ``(low, high)`` of the ``rank``-th smallest value (1-based) of each channel.

        Exact histograms give ``low == high ==`` the value, in the field's integer dtype. Float
        histograms give the edges of the value's bin as float64 (``high`` of the last bin is
        ``hi``).
        """
        counts = self._host_counts()
        cumulative = np.cumsum(counts, axis=1)
        index = np.argmax(cumulative >= rank[:, None], axis=1)
        if self.exact:
            value = self.lo + index.astype(self.lo.dtype)
            return value, value
        lo = self.lo.astype(np.float64)
        low = lo + index * self.width
        high = np.where(index == self.bins - 1, self.hi, lo + (index + 1) * self.width)
        return np.minimum(low, self.hi), np.minimum(high, self.hi).astype(np.float64)

    def percentile(self, p: float) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the ``p``-th percentile, NumPy's ``method="inverted_cdf"``.

        That is the smallest value ``v`` with at least ``p`` percent of the values ``<= v``: the
        value of rank ``ceil(n * p / 100)`` (at least 1), computed the way NumPy computes it.
        """
        n = self.total().astype(np.float64)
        index = n * (p / 100) - 1
        below = np.floor(index)
        zero_based = np.where(index - below == 0, below, below + 1)
        return self.order_statistic(np.maximum(zero_based, 0).astype(np.int64) + 1)

    def median(self) -> np.ndarray:
        """The median as :func:`numpy.median` defines it: the mean of the two middle values.

        Exact histograms give it exactly (float64); float histograms use the middle of each
        value's bin, so the result is within half a bin width of the true median.
        """
        n = self.total()
        values = []
        for rank in ((n - 1) // 2 + 1, n // 2 + 1):
            low, high = self.order_statistic(rank)
            values.append((low.astype(np.float64) + high.astype(np.float64)) / 2)
        return (values[0] + values[1]) / 2
