"""``cast``: convert fields to another dtype, refusing any value the new dtype cannot hold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from gpuds.backend import array_module, to_host
from gpuds.errors import ConfigError, SourceError
from gpuds.ops.base import CODE_KINDS, Block, Op, Spec, parse_fields, require_fields
from gpuds.store import SUPPORTED_DTYPES

__all__ = ["DTYPES", "Cast"]

# Every dtype a field may have (docs/FORMAT.md) except complex: floats first, as listed to users.
DTYPES = tuple(
    d.name
    for d in sorted(
        (d for d in SUPPORTED_DTYPES if d.kind != "c"),
        key=lambda d: ("fiub".index(d.kind), d.itemsize),
    )
)
BFLOAT16 = (
    "bfloat16 is not supported: NumPy has no native bfloat16 dtype and Zarr v3 has no portable "
    "bfloat16 data type, so the store could not be read by other Zarr readers; use float16 "
    "(same size, more precision, smaller range) or float32"
)


class Cast(Op):
    """Convert fields to another dtype; a value the new dtype cannot hold is an error, not wrapped.

    Conversion rules:

    - **float → integer**: values are rounded to the nearest integer, ties to even (``2.5 → 2``,
      ``3.5 → 4``). NaN, ``±inf`` or a rounded value outside the integer dtype's range raises
      :class:`~gpuds.errors.SourceError` naming the field and the input sample index; run ``clip``
      (to bring values into range) or ``fill_missing`` (to replace NaN) before ``cast``.
    - **integer → integer**: values outside the new dtype's range (a negative value to an unsigned
      dtype, 300 to int8, ...) raise the same error. Widening casts are never checked.
    - **→ float**: integers and floats are rounded to the nearest float of the new dtype; a finite
      value that overflows it (``1e6`` to float16, ``70000`` to float16) raises the same error;
      NaN and ``±inf`` are kept.
    - **→ bool**: zero is False, anything else True; NaN raises the error (it is missing, not
      true).
    - **bool →** anything: False is 0, True is 1.

    A category, label or mask field (``kind`` ``"category"``, ``"label"``, ``"mask"``) holds codes,
    so it can only be cast to an integer dtype (a mask also to bool); when its vocabulary or class
    list is known, the dtype must hold every code (checked before any data is read), and its
    values are checked while casting as above. The field keeps its kind and attributes; all other
    fields pass through unchanged.

    Config keys
    -----------
    fields : str or list of str
        The fields to convert.
    dtype : str
        One of float16, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32,
        uint64, bool. ``bfloat16`` is refused: NumPy has no native bfloat16 and Zarr v3 has no
        portable bfloat16 data type; use float16 or float32.

    Examples
    --------
    >>> import numpy as np
    >>> op = Cast({"op": "cast", "fields": "x", "dtype": "int8"})
    >>> op.plan({"x": Spec(np.dtype("float32"), ())})["x"].dtype
    dtype('int8')
    >>> op.apply(Block({"x": np.array([0.5, 1.5, -2.5], "float32")}, np.arange(3))).fields["x"]
    array([ 0,  2, -2], dtype=int8)
    """

    name = "cast"
    keys = ("fields", "dtype")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.fields = parse_fields(config, self.where)
        name = config.get("dtype")
        if name == "bfloat16":
            raise ConfigError(f"{self.where}: {BFLOAT16}")
        if name not in DTYPES:
            raise ConfigError(
                f"{self.where}: expected 'dtype' to be one of {', '.join(DTYPES)}, got {name!r}"
            )
        self.dtype: np.dtype[Any] = np.dtype(str(name))

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        require_fields(specs, self.fields, self.where)
        out = dict(specs)
        for name in self.fields:
            spec = specs[name]
            if spec.dtype.kind not in "biuf":
                raise ConfigError(
                    f"{self.where}: field {name!r} has dtype {spec.dtype}, which cannot be cast; "
                    "only bool, integer and float fields can"
                )
            if spec.kind in CODE_KINDS:
                self._check_codes(name, spec)
            out[name] = replace(spec, dtype=self.dtype)
        return out

    def _check_codes(self, name: str, spec: Spec) -> None:
        allowed = "iub" if spec.kind == "mask" else "iu"
        if self.dtype.kind not in allowed:
            what = "an integer or bool" if spec.kind == "mask" else "an integer"
            raise ConfigError(
                f"{self.where}: field {name!r} is a {spec.kind} field (codes), so it can only be "
                f"cast to {what} dtype, got {self.dtype}"
            )
        names = spec.attrs.get("vocabulary", spec.attrs.get("classes"))
        if self.dtype.kind in "iu" and isinstance(names, list) and names:
            largest = len(names) - 1
            if largest > np.iinfo(self.dtype).max:
                raise ConfigError(
                    f"{self.where}: field {name!r} has {len(names)} {spec.kind} codes, up to "
                    f"{largest}, which {self.dtype} cannot hold; use a wider integer dtype"
                )

    def apply(self, block: Block) -> Block:
        fields = dict(block.fields)
        for name in self.fields:
            fields[name] = self._cast(fields[name], name, block)
        return block.with_fields(fields)

    def _cast(self, x: Any, name: str, block: Block) -> Any:
        xp = array_module(x)
        src, dst = x.dtype, self.dtype
        if src == dst:
            return x
        if src.kind == "b":
            return x.astype(dst)
        if dst.kind == "b":
            if src.kind == "f":
                self._check(xp.isnan(x), x, name, block)
            return x != 0
        if dst.kind in "iu":
            info = np.iinfo(dst)
            if src.kind == "f":
                # Bounds as float64 powers of two: exact, unlike iinfo(int64).max in float64.
                rounded = xp.rint(x.astype(xp.float64))
                inside = (rounded >= float(info.min)) & (rounded < float(info.max) + 1.0)
                self._check(~inside, x, name, block)
                return rounded.astype(dst)
            src_info = np.iinfo(src)
            # Only the bounds the source range can cross are compared, so each bound is a
            # value of the source dtype (no overflow in the comparison).
            if src_info.min < info.min:
                self._check(x < info.min, x, name, block)
            if src_info.max > info.max:
                self._check(x > info.max, x, name, block)
            return x.astype(dst)
        with np.errstate(over="ignore"):  # overflow is reported below, with the sample
            out = x.astype(dst)
        limit = float(np.finfo(dst).max)
        if src.kind == "f" and src.itemsize > dst.itemsize:
            self._check(xp.isinf(out) & xp.isfinite(x), x, name, block)
        elif src.kind in "iu" and np.iinfo(src).max > limit:
            self._check(xp.isinf(out), x, name, block)
        return out

    def _check(self, bad: Any, x: Any, name: str, block: Block) -> None:
        """Raise the data error if any value is flagged (one device sync per check)."""
        if not bool(bad.any()):
            return
        n = bad.shape[0]
        per_sample = bad.reshape(n, -1).any(axis=1)
        row = int(to_host(per_sample.argmax()))
        col = int(to_host(bad[row].reshape(-1).argmax()))
        value = to_host(x[row].reshape(-1)[col : col + 1])[0].item()
        sample = int(to_host(block.index[row]))
        dst = self.dtype
        if isinstance(value, float) and not math.isfinite(value):
            what = f"{value} has no {dst} value"
        elif dst.kind in "iu":
            info = np.iinfo(dst)
            what = f"{value!r} is outside the range of {dst} ({info.min}..{info.max})"
        else:
            what = f"{value!r} overflows {dst} (largest {float(np.finfo(dst).max):g})"
        raise SourceError(
            f"{self.where}: field {name!r}, input sample {sample}: value {what}; "
            f"run 'clip' (to bring values into range) or 'fill_missing' (to replace NaN) "
            f"before 'cast'"
        )
