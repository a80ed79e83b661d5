"""drop_invalid: drops samples with NaN/inf, a missing category code or a set mask."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError
from gpuds.ops import make_op
from gpuds.ops.base import Spec
from gpuds.ops.drop_invalid import DropInvalid

from .opkit import blocks_of, run_op, specs_of


def _host(x: Any) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)


N = 41


def _table() -> dict[str, np.ndarray]:
    """Floats with NaN/inf in vector samples, an int column with a mask, a category, labels."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 3)).astype(np.float32)
    x[2, 1] = np.nan
    x[9, 0] = np.inf
    x[10, 2] = -np.inf
    x[30] = np.nan
    age = rng.integers(0, 90, size=N).astype(np.int64)
    age_missing = np.zeros(N, dtype=bool)
    age_missing[[4, 9, 17]] = True
    color = rng.integers(0, 3, size=N).astype(np.int32)
    color[[5, 17, 40]] = -1
    score = rng.normal(size=N)
    score[[0, 4]] = np.nan
    return {
        "x": x,
        "age": age,
        "age.missing": age_missing,
        "color": color,
        "score": score,
        "labels": np.arange(N, dtype=np.int64),
    }


KINDS = {"color": "category", "age.missing": "mask", "labels": "label"}


def _reference_keep(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "x": ~np.isfinite(data["x"]).all(axis=1),
        "age": data["age.missing"],
        "color": data["color"] == -1,
        "score": ~np.isfinite(data["score"]),
    }


@pytest.mark.parametrize("block", [1, 7, N])
def test_default_fields_match_reference(xp: Any, block: int) -> None:
    data = _table()
    bad = _reference_keep(data)
    keep = ~np.any(np.stack(list(bad.values())), axis=0)
    op = DropInvalid({"op": "drop_invalid"})
    out, specs = run_op(op, data, block=block, kinds=KINDS, xp=xp)
    assert specs == specs_of(data, KINDS)
    for name, values in data.items():
        np.testing.assert_array_equal(out[name], values[keep])
        assert out[name].dtype == values.dtype
    np.testing.assert_array_equal(out["labels"], np.flatnonzero(keep))
    assert not out["age.missing"].any()
    counts = op.counts()
    assert counts == {
        "dropped": int((~keep).sum()),
        "kept": int(keep.sum()),
        "dropped_by_field": {name: int(b.sum()) for name, b in bad.items()},
    }
    json.dumps(counts)
    assert all(type(v) is int for v in counts["dropped_by_field"].values())


def test_block_index_follows_the_kept_samples(xp: Any) -> None:
    data = _table()
    op = DropInvalid({"op": "drop_invalid", "fields": ["x", "color"]})
    op.plan(specs_of(data, KINDS))
    op.reset()
    for b in blocks_of(data, 6, xp):
        out = op.apply(b)
        np.testing.assert_array_equal(_host(out.index), _host(out.fields["labels"]))


def test_named_fields_only(xp: Any) -> None:
    data = _table()
    op = DropInvalid({"op": "drop_invalid", "fields": "score"})
    out, _ = run_op(op, data, kinds=KINDS, xp=xp)
    keep = np.isfinite(data["score"])
    np.testing.assert_array_equal(out["labels"], np.flatnonzero(keep))
    # NaNs in fields that were not chosen pass through.
    np.testing.assert_array_equal(out["x"], data["x"][keep])
    assert op.counts() == {"dropped": 2, "kept": N - 2, "dropped_by_field": {"score": 2}}


def test_mask_of_attribute_and_custom_missing_code(xp: Any) -> None:
    values = np.array([1, 2, 3, 4, 5, 6], dtype=np.int16)
    flags = np.array([False, True, False, False, False, False])
    code = np.array([0, 0, 9, 1, 0, 2], dtype=np.int8)
    data = {"v": values, "flags": flags, "code": code}
    specs = {
        "v": Spec(np.dtype(np.int16), ()),
        "flags": Spec(np.dtype(bool), (), "mask", {"mask_of": "v"}),
        "code": Spec(np.dtype(np.int8), (), "category", {"missing_code": 9}),
    }
    op = DropInvalid({"op": "drop_invalid"})
    assert op.plan(specs) == specs
    op.reset()
    kept = [op.apply(b) for b in blocks_of(data, 4, xp)]
    got = np.concatenate([_host(k.fields["v"]) for k in kept])
    np.testing.assert_array_equal(got, [1, 4, 5, 6])
    assert op.counts()["dropped_by_field"] == {"v": 1, "code": 1}


def test_counts_reset_and_repeat_passes() -> None:
    data = _table()
    op = DropInvalid({"op": "drop_invalid"})
    first, _ = run_op(op, data, kinds=KINDS)
    counts = op.counts()
    op.reset()
    assert op.counts() == {
        "dropped": 0,
        "kept": 0,
        "dropped_by_field": {"x": 0, "age": 0, "color": 0, "score": 0},
    }
    second, _ = run_op(op, data, kinds=KINDS)
    assert op.counts() == counts
    np.testing.assert_array_equal(first["labels"], second["labels"])


def test_nothing_to_check_passes_through() -> None:
    data = {"images": np.zeros((5, 2, 2), np.uint8), "labels": np.arange(5)}
    op = DropInvalid({"op": "drop_invalid"})
    out, _ = run_op(op, data)
    np.testing.assert_array_equal(out["labels"], data["labels"])
    assert op.counts() == {"dropped": 0, "kept": 5, "dropped_by_field": {}}


def test_to_dict_round_trip() -> None:
    data = _table()
    op = make_op({"op": "drop_invalid", "fields": ["x", "age"]}, "test")
    again = DropInvalid(op.to_dict())
    assert again.to_dict() == op.to_dict() == {"op": "drop_invalid", "fields": ["x", "age"]}
    a, _ = run_op(op, data, kinds=KINDS)
    b, _ = run_op(again, data, kinds=KINDS)
    for name in data:
        np.testing.assert_array_equal(a[name], b[name])
    assert op.counts() == again.counts()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"fields": 3}, r"op 'drop_invalid': expected 'fields' to be a name or a list"),
        ({"fields": []}, r"expected 'fields'"),
        ({"field": "x"}, r"unknown key\(s\) field; valid: fields"),
    ],
)
def test_bad_config(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DropInvalid({"op": "drop_invalid", **config})


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ("labels", r"field 'labels' \(int64\) cannot hold invalid values.*'labels\.missing'"),
        ("age.missing", r"'age\.missing' is the missing-value mask of 'age'.*name 'age'"),
        ("nope", r"no field\(s\) 'nope' at this point; available: x, age"),
    ],
)
def test_bad_fields(fields: str, match: str) -> None:
    op = DropInvalid({"op": "drop_invalid", "fields": fields})
    with pytest.raises(ConfigError, match=match):
        op.plan(specs_of(_table(), KINDS))
