"""``fill_missing``: replace missing values by a constant or by the fitted mean or median."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuds.backend import array_module, to_host
from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Spec
from gpuds.ops.stats import (
    FittedOp,
    Histogram,
    RunningMinMax,
    RunningMoments,
    as_channels,
    parse_per,
    refuse_infinite,
)

__all__ = ["STRATEGIES", "FillMissing"]

STRATEGIES = ("constant", "mean", "median")


@dataclass(frozen=True)
class _Target:
    """How missing values of one field are told apart: NaN, a mask companion, or a code."""

    dtype: np.dtype[Any]
    nan: bool
    mask: str | None
    code: int | None


class FillMissing(FittedOp):
    """Replace missing values by a constant, or by the mean or median of the present values.

    What is missing depends on the field:

    - **float** fields: NaN, and also values marked by a mask companion if the field has one;
    - **integer and bool** fields: values marked True in the field's mask companion, the bool
      field ``<name>.missing`` (or a ``kind="mask"`` field whose ``mask_of`` attribute names it),
      as the table reader writes for integer, bool, timestamp and date columns. A mask may hold
      one flag per value (same sample shape) or one per sample. An integer field without a mask
      is refused when the pipeline is planned: it has no missing values to fill;
    - **category** fields (``kind="category"``): the code ``missing_code`` (attribute, default
      ``-1``); only ``strategy: constant`` applies, and ``value`` is a code ``>= 0`` or a string
      of the field's ``vocabulary`` attribute (replaced by its code).

    Label and mask fields are refused (a sample without a label should be dropped with
    ``drop_invalid``, not imputed). The filled field keeps its dtype, shape, kind and attributes;
    the mask companion is left as it is, so it still records which values were imputed. Every
    other field passes through unchanged.

    ``mean`` and ``median`` are fitted over the present values only (NaN and masked values
    excluded), per field, over all its values (``per: none``) or per entry of the last sample
    axis (``per: channel``):

    - ``mean``: one pass, float64, Chan/Golub/LeVeque pairwise merge (block-size independent up
      to float rounding);
    - ``median``: two passes with the histogram of ``clip`` (exact min/max, then ``2**16`` bins),
      defined as :func:`numpy.median` defines it (mean of the two middle values for an even
      count). It is **exact** for integer and bool fields whose values span fewer than ``2**16``
      integers (and magnitudes below ``2**53``), and within half a bin width
      ``(max - min) / 2**17`` of the exact median otherwise. ``±inf`` count as below/above every
      finite value.

    For integer fields the fitted value is rounded to the nearest integer, ties to even (for bool
    fields: the majority value, ties to False); for float fields it is stored in the field's
    dtype. A channel with no present value, or a mean that is not finite (``±inf`` in the data),
    is an error while fitting, naming the field and channel.

    Config keys
    -----------
    fields : str or list of str
        The fields to fill.
    strategy : {"constant", "mean", "median"}, default "constant"
        Where the fill value comes from.
    value : number or str
        The fill value, required with ``strategy: constant`` and refused otherwise. It must be
        representable in the field's dtype (an integer for integer fields, within range; True,
        False, 0 or 1 for bool fields); a string only for a category field.
    per : {"none", "channel"}, default "none"
        For ``mean``/``median``: one value per field, or one per channel.

    Statistics and counters
    -----------------------
    With ``mean``/``median``, :meth:`stats` gives per field ``{"value": [...], "per": ...}`` (the
    fill value per channel, in the field's dtype); :meth:`load_stats` restores it. :meth:`counts`
    reports ``filled``: the number of values replaced in the last apply pass.

    Examples
    --------
    >>> import numpy as np
    >>> op = FillMissing({"op": "fill_missing", "fields": "x", "value": 0})
    >>> _ = op.plan({"x": Spec(np.dtype("float32"), ())})
    >>> op.apply(Block({"x": np.array([1.5, np.nan], "float32")}, np.arange(2))).fields["x"]
    array([1.5, 0. ], dtype=float32)
    """

    name = "fill_missing"
    keys = ("fields", "strategy", "value", "per")
    unfitted = "fill value"
    stats_in_field_dtype = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        w = self.where
        self.strategy = config.get("strategy", "constant")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"{w}: expected 'strategy' to be one of {', '.join(STRATEGIES)}, "
                f"got {self.strategy!r}"
            )
        self.value = config.get("value")
        if self.strategy == "constant":
            if self.value is None:
                raise ConfigError(
                    f"{w}: strategy 'constant' needs 'value' (the fill value), or use strategy "
                    "'mean' or 'median'"
                )
            valid = isinstance(self.value, str | int | float)
            if not valid or (isinstance(self.value, float) and not math.isfinite(self.value)):
                raise ConfigError(
                    f"{w}: expected 'value' to be a finite number or a category string, "
                    f"got {self.value!r}"
                )
            if "per" in config:
                raise ConfigError(f"{w}: 'per' applies to strategies 'mean' and 'median' only")
        elif self.value is not None:
            raise ConfigError(
                f"{w}: 'value' applies to strategy 'constant' only, got strategy "
                f"{self.strategy!r} with value {self.value!r}"
            )
        self.per = parse_per(config, w)
        # Mean needs one pass, median two (min and max, then the histogram).
        self.fit_passes = {"constant": 0, "mean": 1, "median": 2}[self.strategy]
        self._targets: dict[str, _Target] = {}
        self._ranges: dict[str, RunningMinMax] = {}
        self._moments: dict[str, RunningMoments] = {}
        self._histograms: dict[str, Histogram] = {}
        self._filled: Any = 0

    def statistics(self) -> tuple[str, ...]:
        return () if self.strategy == "constant" else ("value",)

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        self.plan_fields(specs)
        self._targets = {name: self._target(name, specs) for name in self.fields}
        if self.strategy == "constant":
            # The configured value, as the field holds it (fitted by no pass).
            self.fitted = {
                name: {"value": self._constant(name, specs[name])} for name in self.fields
            }
        return specs

    def _target(self, name: str, specs: Mapping[str, Spec]) -> _Target:
        spec = specs[name]
        w = self.where
        if spec.kind in ("label", "mask"):
            raise ConfigError(
                f"{w}: field {name!r} is a {spec.kind} field, which is not imputed; drop the "
                "samples with missing values ('drop_invalid') instead"
            )
        if spec.kind == "category":
            if self.strategy != "constant":
                raise ConfigError(
                    f"{w}: field {name!r} is a category field; only strategy 'constant' (a code "
                    f"or a vocabulary string as 'value') applies, got {self.strategy!r}"
                )
            return _Target(spec.dtype, False, None, int(spec.attrs.get("missing_code", -1)))
        if spec.dtype.kind not in "biuf":
            raise ConfigError(
                f"{w}: field {name!r} has dtype {spec.dtype}; only bool, integer, float and "
                "category fields can be filled"
            )
        mask = _mask_of(name, specs)
        if mask is not None:
            shape = specs[mask].sample_shape
            if shape not in ((), spec.sample_shape):
                raise ConfigError(
                    f"{w}: the mask {mask!r} of field {name!r} has sample shape {shape}, expected "
                    f"() or {spec.sample_shape}"
                )
        if spec.dtype.kind != "f" and mask is None:
            raise ConfigError(
                f"{w}: field {name!r} has no missing values to fill (no NaN possible in "
                f"{spec.dtype} and no {name + '.missing'!r} mask)"
            )
        return _Target(spec.dtype, spec.dtype.kind == "f", mask, None)

    def _constant(self, name: str, spec: Spec) -> np.ndarray:
        """The configured value as a one-element array of the field's dtype, or an error."""
        value, w = self.value, f"{self.where}: 'value' {self.value!r} for field {name!r}"
        if spec.kind == "category":
            vocabulary = spec.attrs.get("vocabulary")
            if isinstance(value, str):
                if not isinstance(vocabulary, list) or value not in vocabulary:
                    raise ConfigError(
                        f"{w}: not in the field's vocabulary "
                        f"{_preview(vocabulary) if isinstance(vocabulary, list) else '(none)'}"
                    )
                value = vocabulary.index(value)
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{w}: expected a category code >= 0 or a vocabulary string")
            elif isinstance(vocabulary, list) and value >= len(vocabulary):
                raise ConfigError(
                    f"{w}: expected a code below the vocabulary size {len(vocabulary)}"
                )
        elif isinstance(value, str):
            raise ConfigError(f"{w}: a string fills category fields only; give a number")
        assert isinstance(value, int | float)  # checked in __init__
        return _in_dtype(value, spec.dtype, w)

    def accumulating(self, pass_index: int) -> tuple[str, ...]:
        if self.strategy == "mean":
            return ("_moments", "_ranges")
        return ("_ranges",) if pass_index == 0 else ("_histograms",)

    def fit_start(self, pass_index: int) -> None:
        if pass_index == 0:
            self._moments = {name: RunningMoments() for name in self.fields}
            self._ranges = {name: RunningMinMax() for name in self.fields}
            self._histograms = {}

    def fit_block(self, block: Block) -> None:
        if len(block) == 0:
            return
        for name in self.fields:
            x = block.fields[name]
            xp = array_module(x)
            present = ~self._missing(name, block)
            x2, ok2 = as_channels(x, self.per), as_channels(present, self.per).astype(bool)
            if self.strategy == "mean":
                ranges = self._ranges[name]
                ranges.update(x2, ok2)
                # Checked before the moments see the values: inf - inf would only make NaN.
                refuse_infinite(ranges, name, self.where, "its mean is not finite")
                self._moments[name].update(xp.where(ok2, x2.astype(xp.float64), xp.nan), (0,))
            elif name in self._histograms:
                self._histograms[name].update(x2, ok2)
            else:
                self._ranges[name].update(x2, ok2)

    def fit_end(self, pass_index: int) -> None:
        for name in self.fields:
            if self.strategy == "median" and pass_index == 0:
                lo, hi = self._ranges[name].result(name, self.where)
                self._histograms[name] = Histogram(lo, hi)
                continue
            if self.strategy == "median":
                value = self._histograms.pop(name).median()
            else:
                self._ranges[name].result(name, self.where)  # every channel has a value
                mean = self._moments[name].mean
                assert mean is not None
                value = mean
            dtype = self.specs[name].dtype
            if dtype.kind in "biu":
                value = np.rint(value)
            self.fitted[name] = {"value": value.astype(dtype)}

    def reset(self) -> None:
        self._filled = 0

    def apply(self, block: Block) -> Block:
        fields = dict(block.fields)
        for name in self.fields:
            x = fields[name]
            xp = array_module(x)
            fill = self.fitted_for(name)["value"]
            missing = self._missing(name, block)
            self._filled = self._filled + missing.sum()
            fields[name] = xp.where(missing, xp.asarray(fill), x)
        return block.with_fields(fields)

    def _missing(self, name: str, block: Block) -> Any:
        """Boolean, shaped like the field: True where a value is missing."""
        target = self._targets[name]
        x = block.fields[name]
        xp = array_module(x)
        if target.code is not None:
            return x == target.code
        missing = xp.isnan(x) if target.nan else xp.zeros(x.shape, dtype=bool)
        if target.mask is not None:
            flags = block.fields[target.mask].astype(bool)
            flags = flags.reshape(flags.shape + (1,) * (x.ndim - flags.ndim))
            missing = missing | flags
        return missing

    def counts(self) -> dict[str, int]:
        return {"filled": int(to_host(self._filled))}


def _mask_of(name: str, specs: Mapping[str, Spec]) -> str | None:
    """The mask of ``name``: a mask field whose ``mask_of`` names it, or ``<name>.missing``."""
    for other, spec in specs.items():
        if spec.kind == "mask" and spec.attrs.get("mask_of") == name:
            return other
    companion = f"{name}.missing"
    found = specs.get(companion)
    if found is not None and (found.kind == "mask" or found.dtype.kind == "b"):
        return companion
    return None


def _in_dtype(value: int | float, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """``value`` as a one-element array of ``dtype``, refusing anything it would change."""
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            out = np.array([float(value) if abs(value) < 1e300 else math.inf], dtype=dtype)
        if not np.isfinite(out).all():
            raise ConfigError(f"{where}: beyond the range of {dtype}")
        return out
    if dtype.kind == "b":
        if value not in (0, 1):
            raise ConfigError(f"{where}: expected True, False, 0 or 1 for a bool field")
        return np.array([bool(value)])
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer for a {dtype} field")
    info = np.iinfo(dtype)
    if not info.min <= value <= info.max:
        raise ConfigError(f"{where}: outside the range of {dtype} ({info.min}..{info.max})")
    return np.array([value], dtype=dtype)


def _preview(names: list[Any]) -> str:
    shown = ", ".join(map(repr, names[:10]))
    return f"[{shown}{', ...' if len(names) > 10 else ''}] ({len(names)} values)"
