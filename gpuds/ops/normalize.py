"""``normalize``: map the fitted [min, max] of fields linearly onto a target range."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Spec, parse_number
from gpuds.ops.stats import (
    FittedOp,
    RunningMinMax,
    as_channels,
    float_outputs,
    parse_float_dtype,
    parse_per,
    refuse_infinite,
)

__all__ = ["Normalize"]


class Normalize(FittedOp):
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
        self.per = parse_per(config, self.where)
        self.range = _parse_range(config.get("range", [0, 1]), self.where)
        self.dtype = parse_float_dtype(config, self.where)
        self._ranges: dict[str, RunningMinMax] = {}

    def statistics(self) -> tuple[str, ...]:
        return ("min", "max")

    def recorded_settings(self) -> dict[str, Any]:
        return {"range": list(self.range)}

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        self.plan_fields(specs, numeric="biuf")
        return float_outputs(specs, self.fields, self.dtype)

    def accumulating(self, pass_index: int) -> tuple[str, ...]:
        return ("_ranges",)

    def fit_start(self, pass_index: int) -> None:
        self._ranges = {name: RunningMinMax() for name in self.fields}

    def fit_block(self, block: Block) -> None:
        for name in self.fields:
            ranges = self._ranges[name]
            ranges.update(as_channels(block.fields[name], self.per))
            refuse_infinite(ranges, name, self.where, "its range is not finite")

    def fit_end(self, pass_index: int) -> None:
        for name in self.fields:
            lo, hi = self._ranges[name].result(name, self.where)
            self.fitted[name] = {"min": lo.astype(np.float64), "max": hi.astype(np.float64)}

    def apply(self, block: Block) -> Block:
        low, high = self.range
        fields = dict(block.fields)
        for name in self.fields:
            x = fields[name]
            xp = array_module(x)
            fitted = self.fitted_for(name)
            lo, span = fitted["min"], fitted["max"] - fitted["min"]
            # A constant channel gets scale 0, so every value maps to `low`.
            scale = np.where(span > 0, (high - low) / np.where(span > 0, span, 1.0), 0.0)
            shifted = x.astype(xp.float64) - xp.asarray(lo)
            fields[name] = (low + shifted * xp.asarray(scale)).astype(self.dtype)
        return block.with_fields(fields)

    def check_stats(
        self, values: dict[str, np.ndarray], where: str, entry: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        lo, hi = values["min"], values["max"]
        if len(lo) != len(hi) or (lo > hi).any():
            raise ConfigError(f"{where}: expected min <= max of one length, got {entry!r}")
        return values


def _parse_range(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{where}: expected 'range' to be [low, high], got {value!r}")
    low = parse_number(value[0], f"{where} key 'range'")
    high = parse_number(value[1], f"{where} key 'range'")
    if not low < high:
        raise ConfigError(f"{where}: expected 'range' [low, high] with low < high, got {value!r}")
    return low, high
