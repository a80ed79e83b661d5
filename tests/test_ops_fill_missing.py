"""fill_missing: NaN / masked / missing-code values replaced by a constant, mean or median."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError, SourceError
from gpuds.ops import make_op
from gpuds.ops.base import Block, Spec
from gpuds.ops.fill_missing import FillMissing

from .opkit import run_op


def _op(fields: str | list[str] = "x", **config: Any) -> FillMissing:
    return FillMissing({"op": "fill_missing", "fields": fields, **config})


MASK = "mask"
VOCAB = {"vocabulary": ["blue", "green", "red"], "missing_code": -1}


def _table(n: int = 120) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A float matrix with NaN, an int column with its mask, a bool column with its mask."""
    rng = np.random.default_rng(9)
    x = rng.normal([1.0, -20.0, 300.0], [1.0, 5.0, 50.0], size=(n, 3)).astype(np.float32)
    x[rng.random((n, 3)) < 0.2] = np.nan
    age = rng.integers(0, 90, size=n).astype(np.int16)
    age_missing = rng.random(n) < 0.25
    age[age_missing] = 0  # what the table reader stores under the mask
    flag = rng.random(n) < 0.7
    flag_missing = rng.random(n) < 0.1
    flag[flag_missing] = False
    color = rng.integers(-1, 3, size=n).astype(np.int32)
    arrays = {
        "x": x,
        "age": age,
        "age.missing": age_missing,
        "flag": flag,
        "flag.missing": flag_missing,
        "color": color,
    }
    kinds = {"age.missing": MASK, "flag.missing": MASK, "color": "category"}
    return arrays, kinds


@pytest.mark.parametrize("block", [1, 7, 120])
def test_constant(xp: Any, block: int) -> None:
    arrays, kinds = _table()
    op = _op(["x", "age"], value=-1)
    out, specs = run_op(op, arrays, block=block, kinds=kinds, xp=xp)
    x, age, missing = arrays["x"], arrays["age"], arrays["age.missing"]
    np.testing.assert_array_equal(out["x"], np.where(np.isnan(x), np.float32(-1), x))
    np.testing.assert_array_equal(out["age"], np.where(missing, -1, age))
    assert out["x"].dtype == np.float32 and out["age"].dtype == np.int16
    assert specs == run_op(_op("x", value=0), arrays, kinds=kinds)[1]
    for name in ("age.missing", "flag", "flag.missing", "color"):
        np.testing.assert_array_equal(out[name], arrays[name])  # the mask still says "imputed"
    assert op.counts() == {"filled": int(np.isnan(x).sum() + missing.sum())}
    assert op.stats() == {} and op.fit_passes == 0


def test_constant_categories_and_bools(xp: Any) -> None:
    arrays, kinds = _table()
    specs_attrs = {"color": VOCAB}
    color = arrays["color"]
    for value, code in (("green", 1), (2, 2)):
        op = _op("color", value=value)
        op.plan({"color": Spec(np.dtype(np.int32), (), "category", specs_attrs["color"])})
        out = op.apply(Block({"color": xp.asarray(color)}, xp.arange(len(color))))
        got = out.fields["color"]
        got = got.get() if hasattr(got, "get") else got
        np.testing.assert_array_equal(got, np.where(color == -1, code, color))
    out, _ = run_op(_op("flag", value=True), arrays, kinds=kinds, xp=xp)
    expected = np.where(arrays["flag.missing"], True, arrays["flag"])
    np.testing.assert_array_equal(out["flag"], expected)


@pytest.mark.parametrize("block", [1, 7, 120])
@pytest.mark.parametrize(("per", "axis"), [("none", None), ("channel", 0)])
def test_mean(xp: Any, block: int, per: str, axis: int | None) -> None:
    arrays, kinds = _table()
    x = arrays["x"]
    op = _op(["x", "age"], strategy="mean", per=per)
    out, _ = run_op(op, arrays, block=block, kinds=kinds, xp=xp)
    mean = np.nanmean(x.astype(np.float64), axis=axis).astype(np.float32)
    np.testing.assert_allclose(out["x"], np.where(np.isnan(x), mean, x), rtol=1e-6)
    assert not np.isnan(out["x"]).any()
    present = arrays["age"][~arrays["age.missing"]]
    age_mean = np.rint(present.astype(np.float64).mean())
    np.testing.assert_array_equal(
        out["age"], np.where(arrays["age.missing"], age_mean, arrays["age"])
    )
    stats = op.stats()
    assert stats["age"] == {"value": [int(age_mean)], "per": per}
    assert len(stats["x"]["value"]) == (3 if per == "channel" else 1)


