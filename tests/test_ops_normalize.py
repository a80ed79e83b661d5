"""normalize: min-max scaling onto a range with exact, block-size independent min and max."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError, SourceError
from gpuds.ops import make_op
from gpuds.ops.base import Block, Spec
from gpuds.ops.normalize import Normalize

from .opkit import run_op


def _op(**config: Any) -> Normalize:
    return Normalize({"op": "normalize", "fields": "x", **config})


def _reference(x: np.ndarray, axes: tuple[int, ...], low: float, high: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    lo, hi = np.nanmin(x64, axis=axes), np.nanmax(x64, axis=axes)
    return low + (x64 - lo) * ((high - low) / (hi - lo))


def _images(n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(11)
    x = rng.normal([0.0, 100.0, -5.0], [1.0, 30.0, 0.01], size=(n, 3, 4, 3)).astype(np.float32)
    x[4, 0, 0, 1] = np.nan
    x[20] = np.nan
    return x


@pytest.mark.parametrize("block", [1, 7, 50])
@pytest.mark.parametrize(("per", "axes"), [("none", (0, 1, 2, 3)), ("channel", (0, 1, 2))])
@pytest.mark.parametrize("target", [[0, 1], [-1, 1], [0.5, 255]])
def test_matches_numpy_reference(
    xp: Any, block: int, per: str, axes: tuple[int, ...], target: list[float]
) -> None:
    x = _images()
    other = np.arange(50, dtype=np.float32)
    op = _op(per=per, range=target)
    out, specs = run_op(op, {"x": x, "other": other}, block=block, xp=xp)
    assert out["x"].dtype == np.float32
    assert specs["x"] == Spec(np.dtype(np.float32), (3, 4, 3), "array")
    np.testing.assert_allclose(out["x"], _reference(x, axes, *target), rtol=1e-6, atol=1e-6)
    assert np.isnan(out["x"][20]).all() and np.isnan(out["x"][4, 0, 0, 1])
    assert np.nanmin(out["x"]) == target[0] and np.nanmax(out["x"]) == target[1]
    np.testing.assert_array_equal(out["other"], other)
    stats = op.stats()["x"]
    assert stats["min"] == np.nanmin(x.astype(np.float64), axis=axes).reshape(-1).tolist()
    assert stats["max"] == np.nanmax(x.astype(np.float64), axis=axes).reshape(-1).tolist()
    assert stats["range"] == [float(v) for v in target] and stats["per"] == per


def test_integer_input_and_dtype(xp: Any) -> None:
    x = np.random.default_rng(5).integers(-(2**40), 2**40, size=(33, 2), dtype=np.int64)
    out, specs = run_op(_op(per="channel", dtype="float64"), {"x": x}, block=5, xp=xp)
    assert specs["x"].dtype == np.float64
    np.testing.assert_allclose(out["x"], _reference(x, (0,), 0, 1), rtol=1e-12, atol=1e-15)
    pixels = np.array([[0, 255], [51, 255], [255, 255]], np.uint8)
    out, _ = run_op(_op(per="channel", dtype="float16"), {"x": pixels}, xp=xp)
    assert out["x"].dtype == np.float16
    # The constant second channel maps to the range's low end.
    np.testing.assert_array_equal(out["x"], np.array([[0, 0], [0.2, 0], [1, 0]], np.float16))


def test_values_outside_the_fit_are_not_clamped(xp: Any) -> None:
    op = _op(range=[0, 10])
    run_op(op, {"x": np.array([2.0, 4.0])}, xp=xp)
    out = op.apply(Block({"x": xp.asarray(np.array([0.0, 3.0, 6.0]))}, xp.arange(3)))
    values = out.fields["x"]
    values = values.get() if hasattr(values, "get") else values
    assert values.tolist() == [-10.0, 5.0, 20.0]


def test_unfit_data_is_an_error(xp: Any) -> None:
    x = np.random.default_rng(4).normal(size=(20, 3))
    x[:, 0] = np.nan
    with pytest.raises(SourceError, match=r"field 'x' channel 0 has no finite values to fit on"):
        run_op(_op(per="channel"), {"x": x}, xp=xp)
    x[:, 0] = 0.0
    x[9, 2] = np.inf
    with pytest.raises(SourceError, match=r"'x' channel 2 holds ±inf values, so its range is not"):
        run_op(_op(per="channel"), {"x": x}, xp=xp)
    with pytest.raises(SourceError, match=r"field 'x' holds ±inf.*before 'normalize'"):
        run_op(_op(), {"x": x}, xp=xp)


def test_config_and_field_errors() -> None:
    specs = {
        "x": Spec(np.dtype(np.float32), ()),
        "m": Spec(np.dtype(bool), (), "mask", {"mask_of": "x"}),
    }
    with pytest.raises(ConfigError, match=r"op 'normalize': expected 'range' to be \[low, high\]"):
        _op(range=[0, 1, 2])
    with pytest.raises(ConfigError, match=r"expected 'range' \[low, high\] with low < high"):
        _op(range=[1, 1])
    with pytest.raises(ConfigError, match=r"op 'normalize' key 'range': expected a number"):
        _op(range=[0, float("inf")])
    with pytest.raises(ConfigError, match=r"expected 'per' to be one of none, channel, got 'x'"):
        _op(per="x")
    with pytest.raises(ConfigError, match=r"expected 'dtype' to be one of float16"):
        _op(dtype="uint8")
    with pytest.raises(ConfigError, match=r"field 'm' is a mask field"):
        Normalize({"op": "normalize", "fields": "m"}).plan(specs)
    with pytest.raises(ConfigError, match=r"op 'normalize': no field\(s\) 'y'"):
        Normalize({"op": "normalize", "fields": ["y"]}).plan(specs)
    with pytest.raises(ConfigError, match=r"no statistics for field 'x'; fit the op or load_st"):
        _op().apply(Block({"x": np.zeros(2, np.float32)}, np.arange(2)))


def test_round_trip_without_refitting(xp: Any) -> None:
    x = _images(30)
    op = make_op({"op": "normalize", "fields": "x", "per": "channel", "range": [-1, 1]}, "s")
    first, _ = run_op(op, {"x": x}, block=3, xp=xp)
    stored = json.loads(json.dumps(op.stats()))
    again = Normalize(op.to_dict())
    assert again.to_dict() == op.to_dict()
    again.load_stats(stored)
    assert again.stats() == op.stats()
    again.plan({"x": Spec(x.dtype, x.shape[1:])})
    second = again.apply(Block({"x": xp.asarray(x)}, xp.arange(len(x)))).fields["x"]
    second = second.get() if hasattr(second, "get") else second
    np.testing.assert_array_equal(first["x"], second)
    with pytest.raises(ConfigError, match=r"have 3 channel\(s\), but the field has 1"):
        again.plan({"x": Spec(x.dtype, ())})
    with pytest.raises(ConfigError, match=r"expected min <= max of one length"):
        again.load_stats({"x": {**stored["x"], "max": [0.0]}})
    with pytest.raises(ConfigError, match=r"'min': expected a list of finite numbers"):
        again.load_stats({"x": {**stored["x"], "min": [0.0, None, 1.0]}})
