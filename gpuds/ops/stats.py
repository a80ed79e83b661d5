"""Statistics of the ops that fit them, and :class:`FittedOp`, the base of those ops.

Every statistic is kept per *channel*: with ``per="none"`` a field has one channel (all its values),
with ``per="channel"`` one per entry of the last axis of a sample (the colour channel of
``(H, W, C)`` images, the column of ``(F,)`` feature vectors; a field of scalars has one channel).
:func:`as_channels` views a block as ``(values, channels)`` so that every statistic is a reduction
over axis 0, and fitted statistics are 1-D host arrays of length ``channels`` that broadcast
against the block's last axis.

- :class:`RunningMoments`: count, mean and sum of squared deviations, merged block by block.
- :class:`RunningMinMax`: exact min and max of the finite values, and how many finite and
  infinite values were seen, merged block by block.
- :class:`Histogram`: counts in ``2**16`` equal bins between a fitted min and max (one bin per
  integer when an integer channel spans fewer than ``2**16`` values, which makes order statistics
  exact), from which :meth:`Histogram.percentile` and :meth:`Histogram.median` are read.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from gpuds.backend import array_module, to_host
from gpuds.errors import ConfigError, SourceError
from gpuds.ops.base import CODE_KINDS, Op, Spec, parse_fields, require_fields

__all__ = [
    "FLOAT_DTYPES",
    "HIST_BINS",
    "FittedOp",
    "Histogram",
    "RunningMinMax",
    "RunningMoments",
    "as_channels",
    "channel_count",
    "channel_name",
    "check_stat_length",
    "float_outputs",
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
        if spec.kind in CODE_KINDS:
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


def float_outputs(
    specs: Mapping[str, Spec], names: Sequence[str], dtype: np.dtype[Any]
) -> dict[str, Spec]:
    """The fields leaving an op that turns the fields ``names`` into ``dtype`` floats: same shape
    and kind, no attributes (a unit no longer applies); the others pass through."""
    out = dict(specs)
    for name in names:
        spec = specs[name]
        out[name] = Spec(dtype, spec.sample_shape, spec.kind)
    return out


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

    def merge(self, other: RunningMinMax) -> None:
        """Add what ``other`` saw (exact: minima, maxima and counts)."""
        if other.min is None or other.max is None or other.finite is None:
            return
        assert other.infinite is not None
        if self.min is None or self.max is None or self.finite is None or self.infinite is None:
            self.min, self.max = other.min, other.max
            self.finite, self.infinite = other.finite, other.infinite
            return
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.finite = self.finite + other.finite
        self.infinite = self.infinite + other.infinite

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

    def partial(self) -> Histogram:
        """This histogram with its counts on the host (to send to another process)."""
        copy = Histogram.__new__(Histogram)
        copy.__dict__.update(self.__dict__)
        copy.counts = None if self.counts is None else to_host(self.counts)
        return copy

    def merge(self, other: Histogram) -> None:
        """Add the counts of ``other`` (same bins; exact: whole numbers)."""
        if other.counts is None:
            return
        if self.counts is None:
            xp = np if isinstance(other.counts, np.ndarray) else array_module(other.counts)
            self.counts = xp.array(other.counts, copy=True)
        else:
            self.counts += array_module(self.counts).asarray(other.counts)

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


class RunningMoments:
    """Count, mean and M2 (sum of squared deviations) merged block by block.

    Uses the pairwise update of Chan, Golub and LeVeque in float64: each block's mean and M2 are
    computed around the block's own mean, then merged, so a large offset (values ~1e8 + N(0, 1))
    does not cancel the variance as the naive sum of squares does. NaNs are ignored.
    """

    def __init__(self) -> None:
        self.count: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, values: Any, axes: tuple[int, ...]) -> None:
        xp = array_module(values)
        x = values.astype(xp.float64)
        valid = ~xp.isnan(x)
        n = valid.sum(axis=axes).astype(xp.float64)
        total = xp.where(valid, x, 0).sum(axis=axes)
        mean = xp.where(n > 0, total / xp.maximum(n, 1), 0)
        shape = [1 if a in axes else s for a, s in enumerate(x.shape)]
        centred = xp.where(valid, x - mean.reshape(shape), 0)
        m2 = (centred * centred).sum(axis=axes)
        n_h, mean_h, m2_h = (np.asarray(to_host(v), dtype=np.float64) for v in (n, mean, m2))
        self._add(n_h, mean_h, m2_h)

    def merge(self, other: RunningMoments) -> None:
        """Add what ``other`` saw. Merging, in order, moments that each saw one block gives
        exactly the moments of those blocks updated in order here."""
        if other.count is None or other.mean is None or other.m2 is None:
            return
        self._add(other.count, other.mean, other.m2)

    def _add(self, n_h: np.ndarray, mean_h: np.ndarray, m2_h: np.ndarray) -> None:
        if self.count is None or self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n_h, mean_h, m2_h
            return
        total_n = self.count + n_h
        safe = np.maximum(total_n, 1)
        delta = mean_h - self.mean
        self.mean = self.mean + delta * n_h / safe
        self.m2 = self.m2 + m2_h + delta * delta * self.count * n_h / safe
        self.count = total_n

    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0)."""
        assert self.count is not None and self.m2 is not None
        return np.sqrt(self.m2 / np.maximum(self.count, 1))


