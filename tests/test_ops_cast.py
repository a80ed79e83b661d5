"""cast: dtype conversion that refuses values the new dtype cannot hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError, SourceError
from gpuds.ops import make_op
from gpuds.ops.base import Spec
from gpuds.ops.cast import Cast

from .opkit import run_op


def _cast(fields: str | list[str], dtype: str) -> Cast:
    return Cast({"op": "cast", "fields": fields, "dtype": dtype})


INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@pytest.mark.parametrize("block", [1, 7, 1000])
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_float_to_int_rounds_half_to_even(xp: Any, block: int, dtype: str) -> None:
    halves = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 126.5, 0.49999997, 7.0, 2.2, 99.7], np.float32)
    x = np.concatenate([halves, np.random.default_rng(0).uniform(0, 127, 40).astype(np.float32)])
    if dtype.startswith("int"):
        x[::3] *= -1
    other = np.arange(len(x) * 2, dtype=np.int16).reshape(len(x), 2)
    out, specs = run_op(_cast("x", dtype), {"x": x, "other": other}, block=block, xp=xp)
    assert out["x"].dtype == np.dtype(dtype) and specs["x"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out["x"], np.rint(x).astype(dtype))
    assert np.abs(out["x"][:4].astype(np.int64)).tolist() == [0, 2, 2, 4]
    np.testing.assert_array_equal(out["other"], other)
    assert specs["other"] == Spec(np.dtype(np.int16), (2,))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 128.0, -128.6, 1e10])
def test_float_to_int_refuses_nan_inf_and_out_of_range(xp: Any, bad: float) -> None:
    x = np.linspace(-128.4, 127.4, 30).astype(np.float64).reshape(10, 3)
    x[6, 2] = bad
    with pytest.raises(SourceError, match=r"op 'cast': field 'x', input sample 6: value") as err:
        run_op(_cast("x", "int8"), {"x": x}, block=4, xp=xp)
    message = str(err.value)
    assert "'clip'" in message and "'fill_missing'" in message
    assert ("-128..127" in message) == np.isfinite(bad)


def test_float_to_int_in_range_edges_are_kept(xp: Any) -> None:
    x = np.array([-128.5, 127.49, -0.5, 2.0**63 - 1024, -(2.0**63)])
    out, _ = run_op(_cast("x", "int8"), {"x": x[:3]}, xp=xp)
    assert out["x"].tolist() == [-128, 127, 0]
    out, _ = run_op(_cast("x", "int64"), {"x": x[3:]}, xp=xp)
    assert out["x"].tolist() == [2**63 - 1024, -(2**63)]
    # 2**63 is one past int64's max: float64 cannot say so with iinfo(int64).max, so test it.
    with pytest.raises(SourceError, match=r"outside the range of int64"):
        run_op(_cast("x", "int64"), {"x": np.array([2.0**63])}, xp=xp)
    with pytest.raises(SourceError, match=r"outside the range of uint64"):
        run_op(_cast("x", "uint64"), {"x": np.array([2.0**64])}, xp=xp)


@pytest.mark.parametrize(
    ("src", "dst", "values", "bad_index"),
    [
        ("int64", "int8", [0, -128, 127, 128], 3),
        ("int16", "uint8", [0, 255, -1, 5], 2),
        ("uint64", "int64", [0, 2**63 - 1, 2**63, 1], 2),
        ("int64", "uint64", [0, 2**62, -5, 1], 2),
        ("uint16", "int16", [0, 32767, 32768, 3], 2),
        ("int32", "uint16", [65535, 65536, 0, 0], 1),
    ],
)
def test_int_narrowing_refuses_out_of_range(
    xp: Any, src: str, dst: str, values: list[int], bad_index: int
) -> None:
    x = np.array(values, dtype=src)
    good = np.delete(x, bad_index)
    out, _ = run_op(_cast("x", dst), {"x": good}, block=2, xp=xp)
    assert out["x"].dtype == np.dtype(dst)
    assert out["x"].tolist() == good.tolist()
    with pytest.raises(
        SourceError, match=rf"field 'x', input sample {bad_index}: value {x[bad_index]} is outside"
    ):
        run_op(_cast("x", dst), {"x": x}, block=2, xp=xp)


@pytest.mark.parametrize(
    ("src", "dst"), [("int8", "int64"), ("uint32", "int64"), ("uint8", "int16")]
)
def test_int_widening_is_exact(xp: Any, src: str, dst: str) -> None:
    info = np.iinfo(src)
    x = np.array([info.min, 0, info.max], dtype=src)
    out, _ = run_op(_cast("x", dst), {"x": x}, xp=xp)
    assert out["x"].tolist() == x.tolist() and out["x"].dtype == np.dtype(dst)


def test_to_float_rounds_and_refuses_overflow(xp: Any) -> None:
    x = np.array([1.0, np.nan, np.inf, -np.inf, 1 / 3, 65504.0])
    out, specs = run_op(_cast("x", "float16"), {"x": x}, block=4, xp=xp)
    np.testing.assert_array_equal(out["x"], x.astype(np.float16))
    assert specs["x"].dtype == np.float16
    with pytest.raises(SourceError, match=r"sample 1: value 1000000.0 overflows float16"):
        run_op(_cast("x", "float16"), {"x": np.array([1.0, 1e6])}, xp=xp)
    with pytest.raises(SourceError, match=r"sample 0: value 70000 overflows float16"):
        run_op(_cast("x", "float16"), {"x": np.array([70000], np.uint32)}, xp=xp)
    ints = np.array([2**53 + 1, -7], np.int64)
    out, _ = run_op(_cast("x", "float64"), {"x": ints}, xp=xp)
    np.testing.assert_array_equal(out["x"], ints.astype(np.float64))


def test_bool_casts(xp: Any) -> None:
    x = np.array([0.0, -0.0, 2.5, -1.0, np.inf])
    out, _ = run_op(_cast("x", "bool"), {"x": x}, xp=xp)
    assert out["x"].tolist() == [False, False, True, True, True]
    with pytest.raises(SourceError, match=r"sample 1: value nan has no bool value"):
        run_op(_cast("x", "bool"), {"x": np.array([1.0, np.nan])}, xp=xp)
    out, _ = run_op(_cast("x", "bool"), {"x": np.array([0, 3, -1], np.int8)}, xp=xp)
    assert out["x"].tolist() == [False, True, True]
    out, _ = run_op(_cast("x", "uint8"), {"x": np.array([True, False])}, xp=xp)
    assert out["x"].tolist() == [1, 0] and out["x"].dtype == np.uint8


def test_code_fields_only_to_integers_that_hold_them(xp: Any) -> None:
    codes = np.array([0, 2, -1, 1], np.int32)
    vocab = {"vocabulary": ["a", "b", "c"], "missing_code": -1}
    specs = {"c": Spec(np.dtype(np.int32), (), "category", vocab)}
    planned = _cast("c", "int8").plan(specs)["c"]
    assert planned == Spec(np.dtype(np.int8), (), "category", vocab)
    out, _ = run_op(_cast("c", "int8"), {"c": codes}, kinds={"c": "category"}, xp=xp)
    assert out["c"].tolist() == codes.tolist()
    with pytest.raises(SourceError, match=r"field 'c', input sample 2: value -1 is outside"):
        run_op(_cast("c", "uint8"), {"c": codes}, kinds={"c": "category"}, xp=xp)
    with pytest.raises(ConfigError, match=r"'c' is a category field \(codes\).*integer dtype"):
        _cast("c", "float32").plan(specs)
    big = {"y": Spec(np.dtype(np.int64), (), "label", {"classes": [str(i) for i in range(300)]})}
    with pytest.raises(ConfigError, match=r"'y' has 300 label codes, up to 299, which int8 cannot"):
        _cast("y", "int8").plan(big)
    assert _cast("y", "int16").plan(big)["y"].dtype == np.int16
    mask = {"m": Spec(np.dtype(bool), (), "mask", {"mask_of": "a"})}
    assert _cast("m", "uint8").plan(mask)["m"].kind == "mask"
    with pytest.raises(ConfigError, match=r"an integer or bool dtype, got float16"):
        _cast("m", "float16").plan(mask)


def test_config_errors() -> None:
    with pytest.raises(
        ConfigError, match=r"bfloat16 is not supported: NumPy has no native.*Zarr v3"
    ):
        _cast("x", "bfloat16")
    with pytest.raises(ConfigError, match=r"use float16 .* or float32"):
        _cast("x", "bfloat16")
    with pytest.raises(ConfigError, match=r"op 'cast': expected 'dtype' to be one of float16, "):
        _cast("x", "complex64")
    with pytest.raises(ConfigError, match=r"op 'cast': expected 'dtype'.*got None"):
        Cast({"op": "cast", "fields": "x"})
    with pytest.raises(ConfigError, match=r"op 'cast': missing key 'fields'"):
        Cast({"op": "cast", "dtype": "int8"})
    with pytest.raises(ConfigError, match=r"op 'cast': unknown key\(s\) round"):
        Cast({"op": "cast", "fields": "x", "dtype": "int8", "round": "up"})
    op = _cast(["x", "nope"], "int8")
    with pytest.raises(ConfigError, match=r"op 'cast': no field\(s\) 'nope' at this point"):
        op.plan({"x": Spec(np.dtype(np.float32), ())})
    with pytest.raises(ConfigError, match=r"field 's' has dtype <U3, which cannot be cast"):
        _cast("s", "int8").plan({"s": Spec(np.dtype("<U3"), ())})


def test_round_trip_and_registry(xp: Any) -> None:
    x = np.random.default_rng(1).normal(0, 50, (30, 2))
    op = make_op({"op": "cast", "fields": ["x"], "dtype": "int16"}, "pipeline step 1")
    assert isinstance(op, Cast) and op.fit_passes == 0 and op.stats() == {}
    again = Cast(op.to_dict())
    assert again.to_dict() == op.to_dict() == {"op": "cast", "fields": ["x"], "dtype": "int16"}
    first, _ = run_op(op, {"x": x}, xp=xp)
    second, _ = run_op(again, {"x": x}, block=30, xp=xp)
    np.testing.assert_array_equal(first["x"], second["x"])
