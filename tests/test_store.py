from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from gpuds.errors import IncompleteStoreError, StoreError, StoreExistsError
from gpuds.store import (
    ATTR,
    FORMAT_VERSION,
    StoreInfo,
    StoreWriter,
    chunk_samples,
    dataset_fingerprint,
    open_store,
    read_info,
)


def _write(out: Path, values: np.ndarray, info: StoreInfo | None = None, **kw: object) -> Path:
    with StoreWriter(out, **kw) as w:  # type: ignore[arg-type]
        f = w.create_field("x", values.dtype, values.shape[1:], length=len(values), chunk=4)
        f.append(values)
        f.finish()
        return w.commit(info or StoreInfo(num_samples=len(values), fields={"x": "array"}))


@pytest.mark.parametrize(
    ("sample_nbytes", "mb", "expected"),
    [(1, 1.0, 2**20), (8, 1.0, 2**17), (3072, 1.0, 256), (3000, 1.0, 256), (2**21, 1.0, 1)],
)
def test_chunk_samples_is_power_of_two_within_target(sample_nbytes: int, mb: float, expected: int):
    assert chunk_samples(sample_nbytes, mb) == expected


def test_chunk_samples_rejects_non_positive():
    with pytest.raises(StoreError, match="positive"):
        chunk_samples(8, 0)


def test_commit_writes_marker_and_values(tmp_path: Path):
    values = np.arange(30, dtype="i2").reshape(10, 3)
    path = _write(tmp_path / "a.zarr", values)
    group = open_store(path)
    info = read_info(group)
    assert info["complete"] is True and info["format_version"] == FORMAT_VERSION
    np.testing.assert_array_equal(group["x"][:], values)
    assert group["x"].chunks == (4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_failure_leaves_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "a.zarr") as w:
        f = w.create_field("x", np.dtype("f4"), (), length=4, chunk=2)
        f.append(np.zeros(4, "f4"))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_appends_that_overrun_the_length_grow_the_array(tmp_path: Path):
    with StoreWriter(tmp_path / "a.zarr") as w:
        f = w.create_field("x", np.dtype("i4"), (), length=2, chunk=3)
        for start in range(0, 10, 4):
            f.append(np.arange(start, min(start + 4, 10), dtype="i4"))
        f.finish()
        w.commit(StoreInfo(num_samples=10))
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "a.zarr")["x"][:], np.arange(10))


def test_existing_output_needs_overwrite(tmp_path: Path):
    path = _write(tmp_path / "a.zarr", np.zeros(3, "f4"))
    with pytest.raises(StoreExistsError, match="--overwrite"):
        StoreWriter(path)
    _write(path, np.ones(5, "f4"), overwrite=True)
    np.testing.assert_array_equal(open_store(path)["x"][:], np.ones(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path: Path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "me.jpg").write_bytes(b"not really")
    with pytest.raises(StoreExistsError, match="not a Zarr store"):
        StoreWriter(precious, overwrite=True)
    assert (precious / "me.jpg").read_bytes() == b"not really"


def test_output_may_not_overlap_inputs(tmp_path: Path):
    src = tmp_path / "data"
    src.mkdir()
    with pytest.raises(StoreError, match="overlaps the input"):
        StoreWriter(src / "out.zarr", inputs=[src])
    with pytest.raises(StoreError, match="overlaps the input"):
        StoreWriter(tmp_path, inputs=[src], overwrite=True)


def test_urls_other_than_object_stores_are_refused_for_output(tmp_path: Path):
    with pytest.raises(StoreError, match="to local paths and to s3://, gs:// and az:// URLs"):
        StoreWriter("memory://bucket/x.zarr")


def test_stale_partials_of_dead_runs_are_removed(tmp_path: Path):
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: never alive
    stale = tmp_path / f".a.zarr.partial-{dead_pid}-abcd1234"
    stale.mkdir()
    live = tmp_path / f".a.zarr.partial-{os.getpid()}-abcd1234"
    live.mkdir()
    other = tmp_path / f".b.zarr.partial-{dead_pid}-abcd1234"
    other.mkdir()
    _write(tmp_path / "a.zarr", np.zeros(2, "f4"))
    assert not stale.exists()
    assert live.exists() and other.exists()


def test_open_store_refuses_incomplete_and_foreign(tmp_path: Path):
    path = _write(tmp_path / "a.zarr", np.zeros(2, "f4"))
    group = zarr.open_group(path, mode="r+")
    info = dict(group.attrs[ATTR])
    info["complete"] = False
    group.attrs[ATTR] = info
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(path)
    info["complete"] = True
    info["format_version"] = FORMAT_VERSION + 1
    group.attrs[ATTR] = info
    with pytest.raises(StoreError, match="upgrade gpuds"):
        open_store(path)
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.create_array("y", shape=(2,), dtype="f4")
    with pytest.raises(StoreError, match="not a gpuds store"):
        open_store(tmp_path / "plain.zarr")
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "missing.zarr")


