"""``standardize``: subtract the fitted mean and divide by the fitted standard deviation."""

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
    RunningMoments,
    as_channels,
    float_outputs,
    parse_float_dtype,
    parse_per,
    refuse_infinite,
)

__all__ = ["Standardize"]

DEFAULT_EPS = 1e-12


class Standardize(FittedOp):
    """Rescale fields to zero mean and unit standard deviation: ``(x - mean) / std``.

    Fitting (one pass) measures, per field and per channel, the count, mean and population
    standard deviation (``ddof=0``) of the non-NaN values in float64 with the pairwise update of
    Chan, Golub and LeVeque (:class:`~gpuds.ops.stats.RunningMoments`): every block is centred on
    its own mean before its squares are summed, so a large offset does not cancel the variance
    (values ``1e8 + N(0, 1)`` still give ``std ≈ 1``, where ``E[x²] - E[x]²`` gives noise), and
    the result does not depend on the block size beyond float rounding.

    Applying computes ``(float64(x) - mean) / scale`` and casts the result to ``dtype``;
    ``scale`` is the std, or 1 when the channel is (nearly) constant, so a constant channel
    becomes exactly 0 instead of NaN/inf:

    - a channel whose fitted min equals its max is constant: its mean is taken as that value and
      its std as 0 (exact, whatever float rounding did to the running mean);
    - a channel with ``std <= eps * |mean|`` varies no more than float64 rounding of its values
      would and is also divided by 1.

    NaN stays NaN. A channel with no non-NaN value, or holding ``±inf`` (so that mean or std is
    not finite), is an error while fitting, naming the field and channel; ``clip``,
    ``fill_missing`` or ``drop_invalid`` first. Bool, integer and float fields are accepted;
    category, label and mask fields (codes, not quantities) are refused. The output field has
    dtype ``dtype``, the same shape and kind, and no attributes (a unit no longer applies).
    Other fields pass through unchanged.

    Config keys
    -----------
    fields : str or list of str
        The fields to standardize, each with its own statistics.
    per : {"none", "channel"}, default "none"
        ``"none"``: one mean and std over all values of a field. ``"channel"``: one per entry of
        the last sample axis (image channel, feature column); a field of scalars has one.
    eps : float, default 1e-12
        Relative threshold under which a channel counts as constant (see above); ``>= 0``.
    dtype : {"float32", "float16", "float64"}, default "float32"
        The output dtype.

    Statistics
    ----------
    :meth:`stats` gives, per field, ``{"mean": [...], "std": [...], "count": [...], "per": ...}``
    with one entry per channel (``count`` = non-NaN values); :meth:`load_stats` restores them.

    Examples
    --------
    >>> import numpy as np
    >>> op = Standardize({"op": "standardize", "fields": "x", "dtype": "float64"})
    >>> _ = op.plan({"x": Spec(np.dtype("float64"), ())})
    >>> block = Block({"x": np.array([1.0, 2.0, 3.0, np.nan])}, np.arange(4))
    >>> op.fit_start(0); op.fit_block(block); op.fit_end(0)
    >>> op.apply(block).fields["x"].round(4).tolist()
    [-1.2247, 0.0, 1.2247, nan]
    """

    name = "standardize"
    keys = ("fields", "per", "eps", "dtype")
    fit_passes = 1

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.per = parse_per(config, self.where)
        self.eps = parse_number(
            config.get("eps", DEFAULT_EPS), f"{self.where} key 'eps'", minimum=0.0
        )
        self.dtype = parse_float_dtype(config, self.where)
        self._moments: dict[str, RunningMoments] = {}
        self._ranges: dict[str, RunningMinMax] = {}

    def statistics(self) -> tuple[str, ...]:
        return ("mean", "std", "count")

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        self.plan_fields(specs, numeric="biuf")
        return float_outputs(specs, self.fields, self.dtype)

    def accumulating(self, pass_index: int) -> tuple[str, ...]:
        return ("_moments", "_ranges")

    def fit_start(self, pass_index: int) -> None:
        self._moments = {name: RunningMoments() for name in self.fields}
        self._ranges = {name: RunningMinMax() for name in self.fields}

    def fit_block(self, block: Block) -> None:
        if len(block) == 0:
            return
        for name in self.fields:
            x2 = as_channels(block.fields[name], self.per)
            ranges = self._ranges[name]
            ranges.update(x2)
            # Checked before the moments see the values: inf - inf would only make NaN.
            refuse_infinite(ranges, name, self.where, "its mean and std are not finite")
            self._moments[name].update(x2, (0,))

    def fit_end(self, pass_index: int) -> None:
        for name in self.fields:
            moments, ranges = self._moments[name], self._ranges[name]
            lo, hi = ranges.result(name, self.where)
            assert moments.count is not None and moments.mean is not None
            constant = lo == hi
            self.fitted[name] = {
                "mean": np.where(constant, lo.astype(np.float64), moments.mean),
                "std": np.where(constant, 0.0, moments.std()),
                "count": moments.count.astype(np.int64),
            }

    def apply(self, block: Block) -> Block:
        fields = dict(block.fields)
        for name in self.fields:
            x = fields[name]
            xp = array_module(x)
            fitted = self.fitted_for(name)
            mean, std = fitted["mean"], fitted["std"]
            scale = np.where(std > self.eps * np.abs(mean), std, 1.0)
            centred = x.astype(xp.float64) - xp.asarray(mean)
            fields[name] = (centred / xp.asarray(scale)).astype(self.dtype)
        return block.with_fields(fields)

    def check_stats(
        self, values: dict[str, np.ndarray], where: str, entry: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        mean, std, count = values["mean"], values["std"], values["count"]
        if not len(mean) == len(std) == len(count) or (std < 0).any():
            raise ConfigError(
                f"{where}: expected mean, std (>= 0) and count of one length, got {entry!r}"
            )
        return {**values, "count": count.astype(np.int64)}
