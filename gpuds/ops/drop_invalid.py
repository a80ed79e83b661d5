"""``drop_invalid``: drop the samples that hold a missing or non-finite value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpuds.backend import array_module
from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Op, Spec, parse_fields, require_fields

__all__ = ["DropInvalid"]


@dataclass(frozen=True)
class _Check:
    """How one field tells an invalid sample: non-finite floats, a missing code, a mask."""

    field: str
    nonfinite: bool
    missing_code: int | None
    mask: str | None


class DropInvalid(Op):
    """Drop every sample that holds a missing or non-finite value in the chosen fields.

    A sample is dropped when, in any chosen field:

    - a floating-point (or complex) value anywhere in the sample is NaN, ``+inf`` or ``-inf``;
    - the field is a category (``kind="category"``) and its code equals the field's
      ``missing_code`` attribute (``-1`` when the attribute is absent);
    - the field has a missing-value mask companion (a bool field with attribute ``mask_of`` naming
      it, or a bool field named ``<field>.missing``, as the table reader writes for integer, bool,
      timestamp and date columns) and the mask is True for the sample.

    Every field of the kept samples passes through unchanged and stays aligned (the op selects
    samples with one boolean mask over the whole block); the mask companions stay too, all False
    after the op. Output dtypes and shapes equal the input ones.

    Config keys
    -----------
    fields : str or list of str, optional
        The fields to check. Default: every field that can hold an invalid value, i.e. float and
        complex fields, category fields and fields with a mask companion (not the masks
        themselves). With the default, a dataset with no such field passes through unchanged.
        Naming a field that cannot hold an invalid value (e.g. a plain integer field without a
        mask, or a mask field itself) is refused when the pipeline is planned.

    Counters
    --------
    :meth:`counts` reports, for the last apply pass, ``dropped`` and ``kept`` sample totals, and
    ``dropped_by_field``: per chosen field, the number of dropped samples that were invalid in
    that field (a sample invalid in two fields counts for both, so these may sum to more than
    ``dropped``).

    Examples
    --------
    >>> import numpy as np
    >>> op = DropInvalid({"op": "drop_invalid", "fields": "x"})
    >>> _ = op.plan({"x": Spec(np.dtype("float32"), ())})
    >>> out = op.apply(Block({"x": np.array([1.0, np.nan, 3.0], "float32")}, np.arange(3)))
    >>> out.fields["x"].tolist(), out.index.tolist(), op.counts()["dropped"]
    ([1.0, 3.0], [0, 2], 1)
    """

    name = "drop_invalid"
    drops = True
    keys = ("fields",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.fields = parse_fields(config, self.where, required=False)
        self._checks: list[_Check] = []
        self._dropped = 0
        self._kept = 0
        self._by_field: dict[str, int] = {}

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        require_fields(specs, self.fields, self.where)
        masks = _mask_companions(specs)
        if self.fields:
            checks = [self._check(name, specs, masks, explicit=True) for name in self.fields]
        else:
            checks = [self._check(name, specs, masks, explicit=False) for name in specs]
        self._checks = [c for c in checks if c is not None]
        self.reset()
        return specs

    def _check(
        self, name: str, specs: Mapping[str, Spec], masks: Mapping[str, str], *, explicit: bool
    ) -> _Check | None:
        spec = specs[name]
        nonfinite = spec.dtype.kind in "fc"
        missing_code: int | None = None
        if spec.kind == "category" or "missing_code" in spec.attrs:
            missing_code = int(spec.attrs.get("missing_code", -1))
        mask = masks.get(name)
        if nonfinite or missing_code is not None or mask is not None:
            return _Check(name, nonfinite, missing_code, mask)
        if not explicit:
            return None
        if spec.kind == "mask" or name in masks.values():
            owner = spec.attrs.get("mask_of") or name.removesuffix(".missing")
            raise ConfigError(
                f"{self.where}: field {name!r} is the missing-value mask of {owner!r}, not a "
                f"value that can be invalid; name {owner!r} in 'fields' instead"
            )
        raise ConfigError(
            f"{self.where}: field {name!r} ({spec.dtype}) cannot hold invalid values: it is not "
            f"floating-point, not a category and has no {name + '.missing'!r} mask field; "
            "remove it from 'fields'"
        )

    def reset(self) -> None:
        self._dropped = 0
        self._kept = 0
        self._by_field = {c.field: 0 for c in self._checks}

    def apply(self, block: Block) -> Block:
        if not self._checks or len(block) == 0:
            self._kept += len(block)
            return block
        xp = array_module(block.index)
        invalid = xp.zeros(len(block), dtype=bool)
        per_field = []
        for check in self._checks:
            bad = _invalid_samples(check, block)
            per_field.append(bad)
            invalid |= bad
        # One device-to-host sync for all counters of the block.
        totals = xp.stack([invalid, *per_field]).sum(axis=1).tolist()
        self._dropped += int(totals[0])
        self._kept += len(block) - int(totals[0])
        for check, n in zip(self._checks, totals[1:], strict=True):
            self._by_field[check.field] += int(n)
        if totals[0] == 0:
            return block
        return block.select(~invalid)

    def counts(self) -> dict[str, Any]:
        return {
            "dropped": self._dropped,
            "kept": self._kept,
            "dropped_by_field": dict(self._by_field),
        }


def _mask_companions(specs: Mapping[str, Spec]) -> dict[str, str]:
    """Field name → name of the bool field marking its missing values."""
    masks: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.dtype.kind != "b":
            continue
        owner = spec.attrs.get("mask_of")
        if spec.kind == "mask" and isinstance(owner, str) and owner in specs:
            masks[owner] = name
    for name in specs:
        companion = f"{name}.missing"
        if name not in masks and companion in specs and specs[companion].dtype.kind == "b":
            masks[name] = companion
    return masks


def _invalid_samples(check: _Check, block: Block) -> Any:
    """Boolean per sample: True where the sample is invalid in ``check.field``."""
    values = block.fields[check.field]
    xp = array_module(values)
    bad = xp.zeros(len(block), dtype=bool)
    if check.nonfinite:
        bad |= _any_per_sample(~xp.isfinite(values))
    if check.missing_code is not None:
        bad |= _any_per_sample(values == check.missing_code)
    if check.mask is not None:
        bad |= _any_per_sample(block.fields[check.mask].astype(bool))
    return bad


def _any_per_sample(flags: Any) -> Any:
    if flags.ndim == 1:
        return flags
    return flags.any(axis=tuple(range(1, flags.ndim)))
