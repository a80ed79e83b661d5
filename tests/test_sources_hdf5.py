"""HDF5 reader: fields per dataset, exact values, links, refusals, streaming, closing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from gpuds.errors import SourceError
from gpuds.sources import open_source
from gpuds.sources.base import ReadOptions
from gpuds.sources.hdf5 import Hdf5Source
from tests.conftest import tree_hash

N = 10


def read_all(src: Hdf5Source, max_samples: int = 3) -> dict[str, np.ndarray]:
    blocks = list(src.blocks(max_samples))
    assert all(len(v) <= max_samples for b in blocks for v in b.values())
    names = [f.name for f in src.fields]
    assert all(list(b) == names for b in blocks)
    return {
        f.name: np.concatenate([b[f.name] for b in blocks])
        if blocks
        else np.empty((0, *f.sample_shape), f.dtype)
        for f in src.fields
    }


def make_file(path: Path, datasets: dict[str, Any]) -> Path:
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f[name] = data
    return path


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "/images": rng.integers(0, 256, (N, 4, 5, 3), dtype=np.uint8),
        "/data/x": rng.standard_normal(N).astype(np.float32),
        "/data/ids": rng.integers(-(2**62), 2**62, (N, 2), dtype=np.int64),
        "/data/deep/mask": rng.random(N) > 0.5,
        "/data/deep/half": rng.standard_normal((N, 2)).astype(np.float16),
        "/z": rng.standard_normal(N) + 1j * rng.standard_normal(N),
    }


def test_values_dtypes_and_names(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    path = make_file(tmp_path / "d.h5", data)
    with Hdf5Source(path, ReadOptions()) as src:
        assert [f.name for f in src.fields] == [
            "data.deep.half",
            "data.deep.mask",
            "data.ids",
            "data.x",
            "images",
            "z",
        ]
        assert src.length == N
        blocks = list(src.blocks(3))
        assert [len(b["images"]) for b in blocks] == [3, 3, 3, 1]
        got = read_all(src)
        meta = src.metadata()
        specs = {f.name: f for f in src.fields}
    for hdf5_path, expected in data.items():
        name = hdf5_path.lstrip("/").replace("/", ".")
        assert got[name].dtype == expected.dtype
        np.testing.assert_array_equal(got[name], expected)
    assert specs["images"].sample_shape == (4, 5, 3)
    assert specs["images"].dtype == np.uint8
    assert specs["data.ids"].dtype == np.int64
    assert specs["data.deep.mask"].dtype == np.bool_
    assert meta == {"datasets": {n: "/" + n.replace(".", "/") for n in specs}}
    assert json.loads(json.dumps(meta)) == meta


def test_registry_and_describe(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    path = make_file(tmp_path / "d.hdf5", data)
    with open_source(path, ReadOptions()) as src:
        assert isinstance(src, Hdf5Source)
        assert src.describe() == {"format": "hdf5", "path": str(path)}


def test_field_selection_keeps_order_asked(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    path = make_file(tmp_path / "d.h5", data)
    with Hdf5Source(path, ReadOptions(fields=("images", "data.x"))) as src:
        assert [f.name for f in src.fields] == ["images", "data.x"]
        got = read_all(src)
        assert src.metadata() == {"datasets": {"images": "/images", "data.x": "/data/x"}}
    assert list(got) == ["images", "data.x"]
    np.testing.assert_array_equal(got["data.x"], data["/data/x"])


def test_unknown_field_is_refused(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    path = make_file(tmp_path / "d.h5", data)
    with pytest.raises(SourceError, match=r"no field\(s\) 'data/x'.*available: .*data\.x"):
        Hdf5Source(path, ReadOptions(fields=("data/x",)))


def test_non_strict_selection_ignores_missing_names(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"a": np.arange(4)})
    with Hdf5Source(path, ReadOptions(fields=("b",), strict_fields=False)) as src:
        assert src.fields == []
        assert src.length == 0
        assert list(src.blocks(3)) == []


def test_mismatched_lengths_name_both(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"a": np.arange(5), "g/b": np.arange(7)})
    with pytest.raises(SourceError, match=r"'a' has 5 samples, 'g\.b' has 7.*--fields"):
        Hdf5Source(path, ReadOptions())
    with Hdf5Source(path, ReadOptions(fields=("g.b",))) as src:
        np.testing.assert_array_equal(read_all(src)["g.b"], np.arange(7))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64(3.0), "0-d"),
        (np.array([b"ab", b"cd"]), "string dtype"),
        (np.array(["x", "yy"], dtype=h5py.string_dtype()), "string dtype"),
        (
            np.array([np.arange(2), np.arange(3)], dtype=h5py.vlen_dtype(np.int64)),
            "variable-length dtype",
        ),
        (np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]), "compound dtype"),
    ],
    ids=["scalar", "bytes", "vlen-str", "vlen-int", "compound"],
)
def test_unsupported_dataset_is_refused_unless_left_out(
    tmp_path: Path, value: Any, expected: str
) -> None:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["ok"] = np.arange(3)
        f.create_group("g")["bad"] = value
    with pytest.raises(
        SourceError, match=rf"dataset /g/bad \(field 'g\.bad'\) .*{expected}.*--fields"
    ):
        Hdf5Source(path, ReadOptions())
    with Hdf5Source(path, ReadOptions(fields=("ok",))) as src:
        np.testing.assert_array_equal(read_all(src)["ok"], np.arange(3))


def test_empty_dataspace_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("null", dtype="f4")
    with pytest.raises(SourceError, match=r"/null .*empty dataspace"):
        Hdf5Source(path, ReadOptions())


def test_big_endian_is_delivered_native_and_enum_keeps_names(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    big = np.arange(N, dtype=">i4") * 1000
    codes = np.arange(N, dtype=np.int8) % 3
    with h5py.File(path, "w") as f:
        f["big"] = big
        f.create_dataset(
            "kind", data=codes, dtype=h5py.enum_dtype({"cat": 0, "dog": 1, "cow": 2}, "i1")
        )
    with Hdf5Source(path, ReadOptions()) as src:
        specs = {f.name: f for f in src.fields}
        got = read_all(src)
    assert specs["big"].dtype == np.dtype("=i4")
    assert specs["kind"].dtype == np.int8
    assert specs["kind"].attrs == {"enum": {"cat": 0, "dog": 1, "cow": 2}}
    assert got["big"].dtype == np.dtype("=i4")
    np.testing.assert_array_equal(got["big"], big)
    np.testing.assert_array_equal(got["kind"], codes)
    assert got["kind"].dtype.metadata is None


def test_soft_links_inside_the_file_are_followed(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["runs/r1/x"] = np.arange(4)
        f["latest"] = h5py.SoftLink("/runs/r1")
        f["x_alias"] = h5py.SoftLink("/runs/r1/x")
    with Hdf5Source(path, ReadOptions()) as src:
        got = read_all(src)
        meta = src.metadata()
    assert list(got) == ["latest.x", "runs.r1.x", "x_alias"]
    for values in got.values():
        np.testing.assert_array_equal(values, np.arange(4))
    assert meta["datasets"]["latest.x"] == "/latest/x"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (h5py.ExternalLink("other.h5", "/x"), "is an external link to other.h5:/x"),
        (h5py.SoftLink("/nowhere"), "is a dangling soft link to /nowhere"),
        (h5py.SoftLink("/g"), "links back to its parent group /g, forming a cycle"),
    ],
    ids=["external", "dangling", "cycle"],
)
def test_links_that_leave_the_file_or_loop_are_refused(
    tmp_path: Path, link: Any, expected: str
) -> None:
    make_file(tmp_path / "other.h5", {"x": np.arange(4)})
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["g/x"] = np.arange(4)
        f["g/link"] = link
    with pytest.raises(
        SourceError, match=rf"link /g/link \(field 'g\.link'\) {expected}.*--fields"
    ):
        Hdf5Source(path, ReadOptions())
    with Hdf5Source(path, ReadOptions(fields=("g.x",))) as src:
        np.testing.assert_array_equal(read_all(src)["g.x"], np.arange(4))


def test_hard_link_cycle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["g/x"] = np.arange(4)
        f["g/again"] = f["g"]
    with pytest.raises(SourceError, match=r"/g/again .*cycle"):
        Hdf5Source(path, ReadOptions())


def test_data_in_other_files_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    np.arange(4, dtype="<i4").tofile(raw)
    make_file(tmp_path / "src.h5", {"x": np.arange(4)})
    path = tmp_path / "d.h5"
    layout = h5py.VirtualLayout(shape=(4,), dtype="i8")
    layout[:] = h5py.VirtualSource(str(tmp_path / "src.h5"), "x", shape=(4,))
    with h5py.File(path, "w") as f:
        f.create_dataset("ext", shape=(4,), dtype="<i4", external=[(str(raw), 0, 16)])
        f.create_virtual_dataset("virt", layout)
        f["ok"] = np.arange(4)
    with pytest.raises(SourceError, match=r"/ext .*external files"):
        Hdf5Source(path, ReadOptions(fields=("ext",)))
    with pytest.raises(SourceError, match=r"/virt .*virtual dataset mapping other files"):
        Hdf5Source(path, ReadOptions(fields=("virt",)))
    with Hdf5Source(path, ReadOptions(fields=("ok",))) as src:
        np.testing.assert_array_equal(read_all(src)["ok"], np.arange(4))


def test_colliding_field_names_are_refused(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"a/b": np.arange(3), "a.b": np.arange(3)})
    with pytest.raises(SourceError, match=r"/a\.b .*and /a/b both map to the field name 'a\.b'"):
        Hdf5Source(path, ReadOptions())


def test_named_datatypes_are_not_fields(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"x": np.arange(3)})
    with h5py.File(path, "a") as f:
        f["dtype"] = np.dtype("f4")
    with Hdf5Source(path, ReadOptions()) as src:
        assert [f.name for f in src.fields] == ["x"]


def test_file_without_datasets_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_group("empty")
    with pytest.raises(SourceError, match="holds no datasets"):
        Hdf5Source(path, ReadOptions())


@pytest.mark.parametrize("kind", ["text", "truncated", "folder"])
def test_not_an_hdf5_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.h5"
    if kind == "text":
        path.write_text("not hdf5\n")
    elif kind == "truncated":
        make_file(tmp_path / "good.h5", {"x": np.arange(1000)})
        path.write_bytes((tmp_path / "good.h5").read_bytes()[:1000])
    else:
        path.mkdir()
    with pytest.raises(SourceError, match=r"bad\.h5: not a readable HDF5 file"):
        Hdf5Source(path, ReadOptions())


def test_corrupt_group_metadata_is_refused(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"g/x": np.arange(3)})
    # Break the B-tree signatures that index the groups' members.
    path.write_bytes(path.read_bytes().replace(b"TREE", b"XXXX"))
    with pytest.raises(SourceError, match=r"d\.h5: corrupt HDF5 file .*B-tree"):
        Hdf5Source(path, ReadOptions())


def test_corrupt_chunk_names_dataset_and_samples(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    values = np.arange(40, dtype=np.int64)
    with h5py.File(path, "w") as f:
        f["ok"] = np.arange(40)
        ds = f.create_dataset("g/x", data=values, chunks=(10,), compression="gzip")
        info = ds.id.get_chunk_info(1)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(raw))
    with Hdf5Source(path, ReadOptions()) as src:
        blocks = src.blocks(10)
        np.testing.assert_array_equal(next(blocks)["g.x"], values[:10])
        with pytest.raises(SourceError, match=r"cannot read dataset /g/x samples 10:20"):
            next(blocks)


def test_inputs_unchanged_and_file_closed(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    path = make_file(tmp_path / "d.h5", data)
    before = tree_hash(tmp_path)
    src = Hdf5Source(path, ReadOptions())
    with pytest.raises(OSError, match="already open"):
        h5py.File(path, "r+")
    read_all(src)
    src.close()
    assert tree_hash(tmp_path) == before
    with h5py.File(path, "r+") as f:
        f["extra"] = np.arange(3)


def test_file_closed_after_refusal(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"scalar": np.float64(1.0)})
    with pytest.raises(SourceError, match="0-d"):
        Hdf5Source(path, ReadOptions())
    with h5py.File(path, "r+") as f:
        f["extra"] = np.arange(3)


def test_empty_datasets_yield_no_blocks(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.h5", {"x": np.zeros((0, 2), np.float32)})
    with Hdf5Source(path, ReadOptions()) as src:
        assert src.length == 0
        assert src.fields[0].sample_shape == (2,)
        assert list(src.blocks(3)) == []