def test_fingerprint_depends_on_content_not_blocking(tmp_path: Path):
    values = np.random.default_rng(0).normal(size=(50, 2)).astype("f4")
    prints = []
    for i, block in enumerate((50, 7)):
        with StoreWriter(tmp_path / f"{i}.zarr") as w:
            f = w.create_field("x", values.dtype, (2,), length=50, chunk=8)
            for s in range(0, 50, block):
                f.append(values[s : s + block])
            prints.append(f.finish())
            w.commit(StoreInfo(num_samples=50))
    assert prints[0] == prints[1]
    with StoreWriter(tmp_path / "c.zarr") as w:
        f = w.create_field("x", values.dtype, (2,), length=50, chunk=8)
        changed = values.copy()
        changed[3, 1] += 1
        f.append(changed)
        assert f.finish() != prints[0]


def _info() -> StoreInfo:
    return StoreInfo(
        num_samples=5,
        splits=["train", "val"],
        split_sizes={"train": 4, "val": 1},
        fields={"x": "numeric", "labels": "label"},
        classes={"labels": ["a", "b"]},
        stats={"ops": [{"op": "standardize", "index": 0, "fields": ["x"], "stats": {}}]},
        sources=[{"format": "csv", "path": "t.csv", "rows": 5}],
        fingerprint="blake2b:00",
        skipped=[{"source": "d", "path": "7.png", "error": "truncated"}],
        ignored_files=["d/README"],
        history=[{"stage": "ingest", "time": "t", "settings": {"chunk_mb": 1.0}, "seconds": 0.1}],
        arrays={"train/x": {"zarr_format": 3}},
        complete=True,
    )


def test_store_info_round_trips_through_json():
    info = _info()
    data = json.loads(json.dumps(info.to_dict()))
    assert StoreInfo.from_dict(data) == info
    assert list(data) == [
        "format_version",
        "tool_version",
        "created",
        "num_samples",
        "splits",
        "split_sizes",
        "fields",
        "classes",
        "stats",
        "sources",
        "fingerprint",
        "skipped",
        "ignored_files",
        "history",
        "arrays",
        "complete",
    ]
    data["history"][0]["settings"]["chunk_mb"] = 2.0
    assert info.history[0]["settings"]["chunk_mb"] == 1.0, "to_dict hands out copies"


def test_store_info_writes_split_sizes_for_split_stores_only():
    assert "split_sizes" not in StoreInfo(num_samples=3).to_dict()
    assert StoreInfo.from_dict(StoreInfo().to_dict()) == StoreInfo()


def test_store_info_refuses_keys_of_the_wrong_type_and_ignores_unknown_ones():
    data = _info().to_dict()
    assert StoreInfo.from_dict({**data, "future_key": 1}) == _info()
    for key, value, message in [
        ("history", {"stage": "ingest"}, r"'history' is \{\"stage\": \"ingest\"\}, expected list"),
        ("num_samples", True, r"'num_samples' is true, expected int"),
        ("fingerprint", 3, r"'fingerprint' is 3, expected str or NoneType"),
        ("format_version", None, r"format version None is not a valid version"),
    ]:
        with pytest.raises(StoreError, match=message):
            StoreInfo.from_dict({**data, key: value})


