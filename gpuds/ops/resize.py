"""``resize`` and ``center_crop``: change the height and width of image fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Op, Spec, parse_fields, require_fields

__all__ = ["CenterCrop", "Resize"]

INTERPOLATIONS = ("bilinear", "nearest")


class Resize(Op):
    """Resize image fields to ``size`` by bilinear or nearest-neighbour sampling.

    Applies to fields of images, ``(N, H, W, C)`` or ``(N, H, W)`` (per-sample shape ``(H, W, C)``
    or ``(H, W)``); the output has per-sample shape ``(H', W', C)`` or ``(H', W')``. Any other
    field named is refused when the pipeline is planned.

    Sampling follows the half-pixel-centre convention (``align_corners=False`` in PyTorch, the
    convention of OpenCV and Pillow): output pixel ``d`` along an axis of input length ``n`` and
    output length ``m`` samples the input at ``s = (d + 0.5) * n / m - 0.5``, clamped to
    ``[0, n - 1]``.

    - ``bilinear``: the value at ``s`` interpolated linearly between input pixels ``floor(s)`` and
      ``floor(s) + 1`` along the height, then along the width. A linear ramp is reproduced exactly
      (up to float rounding). A NaN or infinite input affects only the output pixels that give it
      a non-zero weight (an identity resize returns its input unchanged).
    - ``nearest``: input pixel ``floor((d + 0.5) * n / m)`` (computed in integers, exact); values
      are copied, never computed.

    There is **no antialiasing**: a downscale by more than 2x samples only some input pixels and
    aliases (moiré, jagged edges). For large reductions, resize when ingesting
    (``gpuds ingest --resize HxW --filter lanczos``, Pillow's filters do antialias).

    Precision: bilinear sampling computes in float32 (float64 when the input or output dtype is
    float64 or an integer wider than 16 bits, which float32 cannot hold exactly). The result on
    NumPy and CuPy is the same within 1e-5 relative for float outputs and within ±1 for integer
    outputs (the float rounding can tip a value that lies near ``k + 0.5``).

    Config keys
    -----------
    size : [height, width] or "HxW"
        Output height and width, positive integers (required).
    fields : str or list of str, optional
        The image fields to resize. Default: every field of kind ``image``.
    interpolation : "bilinear" or "nearest", default "bilinear"
        Bool fields (masks) accept only ``nearest``.
    dtype : str, optional
        Output dtype (``"uint8"``, ``"float32"``, ...). Default: the input dtype. An integer output
        is rounded half to even and clipped to the dtype's range (0..255 for ``uint8``); a float
        output keeps the computed precision. A NaN converted to an integer dtype gives an
        unspecified value: run ``fill_missing`` or ``drop_invalid`` first.

    Examples
    --------
    >>> op = Resize({"op": "resize", "fields": "images", "size": "2x2"})
    >>> _ = op.plan({"images": Spec(np.dtype("uint8"), (4, 4, 1), "image")})
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    >>> op.apply(Block({"images": x}, np.arange(1))).fields["images"][0, :, :, 0].tolist()
    [[2, 4], [10, 12]]
    """

    name = "resize"
    keys = ("fields", "size", "interpolation", "dtype")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.fields = parse_fields(config, self.where, required=False)
        self.size = _parse_size(config, self.where)
        interpolation = config.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"{self.where}: expected 'interpolation' to be one of "
                f"{', '.join(INTERPOLATIONS)}, got {interpolation!r}"
            )
        self.interpolation: str = interpolation
        self.dtype = _parse_dtype(config.get("dtype"), self.where)
        self._out: dict[str, np.dtype[Any]] = {}

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        names = _image_fields(specs, self.fields, self.where)
        out = dict(specs)
        self._out = {}
        for name in names:
            spec = specs[name]
            if spec.dtype.kind not in "biuf" or (
                spec.dtype.kind == "b" and self.interpolation != "nearest"
            ):
                raise ConfigError(
                    f"{self.where}: field {name!r} has dtype {spec.dtype}, which "
                    f"{self.interpolation} resizing does not support; it needs integers or "
                    "floats (bool masks: use interpolation 'nearest')"
                )
            dtype = self.dtype if self.dtype is not None else spec.dtype
            self._out[name] = dtype
            shape = self.size + spec.sample_shape[2:]
            out[name] = dataclasses.replace(spec, dtype=dtype, sample_shape=shape)
        return out

    def apply(self, block: Block) -> Block:
        fields = dict(block.fields)
        for name, dtype in self._out.items():
            fields[name] = self._resize(fields[name], dtype)
        return block.with_fields(fields)

    def _resize(self, x: Any, dtype: np.dtype[Any]) -> Any:
        xp = array_module(x)
        (h_in, w_in), (h_out, w_out) = x.shape[1:3], self.size
        if self.interpolation == "nearest":
            rows = _nearest_indices(xp, h_in, h_out)
            cols = _nearest_indices(xp, w_in, w_out)
            return _convert(xp.take(xp.take(x, rows, axis=1), cols, axis=2), dtype)
        wide = (x.dtype, dtype)
        compute = xp.float64 if any(_needs_float64(d) for d in wide) else xp.float32
        y = x.astype(compute, copy=False)
        y = _lerp_axis(y, *_linear_weights(xp, h_in, h_out, compute), axis=1)
        y = _lerp_axis(y, *_linear_weights(xp, w_in, w_out, compute), axis=2)
        return _convert(y, dtype)


class CenterCrop(Op):
    """Crop the centre ``size`` of image fields.

    Applies to fields of images, ``(N, H, W, C)`` or ``(N, H, W)``. The crop of height ``h`` and
    width ``w`` starts at row ``(H - h) // 2`` and column ``(W - w) // 2`` (when the margin is
    odd, the extra row or column is cut at the bottom or right). Values and dtype are unchanged;
    the output has per-sample shape ``(h, w, C)`` or ``(h, w)``. A crop larger than the image in
    either dimension is refused when the pipeline is planned.

    Config keys
    -----------
    size : [height, width] or "HxW"
        Crop height and width, positive integers (required).
    fields : str or list of str, optional
        The image fields to crop. Default: every field of kind ``image``.

    Examples
    --------
    >>> op = CenterCrop({"op": "center_crop", "fields": "images", "size": [2, 2]})
    >>> _ = op.plan({"images": Spec(np.dtype("uint8"), (4, 4), "image")})
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    >>> op.apply(Block({"images": x}, np.arange(1))).fields["images"][0].tolist()
    [[5, 6], [9, 10]]
    """

    name = "center_crop"
    keys = ("fields", "size")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.fields = parse_fields(config, self.where, required=False)
        self.size = _parse_size(config, self.where)
        self._offsets: dict[str, tuple[int, int]] = {}

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        names = _image_fields(specs, self.fields, self.where)
        out = dict(specs)
        self._offsets = {}
        h, w = self.size
        for name in names:
            spec = specs[name]
            height, width = spec.sample_shape[:2]
            if h > height or w > width:
                raise ConfigError(
                    f"{self.where}: crop {h}x{w} is larger than field {name!r} "
                    f"({height}x{width}); choose a size at most {height}x{width}, or resize first"
                )
            self._offsets[name] = ((height - h) // 2, (width - w) // 2)
            out[name] = dataclasses.replace(spec, sample_shape=self.size + spec.sample_shape[2:])
        return out

    def apply(self, block: Block) -> Block:
        fields = dict(block.fields)
        h, w = self.size
        for name, (top, left) in self._offsets.items():
            fields[name] = fields[name][:, top : top + h, left : left + w]
        return block.with_fields(fields)


def _parse_size(config: Mapping[str, Any], where: str) -> tuple[int, int]:
    """``size`` as ``[height, width]`` or ``"HxW"``, both positive integers."""
    if "size" not in config:
        raise ConfigError(f"{where}: missing key 'size' ([height, width] or \"HxW\")")
    value = config["size"]
    parts: list[Any] = []
    if isinstance(value, str):
        text = value.lower().split("x")
        if len(text) == 2 and all(t.strip().isdigit() for t in text):
            parts = [int(t) for t in text]
    elif isinstance(value, list | tuple):
        parts = list(value)
    if len(parts) != 2 or not all(
        isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in parts
    ):
        raise ConfigError(
            f"{where}: expected 'size' to be [height, width] or \"HxW\" with positive integers, "
            f"got {value!r}"
        )
    return int(parts[0]), int(parts[1])


def _parse_dtype(value: Any, where: str) -> np.dtype[Any] | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value) if isinstance(value, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "iuf":
        raise ConfigError(
            f"{where}: expected 'dtype' to be an integer or float dtype name such as 'uint8' or "
            f"'float32', got {value!r}"
        )
    return dtype


def _image_fields(specs: Mapping[str, Spec], fields: list[str], where: str) -> list[str]:
    """The image fields the op works on, each checked to be ``(H, W)`` or ``(H, W, C)``."""
    require_fields(specs, fields, where)
    names = fields or [n for n, s in specs.items() if s.kind == "image"]
    if not names:
        raise ConfigError(
            f"{where}: no field of kind 'image' at this point; name the fields to use with "
            f"'fields' (available: {', '.join(specs) or '(none)'})"
        )
    for name in names:
        shape = specs[name].sample_shape
        if len(shape) not in (2, 3):
            raise ConfigError(
                f"{where}: field {name!r} has per-sample shape {shape}, not an image; expected "
                "(height, width, channels) or (height, width)"
            )
    return names


def _nearest_indices(xp: Any, n_in: int, n_out: int) -> Any:
    """``floor((d + 0.5) * n_in / n_out)`` for each output position ``d``, in exact integers."""
    d = xp.arange(n_out, dtype=xp.int64)
    return ((2 * d + 1) * n_in) // (2 * n_out)


def _linear_weights(xp: Any, n_in: int, n_out: int, dtype: Any) -> tuple[Any, Any, Any]:
    """Left and right input indices and the right weight of each output position."""
    # Positions in float64 so indices are exact for any size; weights in the compute dtype.
    src = (xp.arange(n_out, dtype=xp.float64) + 0.5) * (n_in / n_out) - 0.5
    src = xp.clip(src, 0.0, n_in - 1.0)
    left = xp.floor(src).astype(xp.int64)
    right = xp.minimum(left + 1, n_in - 1)
    return left, right, (src - left).astype(dtype)


def _lerp_axis(x: Any, left: Any, right: Any, weight: Any, *, axis: int) -> Any:
    xp = array_module(x)
    a = xp.take(x, left, axis=axis)
    b = xp.take(x, right, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    # A zero weight must ignore its neighbour entirely (NaN * 0 would still be NaN); the discarded
    # branch may compute inf * 0, whose NumPy warning would be noise.
    with np.errstate(invalid="ignore"):
        return xp.where(weight == 0, a, a * (1 - weight) + b * weight)


def _needs_float64(dtype: np.dtype[Any]) -> bool:
    return dtype.itemsize > 4 if dtype.kind == "f" else dtype.itemsize > 2


def _convert(y: Any, dtype: np.dtype[Any]) -> Any:
    """Cast to ``dtype``; integer targets are rounded half to even and clipped to their range."""
    if y.dtype == dtype:
        return y
    if dtype.kind in "iu" and y.dtype.kind in "iuf":
        xp = array_module(y)
        info = np.iinfo(dtype)
        if y.dtype.kind == "f":
            y = xp.rint(y)
            lo, hi = _float_bounds(info, y.dtype)
        else:
            source = np.iinfo(y.dtype)
            lo, hi = max(info.min, source.min), min(info.max, source.max)
        y = xp.clip(y, lo, hi)
    return y.astype(dtype)


def _float_bounds(info: np.iinfo, dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """The integer range as floats of ``dtype`` that cast back without overflow."""
    kind = dtype.type
    hi = kind(info.max)
    # float(2**63 - 1) rounds up to 2**63, which overflows int64: step down to the float below.
    if int(hi) > info.max:
        hi = np.nextafter(hi, kind(0))
    return kind(info.min), hi
