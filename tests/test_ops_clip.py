"""clip: fixed bounds, and percentiles fitted with a histogram (exact for small-span integers)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError, SourceError
from gpuds.ops import make_op
from gpuds.ops.base import Block, Spec
from gpuds.ops.clip import Clip

from .opkit import run_op


def _op(**config: Any) -> Clip:
    return Clip({"op": "clip", "fields": "x", **config})


PERCENTS = [(0, 100), (1, 99), (2.5, 97.5), (33.3, 50), (50, 50), (0.01, 99.99)]


@pytest.mark.parametrize("block", [1, 7, 400])
def test_fixed_bounds(xp: Any, block: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(400, 2)).astype(np.float32)
    x[5, 1] = np.nan
    ints = rng.integers(-300, 300, size=400).astype(np.int16)
    op = Clip({"op": "clip", "fields": ["x", "i"], "min": -2, "max": 2.5})
    out, specs = run_op(op, {"x": x, "i": ints}, block=block, xp=xp)
    assert op.fit_passes == 0 and op.stats() == {}
    assert specs["x"].dtype == np.float32 and out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], np.clip(x, -2, 2.5))
    assert np.isnan(out["x"][5, 1])
    # Integer fields: the upper bound 2.5 becomes 2, the largest int16 inside it.
    assert out["i"].dtype == np.int16
    np.testing.assert_array_equal(out["i"], np.clip(ints, -2, 2))
    lower_only, _ = run_op(_op(min=0), {"x": x}, block=block, xp=xp)
    np.testing.assert_array_equal(lower_only["x"], np.fmax(x, 0) * np.where(np.isnan(x), np.nan, 1))


def test_fixed_bounds_round_inward_to_the_dtype(xp: Any) -> None:
    tenth = np.float32(0.1)  # 0.100000001490116..., just above 0.1
    below = np.nextafter(tenth, np.float32(0))  # 0.0999999940395..., below 0.1
    x = np.array([0.05, below, tenth, 0.2], np.float32)
    out, _ = run_op(_op(min=0.1), {"x": x}, xp=xp)
    # Every output is >= 0.1 and values >= 0.1 are unchanged.
    assert out["x"].tolist() == [float(tenth), float(tenth), float(tenth), float(np.float32(0.2))]
    out, _ = run_op(_op(max=0.1), {"x": x}, xp=xp)
    assert out["x"].tolist() == [float(np.float32(0.05)), float(below), float(below), float(below)]
    out, _ = run_op(_op(min=-1000, max=300), {"x": np.array([0, 5, 255], np.uint8)}, xp=xp)
    assert out["x"].tolist() == [0, 5, 255] and out["x"].dtype == np.uint8
    big = np.array([2**62 + 1, 2**62 + 5, -(2**63)], np.int64)
    out, _ = run_op(_op(min=-(2**62), max=2**62 + 3), {"x": big}, xp=xp)
    assert out["x"].tolist() == [2**62 + 1, 2**62 + 3, -(2**62)]
    with pytest.raises(ConfigError, match=r"no int8 value of field 'x' lies in \[0.2, 0.8\]"):
        _op(min=0.2, max=0.8).plan({"x": Spec(np.dtype(np.int8), ())})


@pytest.mark.parametrize("block", [1, 7, 300])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32"])
def test_integer_percentiles_are_exact(xp: Any, block: int, dtype: str) -> None:
    rng = np.random.default_rng(1)
    span = {"uint8": (0, 256), "int16": (-30000, 30000), "int32": (-20000, 40000)}[dtype]
    x = rng.integers(*span, size=(300, 2)).astype(dtype)
    x[:, 1] = rng.poisson(3, size=300).astype(dtype)  # many ties
    for lower, upper in PERCENTS[:3] if block == 1 else PERCENTS:
        for per, axis in (("none", None), ("channel", 0)):
            op = _op(lower=lower, upper=upper, per=per)
            out, _ = run_op(op, {"x": x}, block=block, xp=xp)
            lo = np.percentile(x, lower, axis=axis, method="inverted_cdf")
            hi = np.percentile(x, upper, axis=axis, method="inverted_cdf")
            stats = op.stats()["x"]
            assert stats["min"] == np.reshape(lo, -1).tolist()
            assert stats["max"] == np.reshape(hi, -1).tolist()
            assert out["x"].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(out["x"], np.clip(x, lo, hi))


@pytest.mark.parametrize("block", [7, 2000])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_wide_percentiles_within_one_bin(xp: Any, block: int, dtype: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.lognormal(0, 2, size=(2000, 3))
    if dtype == "int64":
        x = np.round(x * 1e3).astype(np.int64)  # spans far more than 2**16 integers
    else:
        x = x.astype(dtype)
        x[rng.integers(0, 2000, 50), rng.integers(0, 3, 50)] = np.nan
    for lower, upper in PERCENTS:
        op = _op(lower=lower, upper=upper, per="channel")
        out, _ = run_op(op, {"x": x}, block=block, xp=xp)
        x64 = x.astype(np.float64)
        width = (np.nanmax(x64, axis=0) - np.nanmin(x64, axis=0)) / 2**16
        lo = np.nanpercentile(x64, lower, axis=0, method="inverted_cdf")
        hi = np.nanpercentile(x64, upper, axis=0, method="inverted_cdf")
        got_lo, got_hi = (np.array(op.stats()["x"][k]) for k in ("min", "max"))
        # Never tighter than the exact percentiles, at most one bin width (+ float rounding) off.
        assert (got_lo <= lo).all() and (got_hi >= hi).all()
        assert (lo - got_lo <= width * (1 + 1e-6)).all()
        assert (got_hi - hi <= width * (1 + 1e-6)).all()
        expected = np.clip(x, got_lo.astype(x.dtype), got_hi.astype(x.dtype))
        np.testing.assert_array_equal(out["x"], expected)
        if (lower, upper) == (0, 100):
            np.testing.assert_array_equal(out["x"], x)


def test_percentiles_are_block_size_independent(xp: Any) -> None:
    x = np.random.default_rng(3).normal(size=(500, 4)).astype(np.float32)
    results = []
    for block in (1, 13, 500):
        op = _op(lower=5, upper=95, per="channel")
        out, _ = run_op(op, {"x": x}, block=block, xp=xp)
        results.append((op.stats(), out["x"]))
    for stats, values in results[1:]:
        assert stats == results[0][0]
        np.testing.assert_array_equal(values, results[0][1])


def test_one_sided_and_mixed_bounds(xp: Any) -> None:
    x = np.arange(100, dtype=np.int32)
    op = _op(upper=90)
    out, _ = run_op(op, {"x": x}, xp=xp)
    assert op.stats() == {"x": {"max": [89], "per": "none"}}
    assert out["x"].tolist() == [*range(90), *[89] * 10]
    op = _op(min=10, upper=90)
    out, _ = run_op(op, {"x": x}, xp=xp)
    assert out["x"].min() == 10 and out["x"].max() == 89
    with pytest.raises(
        SourceError, match=r"field 'x': the lower bound 95 exceeds the upper bound 9"
    ):
        run_op(_op(min=95, upper=10), {"x": x}, xp=xp)


def test_infinities_and_nan(xp: Any) -> None:
    x = np.array([np.nan, -np.inf, 1.0, 2.0, 3.0, 4.0, np.inf, np.inf], np.float64)
    op = _op(lower=0, upper=100)
    out, _ = run_op(op, {"x": x}, block=3, xp=xp)
    # ±inf rank below/above every finite value; percentiles falling on them give the finite ends.
    assert op.stats()["x"] == {"min": [1.0], "max": [4.0], "per": "none"}
    assert np.isnan(out["x"][0]) and out["x"][1:].tolist() == [1, 1, 2, 3, 4, 4, 4]
    all_nan = np.full((6, 2), np.nan)
    all_nan[:, 0] = 1.0
    with pytest.raises(SourceError, match=r"field 'x' channel 1 has no finite values to fit on"):
        run_op(_op(upper=99, per="channel"), {"x": all_nan}, xp=xp)


def test_config_and_field_errors() -> None:
    specs = {
        "x": Spec(np.dtype(np.float32), ()),
        "b": Spec(np.dtype(bool), ()),
        "c": Spec(np.dtype(np.int32), (), "category"),
    }
    cases = [
        ({}, r"op 'clip': expected a bound: 'min' and/or 'max'"),
        ({"min": 0, "lower": 1}, r"give the lower bound as 'min' or 'lower', not both"),
        ({"max": 0, "upper": 1}, r"give the upper bound as 'max' or 'upper', not both"),
        ({"min": 2, "max": 1}, r"expected min <= max, got min=2, max=1"),
        ({"lower": 60, "upper": 40}, r"expected lower <= upper, got lower=60.0, upper=40.0"),
        ({"upper": 101}, r"op 'clip' key 'upper': expected a percentile in 0..100, got 101"),
        ({"lower": -1}, r"op 'clip' key 'lower': expected a number >= 0.0, got -1"),
        ({"min": "low"}, r"op 'clip' key 'min': expected a number, got 'low'"),
        ({"min": 0, "per": "channel"}, r"'per' applies to fitted percentiles"),
        ({"lower": 1, "per": "row"}, r"expected 'per' to be one of none, channel"),
        ({"upper": 1, "clamp": True}, r"unknown key\(s\) clamp"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message):
            _op(**config)
    with pytest.raises(ConfigError, match=r"field 'b' has dtype bool, expected a integer/unsi"):
        Clip({"op": "clip", "fields": "b", "min": 0}).plan(specs)
    with pytest.raises(ConfigError, match=r"field 'c' is a category field"):
        Clip({"op": "clip", "fields": "c", "min": 0}).plan(specs)
    with pytest.raises(ConfigError, match=r"no fitted bounds for field 'x'; fit the op"):
        op = _op(lower=1)
        op.plan(specs)
        op.apply(Block({"x": np.zeros(2, np.float32)}, np.arange(2)))


def test_round_trip_without_refitting(xp: Any) -> None:
    x = np.random.default_rng(4).normal(size=(64, 3)).astype(np.float32)
    op = make_op({"op": "clip", "fields": ["x"], "lower": 10, "upper": 90, "per": "channel"}, "s")
    assert op.fit_passes == 2
    first, _ = run_op(op, {"x": x}, block=5, xp=xp)
    stored = json.loads(json.dumps(op.stats()))
    again = Clip(op.to_dict())
    assert again.to_dict() == op.to_dict()
    again.load_stats(stored)
    again.plan({"x": Spec(x.dtype, (3,))})
    assert again.stats() == op.stats()
    second = again.apply(Block({"x": xp.asarray(x)}, xp.arange(64))).fields["x"]
    second = second.get() if hasattr(second, "get") else second
    assert second.dtype == np.float32
    np.testing.assert_array_equal(first["x"], second)
    # Loaded before planning, integer bounds are converted to the field's dtype at plan time.
    ints = np.arange(-50, 50, dtype=np.int8)
    fitted = _op(lower=5, upper=95)
    reference, _ = run_op(fitted, {"x": ints}, xp=xp)
    rebuilt = Clip(fitted.to_dict())
    rebuilt.load_stats(json.loads(json.dumps(fitted.stats())))
    rebuilt.plan({"x": Spec(np.dtype(np.int8), ())})
    out = rebuilt.apply(Block({"x": xp.asarray(ints)}, xp.arange(100))).fields["x"]
    out = out.get() if hasattr(out, "get") else out
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, reference["x"])
    with pytest.raises(ConfigError, match=r"fitted with per=None, the op has per='none'"):
        rebuilt.load_stats({"x": {"min": [1]}})
    with pytest.raises(ConfigError, match=r"field 'x': expected a mapping with min and max, got"):
        rebuilt.load_stats({})
