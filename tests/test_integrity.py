"""Issue 10's reproductions: epochs deliver what they promise, edited metadata is refused, errors
locate, checksums on every chunk, and format-1 stores still read."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

import gpuds
from gpuds.errors import ConfigError, CorruptChunkError, StoreError
from gpuds.store import ATTR, FIELD_ATTR, field_fingerprint

from .conftest import only_line


def _ingest(tmp: Path, n: int, name: str = "raw.zarr") -> Path:
    np.save(tmp / "ids.npy", np.arange(n, dtype=np.int64))
    np.save(tmp / "x.npy", (np.arange(n * 16) % 251).astype(np.uint8).reshape(n, 16))
    gpuds.ingest([tmp / "ids.npy", tmp / "x.npy"], tmp / name, chunk_mb=0.0005)
    return tmp / name


def _delivered(loader: gpuds.Loader) -> np.ndarray:
    return np.concatenate([b["ids"] for b in loader])


# -- 3. epochs deliver every sample ------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch"), [(21, 32), (400, 32), (1, 1), (33, 32)])
def test_by_default_an_epoch_delivers_every_sample(tmp_path: Path, n: int, batch: int):
    loader = gpuds.open(str(_ingest(tmp_path, n))).loader(batch, device="cpu", seed=1)
    for epoch in range(2):
        loader.set_epoch(epoch)
        ids = _delivered(loader)
        assert sorted(ids.tolist()) == list(range(n))
        assert len(loader) == -(-n // batch)


def test_drop_last_drops_different_samples_each_epoch_and_len_says_so(tmp_path: Path):
    loader = gpuds.open(str(_ingest(tmp_path, 400))).loader(32, drop_last=True, device="cpu")
    assert len(loader) == 12
    missed = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        ids = _delivered(loader)
        assert len(ids) == 12 * 32 and len(set(ids.tolist())) == len(ids)
        missed.append(frozenset(set(range(400)) - set(ids.tolist())))
    assert len(set(missed)) > 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_size": 32, "drop_last": True}, r"21 samples .* rank 0 gets 21; with drop_last"),
        ({"batch_size": 4, "world_size": 30, "rank": 3}, r"21 samples over 30 rank.*gets 0"),
    ],
)
def test_an_epoch_that_would_deliver_nothing_is_an_error(
    tmp_path: Path, options: dict[str, int], match: str
):
    ds = gpuds.open(str(_ingest(tmp_path, 21)))
    batch = options.pop("batch_size")
    with pytest.raises(ConfigError, match=match):
        ds.loader(batch, device="cpu", **options)  # type: ignore[arg-type]


# -- 4. metadata is checked against the record -------------------------------------------------


def _edit_json(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return _ingest(tmp_path, 300)


def test_an_edited_dtype_is_refused_naming_field_and_key(store: Path, cli):
    _edit_json(store / "x" / "zarr.json", lambda d: d.update(data_type="int8"))
    with pytest.raises(
        StoreError, match=r"field x: data_type \"int8\" in its zarr.json, \"uint8\""
    ):
        gpuds.open(str(store))
    report = gpuds.inspect(str(store), verify=True)
    assert any("data_type" in p for p in report["problems"])
    result = cli("inspect", store, "--verify")
    assert result.code == 1 and "data_type" in result.err


def test_an_enlarged_shape_is_refused(store: Path):
    _edit_json(store / "x" / "zarr.json", lambda d: d.update(shape=[4000, 16]))
    with pytest.raises(StoreError, match=r"field x: shape \[4000, 16\] in its zarr.json"):
        gpuds.open(str(store))


def test_shapes_that_disagree_with_the_recorded_sizes_are_refused(store: Path):
    def edit(document: dict) -> None:  # type: ignore[type-arg]
        document["attributes"][ATTR]["num_samples"] = 299

    _edit_json(store / "zarr.json", edit)
    with pytest.raises(StoreError, match="declares 300 samples, the store recorded 299"):
        gpuds.open(str(store))


def test_a_huge_declared_shape_fails_fast_without_allocating(store: Path, cli):
    _edit_json(store / "x" / "zarr.json", lambda d: d.update(shape=[2**40, 16]))
    start = time.perf_counter()
    with pytest.raises(StoreError, match="shape"):
        gpuds.open(str(store))
    result = cli("inspect", store, "--verify")
    assert result.code == 1 and "not verified" in result.err
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("content", [b"", b"{", b"\x00\xff garbage", b"[1, 2]"])
@pytest.mark.parametrize("which", ["zarr.json", "x/zarr.json"])
def test_damaged_metadata_is_one_line_never_a_traceback(
    store: Path, cli, content: bytes, which: str
):
    (store / which).write_bytes(content)
    with pytest.raises(StoreError):
        gpuds.open(str(store))
    result = cli("inspect", store, "--verify")
    assert result.code == 1
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert result.err.strip().startswith("error:")


def test_a_field_added_after_writing_is_refused(store: Path):
    zarr.create_array(str(store), name="extra", shape=(300,), dtype="f4", zarr_format=3)
    with pytest.raises(StoreError, match="field extra is not recorded"):
        gpuds.open(str(store))


def test_fingerprints_cover_dtype_and_shape():
    digest = b"\x00" * 16
    same = field_fingerprint(digest, "uint8", (4, 4))
    assert same == field_fingerprint(digest, np.dtype("u1"), [4, 4])
    assert same != field_fingerprint(digest, "int8", (4, 4))
    assert same != field_fingerprint(digest, "uint8", (16, 1))


# -- checksums and locating errors -------------------------------------------------------------


def test_every_chunk_of_every_stage_carries_a_crc32c(tmp_path: Path):
    raw = _ingest(tmp_path, 300)
    config = {"ops": [{"op": "split", "fractions": [0.8, 0.2]}]}
    gpuds.preprocess(raw, tmp_path / "prep.zarr", config=config, device="cpu")
    gpuds.compress(tmp_path / "prep.zarr", tmp_path / "data.zarr")
    for store in ("raw.zarr", "prep.zarr", "data.zarr"):
        fields = gpuds.inspect(str(tmp_path / store))["fields"]
        assert fields and all(f["codecs"][-1] == "crc32c" for f in fields), store
        assert all(f["checksum"] == "crc32c" for f in fields)


def test_a_loader_error_names_store_split_field_shard_and_chunk(tmp_path: Path):
    raw = _ingest(tmp_path, 300)
    config = {"ops": [{"op": "split", "fractions": [0.5, 0.5]}]}
    gpuds.preprocess(raw, tmp_path / "prep.zarr", config=config, device="cpu")
    settings = gpuds.FieldSettings(chunk_mb=0.0005, shard_mb=0.001)
    gpuds.compress(tmp_path / "prep.zarr", tmp_path / "data.zarr", settings=settings)
    shard = tmp_path / "data.zarr" / "val" / "x" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[3] ^= 0x10
    shard.write_bytes(bytes(data))
    gpuds.open(str(tmp_path / "data.zarr"))["train"].loader(16, device="cpu")  # train is intact
    loader = gpuds.open(str(tmp_path / "data.zarr"))["val"].loader(16, device="cpu")
    with pytest.raises(CorruptChunkError) as caught:
        list(loader)
    message = str(caught.value)
    assert "data.zarr field 'val/x', shard c/0/0 inner chunk 0 (samples 0.." in message
    assert "crc32c checksum mismatch" in message


def test_a_compressed_store_with_a_missing_shard_is_refused_by_compress(tmp_path: Path, cli):
    raw = _ingest(tmp_path, 300)
    settings = gpuds.FieldSettings(chunk_mb=0.0005, shard_mb=0.001)
    gpuds.compress(raw, tmp_path / "data.zarr", settings=settings)
    (tmp_path / "data.zarr" / "x" / "c" / "1" / "0").unlink()
    result = cli(
        "compress", tmp_path / "data.zarr", "-o", tmp_path / "again.zarr", "--device", "cpu"
    )
    assert result.code == 1
    assert "missing shard in " in only_line(result.err)
    assert not (tmp_path / "again.zarr").exists()


# -- format 1 stores (no checksums, no record) still read --------------------------------------


def _format1_store(path: Path, values: np.ndarray) -> None:
    """A store as gpuds 0.1.0 wrote it before format 2: bytes + zstd, no crc32c, no record."""
    import hashlib

    group = zarr.open_group(path, mode="w-", zarr_format=3)
    array = group.create_array(
        "x", shape=values.shape, chunks=(64, *values.shape[1:]), dtype=values.dtype,
        serializer=BytesCodec(endian="little"), compressors=ZstdCodec(level=1, checksum=True),
        config={"write_empty_chunks": True},
    )  # fmt: skip
    array[...] = values
    fingerprint = "blake2b:" + hashlib.blake2b(values.tobytes(), digest_size=16).hexdigest()
    array.attrs.put({FIELD_ATTR: {"kind": "array", "fingerprint": fingerprint}})
    group.attrs.put(
        {
            ATTR: {
                "format_version": 1, "tool_version": "0.1.0", "num_samples": len(values),
                "splits": [], "fields": {"x": "array"}, "stats": {}, "complete": True,
            }
        }
    )  # fmt: skip


def test_a_format_1_store_still_reads_and_says_it_has_no_checksums(tmp_path: Path, cli):
    values = np.arange(200 * 3, dtype="<i4").reshape(200, 3)
    _format1_store(tmp_path / "old.zarr", values)
    loader = gpuds.open(str(tmp_path / "old.zarr")).loader(50, shuffle=False, device="cpu")
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in loader]), values)
    report = gpuds.inspect(str(tmp_path / "old.zarr"), verify=True)
    assert report["problems"] == [] and report["fields"][0]["checksum"] is None
    result = cli("inspect", tmp_path / "old.zarr")
    assert result.code == 0 and "checksums: none on 1 field" in result.out
    shutil.rmtree(tmp_path / "old.zarr" / "x" / "c" / "1")
    with pytest.raises(CorruptChunkError, match="missing chunk in"):
        list(gpuds.open(str(tmp_path / "old.zarr")).loader(50, shuffle=False, device="cpu"))


# -- other readers check the checksums too ---------------------------------------------------


def _damage_first_chunk(store: Path, field: str, sharded: bool) -> None:
    """Flip one byte in the middle of the first stored chunk's encoded bytes."""
    if sharded:
        shard = next(p for p in sorted((store / field / "c").rglob("*")) if p.is_file())
        index = np.frombuffer(shard.read_bytes()[-(16 * 1 + 4) : -4], dtype="<u8")
        offset, nbytes = (int(v) for v in index[:2])
        data = bytearray(shard.read_bytes())
        data[offset + nbytes // 2] ^= 0x01
        shard.write_bytes(bytes(data))
    else:
        chunk = store / field / "c" / "0" / "0"
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x01
        chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("stage", ["ingest", "compress"])
def test_zarr_python_and_tensorstore_read_the_store_and_refuse_a_flipped_byte(
    tmp_path: Path, stage: str
):
    ts = pytest.importorskip("tensorstore")
    store = _ingest(tmp_path, 300)
    if stage == "compress":
        # One chunk per shard, so the first shard's index has a single entry.
        settings = gpuds.FieldSettings(
            codec=gpuds.CodecConfig("zstd", None, False), chunk_mb=0.0005, shard_mb=0.0005
        )
        gpuds.compress(store, tmp_path / "data.zarr", settings=settings)
        store = tmp_path / "data.zarr"
    assert gpuds.inspect(str(store))["portability"] == "any"
    expected = (np.arange(300 * 16) % 251).astype(np.uint8).reshape(300, 16)

    def open_ts() -> object:
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / "x")}}
        return ts.open(spec, read=True).result()

    np.testing.assert_array_equal(open_ts().read().result(), expected)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["x"][:], expected)
    _damage_first_chunk(store, "x", sharded=stage == "compress")
    with pytest.raises(ValueError):  # tensorstore's checksum error
        open_ts().read().result()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_group(store, mode="r")["x"][:]
    with pytest.raises(CorruptChunkError, match="crc32c checksum mismatch"):
        list(gpuds.open(str(store)).loader(32, device="cpu"))


