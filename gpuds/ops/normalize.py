"""``normalize``: map the fitted [min, max] of fields linearly onto a target range."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError
from gpuds.ops._stats import (
    RunningMinMax,
    as_channels,
    check_stat_length,
    parse_float_dtype,
    parse_per,
    refuse_infinite,
    require_numeric,
    stat_array,
    stat_list,
    stats_entry,
)
from gpuds.ops.base import Block, Op, Spec, parse_fields, parse_number, require_fields

__all__ = ["Normalize"]


class Normalize(Op):
    """Min-max scaling: map each channel's fitted ``[min, max]`` linearly onto ``range``.

    Fitting (one pass) finds, per field and per channel, the exact minimum and maximum of the
    non-NaN values (block-size independent: min and max merge exactly). Applying computes, in
    float64,

    ``low + (x - min) * (high - low) / (max - min)``

    and casts it to ``dtype``. A constant channel (``min == max``) maps to ``low``. Values outside
    the fitted ``[min, max]`` (e.g. in a split that was not fitted on) map outside ``range``: the
    op does not clamp; add ``clip`` after it if needed. NaN stays NaN. A channel with no non-NaN
    value, or holding ``±inf``, is an error while fitting, naming the field and channel
    (``clip`` or ``drop_invalid`` first). Bool, integer and float fields are accepted; category,
    label and mask fields are refused. The output field has dtype ``dtype``, the same shape and
    kind, and no attributes (a unit no longer applies). Other fields pass through unchanged.

    Config keys
    -----------
    fields : str or list of str
        The fields to normalize, each with its own statistics.
    per : {"none", "channel"}, default "none"
        ``"none"``: one min and max over all values of a field. ``"channel"``: one per entry of
        the last sample axis (image channel, feature column); a field of scalars has one.
    range : [low, high], default [0, 1]
        The target interval, two finite numbers with ``low < high``.
    dtype : {"float32", "float16", "float64"}, default "float32"
        The output dtype.

    Statistics
    ----------
    :meth:`stats` gives, per field, ``{"min": [...], "max": [...], "range": [low, high],
    "per": ...}`` with one entry per channel; :meth:`load_stats` restores them.

    Examples
    --------
    >>> import numpy as np
    >>> op = Normalize({"op": "normalize", "fields": "x", "range": [-1, 1]})
    >>> _ = op.plan({"x": Spec(np.dtype("uint8"), ())})
    >>> block = Block({"x": np.array([0, 51, 255], "uint8")}, np.arange(3))
    >>> op.fit_start(0); op.fit_block(block); op.fit_end(0)
    >>> op.apply(block).fields["x"].tolist()
    [-1.0, -0.6000000238418579, 1.0]
    """

    name = "normalize"
    keys = ("fields", "per", "range", "dtype")
    fit_passes = 1

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._where = f"op {self.name!r}"
        self.fields = parse_fields(config, self._where)
        self.per = parse_per(config, self._where)
        self.range = _parse_range(config.get("range", [0, 1]), self._where)
        self.dtype = parse_float_dtype(config, self._where)
        self.min: dict[str, np.ndarray] = {}
        self.max: dict[str, np.ndarray] = {}
        self._specs: dict[str, Spec] = {}
        self._ranges: dict[str, RunningMinMax] = {}

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        require_fields(specs, self.fields, self._where)
        require_numeric(specs, self.fields, self._where, "biuf")
        self._specs = {name: specs[name] for name in self.fields}
        self._check_loaded()
        out = dict(specs)
        for name in self.fields:
            spec = specs[name]
            out[name] = Spec(self.dtype, spec.sample_shape, spec.kind)
        return out

    def fit_start(self, pass_index: int) -> None:
        self._ranges = {name: RunningMinMax() for name in self.fields}

    def fit_block(self, block: Block) -> None:
        for name in self.fields:
            ranges = self._ranges[name]
            ranges.update(as_channels(block.fields[name], self.per))
            refuse_infinite(ranges, name, self._where, "its range is not finite")

    def fit_end(self, pass_index: int) -> None:
        for name in self.fields:
            lo, hi = self._ranges[name].result(name, self._where)
            self.min[name], self.max[name] = lo.astype(np.float64), hi.astype(np.float64)

    def apply(self, block: Block) -> Block:
        low, high = self.range
        fields = dict(block.fields)
        for name in self.fields:
            x = fields[name]
            xp = array_module(x)
            if name not in self.min:
                raise ConfigError(
                    f"{self._where}: no statistics for field {name!r}; fit the op or "
                    "load_stats first"
                )
            lo, span = self.min[name], self.max[name] - self.min[name]
            # A constant channel gets scale 0, so every value maps to `low`.
            scale = np.where(span > 0, (high - low) / np.where(span > 0, span, 1.0), 0.0)
            shifted = x.astype(xp.float64) - xp.asarray(lo)
            fields[name] = (low + shifted * xp.asarray(scale)).astype(self.dtype)
        return Block(fields, block.index, block.split)

    def stats(self) -> dict[str, Any]:
        return {
            name: {
                "min": stat_list(self.min[name]),
                "max": stat_list(self.max[name]),
                "range": list(self.range),
                "per": self.per,
            }
            for name in self.fields
            if name in self.min
        }

    def load_stats(self, stats: Mapping[str, Any]) -> None:
        """Restore statistics produced by :meth:`stats`, so the op applies without fitting."""
        for name in self.fields:
            where = f"{self._where} statistics of field {name!r}"
            entry = stats_entry(stats, name, self.per, where, "min and max")
            lo = stat_array(entry.get("min"), f"{where}, 'min'")
            hi = stat_array(entry.get("max"), f"{where}, 'max'")
            if len(lo) != len(hi) or (lo > hi).any():
                raise ConfigError(f"{where}: expected min <= max of one length, got {entry!r}")
            self.min[name], self.max[name] = lo, hi
        self._check_loaded()

    def _check_loaded(self) -> None:
        for name, spec in self._specs.items():
            if name in self.min:
                check_stat_length(self.min[name], spec, self.per, self._where, name)


def _parse_range(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{where}: expected 'range' to be [low, high], got {value!r}")
    low = parse_number(value[0], f"{where} key 'range'")
    high = parse_number(value[1], f"{where} key 'range'")
    if not low < high:
        raise ConfigError(f"{where}: expected 'range' [low, high] with low < high, got {value!r}")
    return low, high