def test_integer_fill_rounds_half_to_even(xp: Any) -> None:
    for values, expected in (([2, 3, 0], 2), ([3, 4, 0], 4), ([1, 2, 0], 2), ([5, 6, 0], 6)):
        arrays = {"x": np.array(values, np.int64), "x.missing": np.array([False, False, True])}
        out, _ = run_op(_op(strategy="mean"), arrays, kinds={"x.missing": MASK}, xp=xp)
        assert out["x"].tolist() == [*values[:2], expected]
    # bool: the majority; a tie (mean 0.5) rounds to even, i.e. False.
    for flags, expected_flag in (([True, True, False], True), ([True, False, False], False)):
        arrays = {"f": np.array([*flags, False]), "f.missing": np.array([0, 0, 0, 1], bool)}
        out, _ = run_op(_op("f", strategy="median"), arrays, kinds={"f.missing": MASK}, xp=xp)
        assert out["f"].tolist() == [*flags, expected_flag]
    tie = {"f": np.array([True, False, False]), "f.missing": np.array([0, 0, 1], bool)}
    out, _ = run_op(_op("f", strategy="mean"), tie, kinds={"f.missing": MASK}, xp=xp)
    assert out["f"].tolist() == [True, False, False]


@pytest.mark.parametrize("block", [1, 7, 120])
def test_median_is_exact_for_small_span_integers(xp: Any, block: int) -> None:
    arrays, kinds = _table()
    for n in (120, 119):  # even and odd counts of present values
        subset = {k: v[:n] for k, v in arrays.items()}
        op = _op("age", strategy="median")
        out, _ = run_op(op, subset, block=block, kinds=kinds, xp=xp)
        present = subset["age"][~subset["age.missing"]]
        median = np.rint(np.median(present))
        assert op.stats()["age"]["value"] == [int(median)]
        np.testing.assert_array_equal(
            out["age"], np.where(subset["age.missing"], median, subset["age"])
        )


def test_exact_median_per_channel_with_a_per_sample_mask(xp: Any) -> None:
    rng = np.random.default_rng(6)
    v = rng.integers(-40000, -10000, size=(90, 4)).astype(np.int32)  # span < 2**16: exact
    missing = rng.random(90) < 0.3  # one flag per sample masks its whole row
    arrays = {"v": v, "v.missing": missing}
    op = _op("v", strategy="median", per="channel")
    out, _ = run_op(op, arrays, kinds={"v.missing": MASK}, xp=xp)
    median = np.rint(np.median(v[~missing], axis=0)).astype(np.int32)
    assert op.stats()["v"]["value"] == median.tolist()
    np.testing.assert_array_equal(out["v"], np.where(missing[:, None], median, v))


def test_float_median_within_half_a_bin(xp: Any) -> None:
    arrays, _ = _table(400)
    x = arrays["x"].astype(np.float64)
    op = _op("x", strategy="median", per="channel")
    out, _ = run_op(op, {"x": arrays["x"]}, block=33, xp=xp)
    exact = np.nanmedian(x, axis=0)
    width = (np.nanmax(x, axis=0) - np.nanmin(x, axis=0)) / 2**16
    got = np.array(op.stats()["x"]["value"])
    assert (np.abs(got - exact) <= width / 2 + np.abs(exact) * 1e-7).all()
    np.testing.assert_array_equal(
        out["x"], np.where(np.isnan(arrays["x"]), got.astype(np.float32), arrays["x"])
    )


def test_nothing_to_fit_on_is_an_error(xp: Any) -> None:
    x = np.random.default_rng(8).normal(size=(10, 2))
    x[:, 1] = np.nan
    for strategy in ("mean", "median"):
        with pytest.raises(SourceError, match=r"field 'x' channel 1 has no finite values to fit"):
            run_op(_op(strategy=strategy, per="channel"), {"x": x}, xp=xp)
    masked = {"a": np.arange(4), "a.missing": np.ones(4, bool)}
    with pytest.raises(SourceError, match=r"field 'a' has no finite values to fit on"):
        run_op(_op("a", strategy="mean"), masked, kinds={"a.missing": MASK}, xp=xp)
    x[:, 1] = 1.0
    x[3, 0] = np.inf
    with pytest.raises(SourceError, match=r"field 'x' channel 0 holds ±inf values, so its mean"):
        run_op(_op(strategy="mean", per="channel"), {"x": x}, xp=xp)