def test_a_format_version_edited_down_is_refused(store: Path):
    def edit(document: dict) -> None:  # type: ignore[type-arg]
        document["attributes"][ATTR]["format_version"] = 1

    _edit_json(store / "zarr.json", edit)
    with pytest.raises(StoreError, match="format version 1 declared, but the store has format-2"):
        gpuds.open(str(store))


@pytest.mark.parametrize("version", [0, -1, "2", True])
def test_a_format_version_that_is_not_one_is_refused(store: Path, version: object):
    def edit(document: dict) -> None:  # type: ignore[type-arg]
        document["attributes"][ATTR]["format_version"] = version

    _edit_json(store / "zarr.json", edit)
    with pytest.raises(StoreError, match="is not a valid version"):
        gpuds.open(str(store))


def test_shard_index_entries_may_not_overlap():
    import google_crc32c

    from gpuds.codecs.shard import parse_index

    index = np.array([[0, 10], [5, 10]], dtype="<u8").tobytes()
    tail = index + google_crc32c.value(index).to_bytes(4, "little")
    with pytest.raises(CorruptChunkError, match="chunks 0 and 1 claim overlapping bytes"):
        parse_index(tail, 20 + len(tail), 2, "c/0")


def test_storage_transformers_are_refused(store: Path):
    def edit(document: dict) -> None:  # type: ignore[type-arg]
        document["storage_transformers"] = [{"name": "mystery", "configuration": {}}]

    _edit_json(store / "x" / "zarr.json", edit)

    def record(document: dict) -> None:  # type: ignore[type-arg]
        field = json.loads((store / "x" / "zarr.json").read_text())
        field.pop("attributes", None)
        document["attributes"][ATTR]["arrays"]["x"] = field

    _edit_json(store / "zarr.json", record)
    with pytest.raises(StoreError, match="storage transformers"):
        gpuds.open(str(store)).loader(8, device="cpu")
