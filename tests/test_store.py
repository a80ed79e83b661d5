from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from gpuds.errors import IncompleteStoreError, StoreError, StoreExistsError
from gpuds.store import ATTR, FORMAT_VERSION, StoreWriter, chunk_samples, open_store, read_info


def _write(out: Path, values: np.ndarray, **kw: object) -> Path:
    with StoreWriter(out, **kw) as w:  # type: ignore[arg-type]
        f = w.create_field("x", values.dtype, values.shape[1:], length=len(values), chunk=4)
        f.append(values)
        f.finish()
        return w.commit({"fields": {"x": "array"}})


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
        w.commit({})
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


def test_urls_are_refused_for_output(tmp_path: Path):
    with pytest.raises(StoreError, match="local paths"):
        StoreWriter("s3://bucket/x.zarr")


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
            w.commit({})
    assert prints[0] == prints[1]
    with StoreWriter(tmp_path / "c.zarr") as w:
        f = w.create_field("x", values.dtype, (2,), length=50, chunk=8)
        changed = values.copy()
        changed[3, 1] += 1
        f.append(changed)
        assert f.finish() != prints[0]