class FittedOp(Op):
    """Base of the ops that fit statistics per field: per statistic and field, a 1-D host array
    with one entry per channel (``per``).

    It holds what all of them share: the ``fields`` key, the statistics (:attr:`fitted`, by
    field, then by statistic), their check against the fields when the op is planned, the error
    when the op applies before it was fitted (:meth:`fitted_for`), and the round trip of what it
    fitted: :meth:`stats` and :meth:`load_stats`. A subclass names its statistics
    (:meth:`statistics`, none when its config fits nothing), plans with :meth:`plan_fields`,
    stores what it fits in :attr:`fitted`, and may check loaded statistics
    (:meth:`check_stats`).
    """

    unfitted: ClassVar[str] = "statistics"
    """What :meth:`fitted_for` says is missing when the op applies unfitted."""
    stats_in_field_dtype: ClassVar[bool] = False
    """The statistics are values of the field (bounds, fill values), held in its dtype; others
    are float64."""
    per: str = "none"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.fields = parse_fields(config, self.where)
        self.fitted: dict[str, dict[str, np.ndarray]] = {}
        self.specs: dict[str, Spec] = {}

    @abstractmethod
    def statistics(self) -> tuple[str, ...]:
        """The statistics recorded per field, in order (none: this config fits nothing)."""

    def accumulating(self, pass_index: int) -> tuple[str, ...]:
        """The attributes (dicts of field -> :class:`RunningMoments`, :class:`RunningMinMax` or
        :class:`Histogram`) that :meth:`fit_block` updates in pass ``pass_index``: what
        :meth:`fit_partial` sends and :meth:`fit_merge` adds."""
        return ()

    def fit_partial(self, pass_index: int) -> Any:
        found = {}
        for attr in self.accumulating(pass_index):
            found[attr] = {
                name: acc.partial() if isinstance(acc, Histogram) else acc
                for name, acc in getattr(self, attr).items()
            }
        return found

    def fit_merge(self, partial: Any, pass_index: int) -> None:
        for attr, accumulators in partial.items():
            mine = getattr(self, attr)
            for name, acc in accumulators.items():
                mine[name].merge(acc)

    def recorded_settings(self) -> dict[str, Any]:
        """Settings recorded beside each field's statistics (after them, before ``per``)."""
        return {}

    def check_stats(
        self, values: dict[str, np.ndarray], where: str, entry: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """Loaded statistics of one field (read from ``entry``), checked against each other and
        converted where needed; errors start with ``where``."""
        return values

    def plan_fields(self, specs: Mapping[str, Spec], numeric: str | None = None) -> None:
        """Check that the op's fields reach it (holding numbers of the dtype kinds ``numeric``,
        when given) and fit the statistics loaded so far to them."""
        require_fields(specs, self.fields, self.where)
        if numeric is not None:
            require_numeric(specs, self.fields, self.where, numeric)
        self.specs = {name: specs[name] for name in self.fields}
        for name in self.fields:
            if name in self.fitted:
                self.fitted[name] = self._adopt(name, self.fitted[name])

    def fitted_for(self, name: str) -> dict[str, np.ndarray]:
        """The statistics of field ``name``; an error when the op was neither fitted nor given
        statistics."""
        found = self.fitted.get(name)
        if found is None:
            raise ConfigError(
                f"{self.where}: no {self.unfitted} for field {name!r}; fit the op or load_stats "
                "first"
            )
        return found

    def stats(self) -> dict[str, Any]:
        if not self.statistics():
            return {}
        return {
            name: {
                **{key: stat_list(value) for key, value in found.items()},
                **self.recorded_settings(),
                "per": self.per,
            }
            for name in self.fields
            if (found := self.fitted.get(name))
        }

    def load_stats(self, stats: Mapping[str, Any]) -> None:
        """Restore statistics produced by :meth:`stats`, so that the op applies without
        fitting (it then fits nothing)."""
        names = self.statistics()
        if not names:
            return
        dtype = None if self.stats_in_field_dtype else np.float64
        for name in self.fields:
            where = f"{self.where} statistics of field {name!r}"
            entry = stats_entry(stats, name, self.per, where, " and ".join(names))
            values = {
                key: stat_array(entry.get(key), f"{where}, {key!r}", dtype=dtype) for key in names
            }
            values = self.check_stats(values, where, entry)
            self.fitted[name] = self._adopt(name, values) if name in self.specs else values
        self.fit_passes = 0

    def _adopt(self, name: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Statistics checked against the field they apply to, in its dtype if they are its
        values (exact: they were fitted in it)."""
        spec = self.specs[name]
        for value in values.values():
            check_stat_length(value, spec, self.per, self.where, name)
        if not self.stats_in_field_dtype:
            return values
        return {key: value.astype(spec.dtype) for key, value in values.items()}
