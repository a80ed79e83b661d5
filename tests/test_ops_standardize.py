"""standardize: (x - mean) / std with statistics fitted in float64, block-size independent."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError, SourceError
from gpuds.ops import make_op
from gpuds.ops.base import Block, Spec
from gpuds.ops.standardize import Standardize

from .opkit import run_op


def _op(**config: Any) -> Standardize:
    return Standardize({"op": "standardize", "fields": "x", **config})


def _reference(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (x64 - np.nanmean(x64, axis=axes)) / np.nanstd(x64, axis=axes)


def _images(n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.normal([10.0, -3.0, 500.0], [2.0, 0.5, 40.0], size=(n, 4, 5, 3)).astype(np.float32)
    x[3, 1, 2, 0] = np.nan
    x[11] = np.nan
    return x


@pytest.mark.parametrize("block", [1, 7, 60])
@pytest.mark.parametrize(("per", "axes"), [("none", (0, 1, 2, 3)), ("channel", (0, 1, 2))])
def test_matches_numpy_reference(xp: Any, block: int, per: str, axes: tuple[int, ...]) -> None:
    x = _images()
    labels = np.arange(60, dtype=np.int64)
    op = _op(per=per)
    out, specs = run_op(op, {"x": x, "labels": labels}, block=block, xp=xp)
    assert out["x"].dtype == np.float32
    assert specs["x"] == Spec(np.dtype(np.float32), (4, 5, 3), "array")
    np.testing.assert_allclose(out["x"], _reference(x, axes), rtol=1e-6, atol=1e-6)
    assert np.isnan(out["x"][11]).all() and np.isnan(out["x"][3, 1, 2, 0])
    np.testing.assert_array_equal(out["labels"], labels)
    stats = op.stats()["x"]
    channels = 3 if per == "channel" else 1
    assert len(stats["mean"]) == len(stats["std"]) == len(stats["count"]) == channels
    np.testing.assert_allclose(stats["mean"], np.nanmean(x.astype(np.float64), axis=axes), 1e-12)
    np.testing.assert_allclose(stats["std"], np.nanstd(x.astype(np.float64), axis=axes), 1e-12)
    assert sum(stats["count"]) == np.count_nonzero(~np.isnan(x))


def _naive_standardize(x: np.ndarray, block: int) -> np.ndarray:
    """What E[x²] - E[x]² (sums in float64, merged per block) would give."""
    total = squares = 0.0
    for start in range(0, len(x), block):
        part = x[start : start + block].astype(np.float64)
        total += part.sum()
        squares += (part * part).sum()
    mean = total / len(x)
    std = np.sqrt(max(squares / len(x) - mean * mean, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x.astype(np.float64) - mean) / std


def _unit(y: np.ndarray) -> bool:
    """Mean within 1e-3 of 0 and std within 1e-3 of 1 (NaN/inf fail)."""
    with np.errstate(all="ignore"):
        y = y.astype(np.float64)
        return bool(abs(y.mean()) < 1e-3 and abs(y.std() - 1.0) < 1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_offset_keeps_unit_variance(xp: Any, dtype: type) -> None:
    # 1e8 + N(0, 1). In float32 the spacing of numbers at 1e8 is 8, so the noise is quantised to
    # a few levels (std ~0.06); float64 keeps it whole. Either way the output must be mean 0,
    # std 1, and E[x²] - E[x]² must fail at this offset (the test would pass without Chan's
    # update otherwise).
    x = (1e8 + np.random.default_rng(0).normal(size=100_000)).astype(dtype)
    out, _ = run_op(_op(), {"x": x}, block=1000, xp=xp)
    assert out["x"].dtype == np.float32
    assert _unit(out["x"])
    assert not _unit(_naive_standardize(x, 1000))


def test_constant_channel_becomes_zero(xp: Any) -> None:
    x = np.random.default_rng(2).normal(size=(50, 3))
    x[:, 1] = 1e8 + 0.1  # no float64 sum of these returns the value exactly
    x[7, 1] = np.nan
    op = _op(per="channel", dtype="float64")
    out, _ = run_op(op, {"x": x}, block=7, xp=xp)
    assert np.nanmax(np.abs(out["x"][:, 1])) == 0.0 and np.isnan(out["x"][7, 1])
    assert op.stats()["x"]["std"][1] == 0.0 and op.stats()["x"]["mean"][1] == 1e8 + 0.1
    np.testing.assert_allclose(out["x"][:, 0], _reference(x[:, 0], (0,)), rtol=1e-12)
    constant, _ = run_op(_op(), {"x": np.full((9, 2), 5, np.uint8)}, xp=xp)
    assert (constant["x"] == 0).all()


def test_eps_is_relative_to_the_mean(xp: Any) -> None:
    # std = 0.5e-10 * |mean|: below eps = 1e-9 relative, so divided by 1 (only centred).
    x = np.array([1.0, 1.0 + 1e-10] * 10) * 1e3
    out, _ = run_op(_op(eps=1e-9, dtype="float64"), {"x": x}, xp=xp)
    np.testing.assert_allclose(out["x"], x - x.mean(), rtol=1e-3)
    out, _ = run_op(_op(eps=0, dtype="float64"), {"x": x}, xp=xp)
    np.testing.assert_allclose(np.abs(out["x"]), 1.0, rtol=1e-3)


def test_integer_and_bool_inputs(xp: Any) -> None:
    x = np.random.default_rng(3).integers(0, 256, size=(40, 2, 3), dtype=np.uint8)
    out, specs = run_op(_op(per="channel", dtype="float16"), {"x": x}, xp=xp)
    assert specs["x"].dtype == np.float16
    np.testing.assert_allclose(out["x"], _reference(x, (0, 1)), rtol=1e-3, atol=1e-3)
    flags = np.array([True, False, False, True])
    out, _ = run_op(_op(), {"x": flags}, xp=xp)
    np.testing.assert_array_equal(out["x"], [1, -1, -1, 1])


def test_unfit_data_is_an_error(xp: Any) -> None:
    x = np.random.default_rng(4).normal(size=(20, 3))
    x[:, 2] = np.nan
    with pytest.raises(SourceError, match=r"field 'x' channel 2 has no finite values to fit on"):
        run_op(_op(per="channel"), {"x": x}, xp=xp)
    x[:, 2] = 1.0
    x[5, 1] = -np.inf
    with pytest.raises(SourceError, match=r"field 'x' channel 1 holds ±inf values.*'clip'"):
        run_op(_op(per="channel"), {"x": x}, xp=xp)
    with pytest.raises(SourceError, match=r"field 'x' has no values to fit on"):
        run_op(_op(), {"x": np.zeros((0, 3))}, xp=xp)


def test_config_and_field_errors() -> None:
    specs = {
        "x": Spec(np.dtype(np.float32), (3,)),
        "c": Spec(np.dtype(np.int32), (), "category"),
        "s": Spec(np.dtype("<U4"), ()),
    }
    with pytest.raises(ConfigError, match=r"op 'standardize': expected 'per' to be one of"):
        _op(per="pixel")
    with pytest.raises(ConfigError, match=r"expected 'dtype' to be one of float16, float32, f"):
        _op(dtype="int8")
    with pytest.raises(ConfigError, match=r"op 'standardize' key 'eps': expected a number >= 0"):
        _op(eps=-1)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) ddof"):
        _op(ddof=1)
    with pytest.raises(ConfigError, match=r"field 'c' is a category field \(codes, not quantit"):
        Standardize({"op": "standardize", "fields": ["x", "c"]}).plan(specs)
    with pytest.raises(ConfigError, match=r"field 's' has dtype <U4, expected a bool/integer/"):
        Standardize({"op": "standardize", "fields": "s"}).plan(specs)
    with pytest.raises(ConfigError, match=r"no field\(s\) 'y' at this point"):
        Standardize({"op": "standardize", "fields": "y"}).plan(specs)
    op = _op()
    op.plan(specs)
    block = Block({"x": np.zeros((2, 3), np.float32)}, np.arange(2))
    with pytest.raises(ConfigError, match=r"no statistics for field 'x'; fit the op or load_st"):
        op.apply(block)


def test_round_trip_without_refitting(xp: Any) -> None:
    x = _images(30)
    op = make_op({"op": "standardize", "fields": ["x"], "per": "channel", "eps": 0.0}, "step")
    first, _ = run_op(op, {"x": x}, block=7, xp=xp)
    stored = json.loads(json.dumps(op.stats()))
    again = Standardize(op.to_dict())
    assert again.to_dict() == op.to_dict()
    again.load_stats(stored)
    assert again.stats() == op.stats()
    again.plan({"x": Spec(x.dtype, x.shape[1:])})
    outs = [again.apply(b) for b in _blocks(x, 4, xp)]
    second = np.concatenate([_host(b.fields["x"]) for b in outs])
    np.testing.assert_array_equal(first["x"], second)
    with pytest.raises(ConfigError, match=r"have 3 channel\(s\), but the field has 5"):
        again.plan({"x": Spec(x.dtype, (4, 3, 5))})
    with pytest.raises(ConfigError, match=r"fitted with per='channel', the op has per='none'"):
        _op().load_stats(stored)
    with pytest.raises(ConfigError, match=r"expected a mapping with mean and std"):
        _op().load_stats({})


def _blocks(x: np.ndarray, size: int, xp: Any) -> list[Block]:
    return [
        Block({"x": xp.asarray(x[i : i + size])}, xp.arange(i, min(i + size, len(x))))
        for i in range(0, len(x), size)
    ]


def _host(x: Any) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)
