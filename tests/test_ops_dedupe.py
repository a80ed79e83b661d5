"""dedupe: exact (bitwise) duplicates over the chosen fields are dropped, the first kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError
from gpuds.ops import make_op
from gpuds.ops.base import Spec
from gpuds.ops.dedupe import Dedupe

from .opkit import blocks_of, run_op, specs_of


def _host(x: Any) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)


N = 60


def _data() -> dict[str, np.ndarray]:
    """Small images and labels with duplicates copied from earlier rows, some across blocks."""
    rng = np.random.default_rng(11)
    images = rng.normal(size=(N, 2, 2)).astype(np.float32)
    tags = rng.integers(0, 4, size=N).astype(np.int8)
    for dst, src in [(5, 1), (6, 1), (20, 3), (21, 20), (40, 7), (59, 0), (33, 32)]:
        images[dst] = images[src]
        tags[dst] = tags[src]
    images[12] = images[13]  # same image, different tag: not a duplicate over both fields
    tags[12] = (tags[13] + 1) % 4
    images[50, 0, 0] = np.nan  # bitwise-equal NaN rows are duplicates
    images[51] = images[50]
    tags[51] = tags[50]
    return {"images": images, "tags": tags, "labels": np.arange(N, dtype=np.int64)}


def _reference_keep(arrays: list[np.ndarray]) -> np.ndarray:
    """Keep sample i unless an earlier sample has the same bytes in every array (O(n^2))."""
    rows = [b"|".join(a[i].tobytes() for a in arrays) for i in range(len(arrays[0]))]
    return np.array([all(rows[j] != rows[i] for j in range(i)) for i in range(len(rows))])


@pytest.mark.parametrize("block", [1, 7, N])
def test_all_fields_match_reference(xp: Any, block: int) -> None:
    data = _data()
    # With every field, `labels` (unique) makes every sample distinct.
    op = Dedupe({"op": "dedupe"})
    out, _ = run_op(op, data, block=block, xp=xp)
    np.testing.assert_array_equal(out["labels"], data["labels"])
    assert op.counts() == {"dropped": 0, "kept": N}

    op = Dedupe({"op": "dedupe", "fields": ["images", "tags"]})
    out, specs = run_op(op, data, block=block, xp=xp)
    assert specs == specs_of(data)
    keep = _reference_keep([data["images"], data["tags"]])
    assert (~keep).sum() == 8
    assert keep[12] and keep[50] and not keep[51]
    for name, values in data.items():
        np.testing.assert_array_equal(out[name], values[keep])
        assert out[name].dtype == values.dtype
    np.testing.assert_array_equal(out["labels"], np.flatnonzero(keep))
    assert op.counts() == {"dropped": 8, "kept": N - 8}


@pytest.mark.parametrize("block", [1, 7, N])
def test_one_field_keeps_first_of_each_value(xp: Any, block: int) -> None:
    data = _data()
    op = Dedupe({"op": "dedupe", "fields": "tags"})
    out, _ = run_op(op, data, block=block, xp=xp)
    _, first = np.unique(data["tags"], return_index=True)
    np.testing.assert_array_equal(out["labels"], np.sort(first))
    np.testing.assert_array_equal(out["images"], data["images"][np.sort(first)])


def test_block_index_follows_the_kept_samples(xp: Any) -> None:
    data = _data()
    op = Dedupe({"op": "dedupe", "fields": "tags"})
    op.plan(specs_of(data))
    op.reset()
    for b in blocks_of(data, 9, xp):
        out = op.apply(b)
        np.testing.assert_array_equal(_host(out.index), _host(out.fields["labels"]))


def test_equality_is_bitwise() -> None:
    x = np.array([0.0, -0.0, np.nan, np.nan, 1.0, 0.0], dtype=np.float64)
    x[3] = np.frombuffer(np.uint64(0x7FF8000000000001).tobytes(), np.float64)[0]  # NaN payload
    x = np.concatenate([x, x[[2, 3]]])
    op = Dedupe({"op": "dedupe", "fields": "x"})
    out, _ = run_op(op, {"x": x}, block=3)
    # 0.0 and -0.0 differ; the two NaNs differ by payload; their later exact copies are dropped.
    assert out["x"].view(np.uint64).tolist() == x[:5].view(np.uint64).tolist()


def test_reset_gives_identical_passes() -> None:
    data = _data()
    op = Dedupe({"op": "dedupe", "fields": ["tags"]})
    first, _ = run_op(op, data)
    counts = op.counts()
    op.reset()
    assert op.counts() == {"dropped": 0, "kept": 0}
    second, _ = run_op(op, data)
    assert op.counts() == counts == {"dropped": N - 4, "kept": 4}
    np.testing.assert_array_equal(first["labels"], second["labels"])


def test_empty_samples_and_bool_fields() -> None:
    data = {
        "empty": np.zeros((4, 0), np.float32),
        "flag": np.array([True, False, True, True]),
    }
    out, _ = run_op(Dedupe({"op": "dedupe"}), data, block=2)
    np.testing.assert_array_equal(out["flag"], [True, False])


def test_to_dict_round_trip() -> None:
    data = _data()
    op = make_op({"op": "dedupe", "fields": ["images", "tags"]}, "test")
    again = Dedupe(op.to_dict())
    assert again.to_dict() == op.to_dict() == {"op": "dedupe", "fields": ["images", "tags"]}
    a, _ = run_op(op, data)
    b, _ = run_op(again, data)
    for name in data:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"fields": [1]}, r"op 'dedupe': expected 'fields' to be a name or a list of names"),
        ({"keep": "first"}, r"op 'dedupe': unknown key\(s\) keep; valid: fields"),
    ],
)
def test_bad_config(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Dedupe({"op": "dedupe", **config})


def test_bad_fields() -> None:
    op = Dedupe({"op": "dedupe", "fields": ["tags", "nope"]})
    with pytest.raises(ConfigError, match=r"op 'dedupe': no field\(s\) 'nope' at this point"):
        op.plan(specs_of(_data()))
    op = Dedupe({"op": "dedupe"})
    with pytest.raises(ConfigError, match=r"field 'o' holds Python objects.*leave it out"):
        op.plan({"o": Spec(np.dtype(object), ())})