def test_config_and_field_errors() -> None:
    specs = {
        "x": Spec(np.dtype(np.float32), (2,)),
        "n": Spec(np.dtype(np.int64), ()),
        "c": Spec(np.dtype(np.int32), (), "category", VOCAB),
        "y": Spec(np.dtype(np.int64), (), "label"),
        "a": Spec(np.dtype(np.uint8), (3,)),
        "a.missing": Spec(np.dtype(bool), (2,), "mask", {"mask_of": "a"}),
        "s": Spec(np.dtype("<U2"), ()),
    }
    config_cases = [
        ({}, r"strategy 'constant' needs 'value' \(the fill value\)"),
        ({"strategy": "mode"}, r"expected 'strategy' to be one of constant, mean, median"),
        ({"strategy": "mean", "value": 3}, r"'value' applies to strategy 'constant' only"),
        ({"value": 0, "per": "channel"}, r"'per' applies to strategies 'mean' and 'median'"),
        ({"value": [1, 2]}, r"expected 'value' to be a finite number or a category string"),
        ({"value": float("nan")}, r"expected 'value' to be a finite number"),
        ({"strategy": "median", "per": "x"}, r"expected 'per' to be one of none, channel"),
        ({"value": 1, "fill": 2}, r"unknown key\(s\) fill"),
    ]
    for config, message in config_cases:
        with pytest.raises(ConfigError, match=message):
            _op(**config)
    plan_cases = [
        (
            "n",
            {"value": 0},
            r"field 'n' has no missing values to fill \(no NaN possible in int64 "
            r"and no 'n.missing' mask\)",
        ),
        ("c", {"strategy": "mean"}, r"field 'c' is a category field; only strategy 'constant'"),
        (
            "c",
            {"value": "pink"},
            r"'value' 'pink' for field 'c': not in the field's vocabulary "
            r"\['blue', 'green', 'red'\] \(3 values\)",
        ),
        ("c", {"value": 3}, r"expected a code below the vocabulary size 3"),
        ("c", {"value": -2}, r"expected a category code >= 0 or a vocabulary string"),
        ("y", {"value": 0}, r"field 'y' is a label field, which is not imputed.*drop_invalid"),
        ("a.missing", {"value": 0}, r"'a.missing' is a mask field"),
        ("a", {"value": 0}, r"the mask 'a.missing' of field 'a' has sample shape \(2,\), expected"),
        ("s", {"value": 0}, r"field 's' has dtype <U2; only bool, integer, float and category"),
        ("x", {"value": "blue"}, r"a string fills category fields only"),
        ("x", {"value": 1e39}, r"'value' 1e\+39 for field 'x': beyond the range of float32"),
        ("zz", {"value": 0}, r"op 'fill_missing': no field\(s\) 'zz' at this point"),
    ]
    for field, config, message in plan_cases:
        with pytest.raises(ConfigError, match=message):
            _op(field, **config).plan(specs)
    ints = {"i": Spec(np.dtype(np.int8), ()), "i.missing": Spec(np.dtype(bool), (), "mask")}
    for value, message in ((1.5, r"expected an integer for a int8 field"), (300, r"-128..127")):
        with pytest.raises(ConfigError, match=message):
            _op("i", value=value).plan(ints)
    assert _op("i", value=7.0).plan(ints) == ints
    bools = {"f": Spec(np.dtype(bool), ()), "f.missing": Spec(np.dtype(bool), (), "mask")}
    with pytest.raises(ConfigError, match=r"expected True, False, 0 or 1 for a bool field"):
        _op("f", value=2).plan(bools)
    op = _op(strategy="mean")
    op.plan(specs)
    with pytest.raises(ConfigError, match=r"no fill value for field 'x'; fit the op or load_st"):
        op.apply(Block({"x": np.zeros((2, 2), np.float32)}, np.arange(2)))


def test_round_trip_without_refitting(xp: Any) -> None:
    arrays, kinds = _table()
    config = {"op": "fill_missing", "fields": ["x", "age"], "strategy": "median", "per": "channel"}
    op = make_op(config, "s")
    assert op.fit_passes == 2 and _op(strategy="mean").fit_passes == 1
    first, _ = run_op(op, arrays, block=9, kinds=kinds, xp=xp)
    stored = json.loads(json.dumps(op.stats()))
    again = FillMissing(op.to_dict())
    assert again.to_dict() == op.to_dict() == config
    again.load_stats(stored)
    again.plan({k: Spec(v.dtype, v.shape[1:], kinds.get(k, "array")) for k, v in arrays.items()})
    assert again.stats() == op.stats()
    n = len(arrays["x"])
    block = Block({k: xp.asarray(v) for k, v in arrays.items()}, xp.arange(n))
    out = again.apply(block).fields
    for name in ("x", "age"):
        got = out[name].get() if hasattr(out[name], "get") else out[name]
        assert got.dtype == first[name].dtype
        np.testing.assert_array_equal(got, first[name])
    with pytest.raises(ConfigError, match=r"fitted with per=None, the op has per='channel'"):
        again.load_stats({"x": {"value": [1.0]}})
    with pytest.raises(ConfigError, match=r"field 'x': expected a mapping with value, got None"):
        again.load_stats({})