def test_next_stage_records_the_input_and_leaves_what_the_commit_writes():
    info = _info().next_stage("compress", "in.zarr", {"verify": True}, 0.0, fields={"x": "x"})
    assert info.fields == {"x": "x"} and info.sources == _info().sources
    last = info.history[-1]
    assert list(last) == ["stage", "time", "input", "settings", "seconds"]
    assert last["input"] == {"path": "in.zarr", "fingerprint": "blake2b:00"}
    assert info.history[:-1] == _info().history
    assert (info.fingerprint, info.arrays, info.complete, info.created) == (None, {}, False, "")


def test_commit_writes_what_the_writer_owns(tmp_path: Path):
    with StoreWriter(tmp_path / "a.zarr") as w:
        assert w.group is not None
        w.group.create_group("train")
        prints = {}
        for name in ("train/x", "train/y"):
            f = w.create_field(name, np.dtype("u1"), (), length=3, chunk=2, kind="label")
            f.append(np.arange(3, dtype="u1"))
            prints[name] = f.finish()
        stale = StoreInfo(splits=["train"], split_sizes={"train": 3}, num_samples=3)
        path = w.commit(replace(stale, fingerprint="stale", complete=False, format_version=1))
    group = open_store(path)
    info = read_info(group, parsed=True)
    assert info.complete and info.format_version == FORMAT_VERSION and info.created
    assert info.fingerprint == dataset_fingerprint(prints) and sorted(info.arrays) == sorted(prints)
    assert group["train/x"].attrs[ATTR] == {"kind": "label", "fingerprint": prints["train/x"]}
    assert read_info(group) == info.to_dict()


def test_commit_refuses_a_field_that_was_not_finished(tmp_path: Path):
    message = "fields x were written but not finished"
    with pytest.raises(RuntimeError, match=message), StoreWriter(tmp_path / "a.zarr") as w:
        w.create_field("x", np.dtype("u1"), (), length=3, chunk=2).append(np.zeros(3, "u1"))
        w.commit(StoreInfo(num_samples=3))
    assert list(tmp_path.iterdir()) == []


def test_read_info_parsed_refuses_a_plain_group(tmp_path: Path):
    group = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    assert read_info(group) == {}
    with pytest.raises(StoreError, match="not a gpuds store"):
        read_info(group, parsed=True)
    group.attrs[ATTR] = {"format_version": 2, "splits": "train"}
    with pytest.raises(StoreError, match="'splits' is \"train\", expected list; the store was"):
        read_info(group, parsed=True)


def test_commit_refuses_metadata_the_store_would_be_refused_for(tmp_path: Path):
    with pytest.raises(RuntimeError, match="field x declares 3 samples, the store recorded 4"):
        _write(tmp_path / "a.zarr", np.zeros(3, "u1"), info=StoreInfo(num_samples=4))
    assert list(tmp_path.iterdir()) == []


def test_a_stage_reading_a_format_1_store_writes_format_2(tmp_path: Path):
    """compress copied the input's metadata, format_version 1 included, so its output (with
    checksums and records) was refused as edited; the writer owns the version now."""
    import gpuds

    values = np.arange(300, dtype="<i4").reshape(100, 3)
    group = zarr.open_group(tmp_path / "old.zarr", mode="w-", zarr_format=3)
    array = group.create_array("x", shape=values.shape, chunks=(64, 3), dtype=values.dtype)
    array[...] = values
    group.attrs.put(
        {
            ATTR: {
                "format_version": 1,
                "num_samples": 100,
                "fields": {"x": "array"},
                "complete": True,
            }
        }
    )
    gpuds.compress(tmp_path / "old.zarr", tmp_path / "new.zarr", device="cpu")
    info = read_info(open_store(tmp_path / "new.zarr"), parsed=True)
    assert info.format_version == FORMAT_VERSION and info.history[-1]["stage"] == "compress"
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "new.zarr" / "x")[...], values)
