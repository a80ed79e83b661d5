"""Zarr reader: format 2 and 3 stores, fields per array, exact values, refusals, streaming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from gpuds.errors import SourceError
from gpuds.sources import open_source
from gpuds.sources.base import ReadOptions
from gpuds.sources.zarr import ZarrSource
from tests.conftest import tree_hash

N = 10


def read_all(src: ZarrSource, max_samples: int = 3) -> dict[str, np.ndarray]:
    blocks = list(src.blocks(max_samples))
    assert all(len(v) <= max_samples for b in blocks for v in b.values())
    names = [f.name for f in src.fields]
    assert all(list(b) == names for b in blocks)
    return {f.name: np.concatenate([b[f.name] for b in blocks]) for f in src.fields}


def make_store(path: Path, arrays: dict[str, np.ndarray], zarr_format: int = 3) -> Path:
    """A group holding ``arrays`` at their ``a/b/c`` paths, chunked 4 samples at a time."""
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    for name, data in arrays.items():
        parent, _, leaf = name.rpartition("/")
        group = root.require_group(parent) if parent else root
        chunks = (4, *data.shape[1:]) if data.ndim else ()
        array = group.create_array(leaf, shape=data.shape, dtype=data.dtype, chunks=chunks)
        array[...] = data
    return path


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, (N, 4, 5, 3), dtype=np.uint8),
        "data/x": rng.standard_normal(N).astype(np.float32),
        "data/ids": rng.integers(-(2**62), 2**62, (N, 2), dtype=np.int64),
        "data/deep/mask": rng.random(N) > 0.5,
        "data/deep/half": rng.standard_normal((N, 2)).astype(np.float16),
        "z": (rng.standard_normal(N) + 1j * rng.standard_normal(N)).astype(np.complex64),
    }


NAMES = ["data.deep.half", "data.deep.mask", "data.ids", "data.x", "images", "z"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_values_dtypes_and_names(
    tmp_path: Path, data: dict[str, np.ndarray], zarr_format: int
) -> None:
    path = make_store(tmp_path / "d.zarr", data, zarr_format)
    with ZarrSource(path, ReadOptions()) as src:
        assert [f.name for f in src.fields] == NAMES
        assert src.length == N
        assert [len(b["images"]) for b in src.blocks(3)] == [3, 3, 3, 1]
        got = read_all(src)
        specs = {f.name: f for f in src.fields}
        meta = src.metadata()
        described = src.describe()
    for zarr_path, expected in data.items():
        name = zarr_path.replace("/", ".")
        assert got[name].dtype == expected.dtype
        assert specs[name].dtype == expected.dtype
        assert specs[name].sample_shape == expected.shape[1:]
        np.testing.assert_array_equal(got[name], expected)
    assert meta == {
        "arrays": {n: n.replace(".", "/") for n in NAMES},
        "zarr_format": zarr_format,
    }
    assert json.loads(json.dumps(meta)) == meta
    assert described == {"format": "zarr", "path": str(path), "zarr_format": zarr_format}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_single_array_store_is_named_after_the_path(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "foo.zarr"
    values = np.arange(N * 2, dtype=np.int64).reshape(N, 2)
    array = zarr.create_array(
        path, shape=values.shape, dtype=values.dtype, chunks=(4, 2), zarr_format=zarr_format
    )
    array[...] = values
    with open_source(path, ReadOptions()) as src:
        assert isinstance(src, ZarrSource)
        assert [f.name for f in src.fields] == ["foo"]
        np.testing.assert_array_equal(read_all(src)["foo"], values)
        assert src.metadata() == {"arrays": {"foo": ""}, "zarr_format": zarr_format}


def test_v2_big_endian_is_delivered_native(tmp_path: Path) -> None:
    values = np.arange(N, dtype=">i4") * 1000
    path = make_store(tmp_path / "d.zarr", {"big": values}, zarr_format=2)
    with ZarrSource(path, ReadOptions()) as src:
        assert src.fields[0].dtype == np.dtype("=i4")
        got = read_all(src)["big"]
    assert got.dtype == np.dtype("=i4")
    np.testing.assert_array_equal(got, values)


def test_sharded_array(tmp_path: Path) -> None:
    values = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
    group = zarr.open_group(tmp_path / "d.zarr", mode="w")
    group.create_array("x", shape=values.shape, dtype=values.dtype, chunks=(2, 3), shards=(4, 3))
    group["x"][...] = values
    with ZarrSource(tmp_path / "d.zarr", ReadOptions()) as src:
        np.testing.assert_array_equal(read_all(src)["x"], values)


def test_field_selection_keeps_order_asked(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    path = make_store(tmp_path / "d.zarr", data)
    with ZarrSource(path, ReadOptions(fields=("images", "data.x"))) as src:
        assert [f.name for f in src.fields] == ["images", "data.x"]
        got = read_all(src)
        assert src.metadata()["arrays"] == {"images": "images", "data.x": "data/x"}
    np.testing.assert_array_equal(got["data.x"], data["data/x"])
    with pytest.raises(SourceError, match=r"no field\(s\) 'data/x'.*available: .*data\.x"):
        ZarrSource(path, ReadOptions(fields=("data/x",)))


def test_mismatched_lengths_name_both(tmp_path: Path) -> None:
    path = make_store(tmp_path / "d.zarr", {"a": np.arange(5), "g/b": np.arange(7)})
    with pytest.raises(SourceError, match=r"'a' has 5 samples, 'g\.b' has 7.*--fields"):
        ZarrSource(path, ReadOptions())
    with ZarrSource(path, ReadOptions(fields=("g.b",))) as src:
        np.testing.assert_array_equal(read_all(src)["g.b"], np.arange(7))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("shape", "dtype", "expected"),
    [
        ((), "f8", "0-d"),
        ((3,), str, "dtype"),
        ((3,), [("a", "i4"), ("b", "f8")], "dtype"),
    ],
    ids=["scalar", "string", "structured"],
)
@pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")
def test_unsupported_array_is_refused_unless_left_out(
    tmp_path: Path, zarr_format: int, shape: tuple[int, ...], dtype: Any, expected: str
) -> None:
    path = make_store(tmp_path / "d.zarr", {"ok": np.arange(3)}, zarr_format)
    zarr.open_group(path, mode="r+").require_group("g").create_array(
        "bad", shape=shape, dtype=dtype
    )
    with pytest.raises(
        SourceError, match=rf"array 'g/bad' \(field 'g\.bad'\) .*{expected}.*--fields"
    ):
        ZarrSource(path, ReadOptions())
    with ZarrSource(path, ReadOptions(fields=("ok",))) as src:
        np.testing.assert_array_equal(read_all(src)["ok"], np.arange(3))


def test_colliding_field_names_are_refused(tmp_path: Path) -> None:
    path = make_store(tmp_path / "d.zarr", {"a/b": np.arange(3), "a.b": np.arange(3)})
    with pytest.raises(SourceError, match=r"'a\.b' .*and 'a/b' both map to the field name 'a\.b'"):
        ZarrSource(path, ReadOptions())


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")
def test_stale_consolidated_metadata_is_ignored(tmp_path: Path) -> None:
    path = make_store(tmp_path / "d.zarr", {"a": np.arange(3)})
    zarr.consolidate_metadata(path)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    group.create_array("b", shape=(3,), dtype="i8")[...] = np.arange(3) * 2
    with ZarrSource(path, ReadOptions()) as src:
        got = read_all(src)
    assert list(got) == ["a", "b"]
    np.testing.assert_array_equal(got["b"], np.arange(3) * 2)


def test_store_without_arrays_is_refused(tmp_path: Path) -> None:
    zarr.open_group(tmp_path / "d.zarr", mode="w").create_group("empty")
    with pytest.raises(SourceError, match="holds no arrays"):
        ZarrSource(tmp_path / "d.zarr", ReadOptions())


@pytest.mark.parametrize("kind", ["empty-folder", "file", "bad-json", "bad-metadata"])
def test_not_a_zarr_store(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.zarr"
    if kind == "file":
        path.write_text("not zarr\n")
    else:
        path.mkdir()
    if kind == "bad-json":
        (path / "zarr.json").write_text("{not json")
    if kind == "bad-metadata":
        (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    with pytest.raises(SourceError, match=r"bad\.zarr: not a readable Zarr store"):
        ZarrSource(path, ReadOptions())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_corrupt_chunk_names_array_and_chunk(tmp_path: Path, zarr_format: int) -> None:
    values = np.arange(N, dtype=np.int64)
    path = make_store(tmp_path / "d.zarr", {"g/x": values}, zarr_format)
    chunk = path / "g" / "x" / ("1" if zarr_format == 2 else "c/1")
    chunk.write_bytes(b"garbage")
    with ZarrSource(path, ReadOptions()) as src:
        blocks = src.blocks(4)
        np.testing.assert_array_equal(next(blocks)["g.x"], values[:4])
        with pytest.raises(
            SourceError, match=r"cannot read array 'g/x' samples 4:8 \(chunk 1\.\.1 along axis 0\)"
        ):
            next(blocks)


def test_missing_chunk_reads_as_fill_value(tmp_path: Path) -> None:
    values = np.arange(1, N + 1, dtype=np.int64)
    path = make_store(tmp_path / "d.zarr", {"x": values})
    (path / "x" / "c" / "1").unlink()
    with ZarrSource(path, ReadOptions()) as src:
        got = read_all(src)["x"]
    expected = values.copy()
    expected[4:8] = 0
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_inputs_unchanged(tmp_path: Path, data: dict[str, np.ndarray], zarr_format: int) -> None:
    path = make_store(tmp_path / "d.zarr", data, zarr_format)
    before = tree_hash(path)
    with ZarrSource(path, ReadOptions()) as src:
        read_all(src)
        src.metadata()
    assert tree_hash(path) == before
