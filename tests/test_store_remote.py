"""The commit protocol of stores in object storage (gpuds/commit_remote.py, docs/FORMAT.md "Safe
writes"), on a real S3 API server: killed runs never leave a store that reads as complete, a
rerun cleans up, an overwrite never shows a mix, two writers never both succeed."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import gpuds
from gpuds.commit_remote import INCOMPLETE, RemoteCommit
from gpuds.errors import IncompleteStoreError, StoreError, StoreExistsError
from gpuds.storage import location
from gpuds.store import StoreInfo, StoreWriter

from .conftest import S3

DEAD_PID = 2**22 + 4321  # above Linux's default pid_max: never alive


class Killed(BaseException):
    """Stands for SIGKILL: nothing the run does afterwards (no clean-up) happens."""


def _input(tmp_path: Path, seed: int, n: int = 1000) -> Path:
    """A small local store of two fields (several chunks and shards each)."""
    rng = np.random.default_rng(seed)
    np.save(tmp_path / f"x{seed}.npy", rng.integers(0, 255, (n, 8, 8), dtype=np.uint8))
    np.save(tmp_path / f"y{seed}.npy", rng.normal(size=(n, 3)).astype("f4"))
    out = tmp_path / f"in{seed}.zarr"
    gpuds.ingest([tmp_path / f"x{seed}.npy", tmp_path / f"y{seed}.npy"], out, chunk_mb=0.01)
    return out


def _values(ds: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(array[...]) for name, array in ds.arrays.items()}


def _compress_settings() -> dict[str, Any]:
    """Small chunks, one chunk a shard: a dozen objects to kill the run between."""
    from gpuds.compress import FieldSettings

    return {"settings": FieldSettings(gpuds.CodecConfig("zstd", shuffle=False), 0.01, 0.01)}


def _refused(url: str) -> None:
    """gpuds.open, gpuds inspect and zarr-python all refuse the store at ``url``."""
    with pytest.raises(StoreError):
        gpuds.open(url)
    with pytest.raises(StoreError):
        gpuds.inspect(url)
    loc = location(url)
    with pytest.raises(Exception):  # noqa: B017 - zarr raises its own types
        zarr.open_group(loc.zarr_store(read_only=True), mode="r")


class _Kill:
    """Kill the run (in this process) at its ``at``-th object write: the write raises
    :class:`Killed`, and the run's clean-up does nothing, as after SIGKILL. The run's process id
    is a dead one, as the rerun (a new process) would see it. ``at=0``: count the writes only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        import obstore

        self.at = at
        self.count = 0
        self.lock = threading.Lock()
        put, put_async = obstore.put, obstore.put_async

        def counted(function: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.lock:
                    self.count += 1
                    if self.count == self.at:
                        raise Killed
                return function(*args, **kwargs)

            return wrapper

        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.count += 1
                if self.count == self.at:
                    raise Killed
            return await put_async(*args, **kwargs)

        monkeypatch.setattr(obstore, "put", counted(put))
        monkeypatch.setattr(obstore, "put_async", counted_async)
        if at:  # else only count the writes
            monkeypatch.setattr(RemoteCommit, "discard", lambda self: None)
            monkeypatch.setattr(os, "getpid", lambda: DEAD_PID)


def _writes(s3: S3, source: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many object writes a whole compress of ``source`` makes."""
    with monkeypatch.context() as m:
        counter = _Kill(m, at=0)
        gpuds.compress(source, f"{s3.url}/count.zarr", **_compress_settings())
    return counter.count


def test_a_run_killed_at_any_write_leaves_nothing_complete_and_a_rerun_cleans_up(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Invariants 1 and 2 at every write of a compress to the bucket: the claim, each data
    object, each array's metadata, the root."""
    source = _input(tmp_path, 1)
    want = _values(gpuds.open(source))
    total = _writes(s3, source, monkeypatch)
    assert total > 10, total
    url = f"{s3.url}/data.zarr"
    for at in range(1, total + 1):
        with monkeypatch.context() as m:
            _Kill(m, at)
            with pytest.raises(Killed):
                gpuds.compress(source, url, **_compress_settings())
        _refused(url)
        gpuds.compress(source, url, **_compress_settings())  # the rerun takes over
        got = _values(gpuds.open(url))
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        assert [k.removeprefix("data.zarr/") for k in s3.keys("data.zarr/")] == [
            k.removeprefix("count.zarr/") for k in s3.keys("count.zarr/")
        ], f"leftovers after a kill at write {at}"
        s3.client().delete_objects(
            Bucket=s3.bucket, Delete={"Objects": [{"Key": k} for k in s3.keys("data.zarr/")]}
        )


def test_an_overwrite_killed_at_any_write_never_shows_a_mix(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Invariant 3: readers see the old store, a store they refuse, or the new one."""
    old_source, new_source = _input(tmp_path, 2), _input(tmp_path, 3)
    old = _values(gpuds.open(old_source))
    new = _values(gpuds.open(new_source))
    total = _writes(s3, new_source, monkeypatch)
    url = f"{s3.url}/data.zarr"
    for at in range(1, total + 1, 3):
        gpuds.compress(old_source, url, overwrite=True, **_compress_settings())
        with monkeypatch.context() as m:
            _Kill(m, at)
            with pytest.raises(Killed):
                gpuds.compress(new_source, url, overwrite=True, **_compress_settings())
        try:
            got = _values(gpuds.open(url))
        except StoreError:
            _refused(url)
            continue
        assert at == 1, f"killed at write {at}, yet the store opens"
        for name in old:  # killed before its claim: the old store, whole
            np.testing.assert_array_equal(got[name], old[name])
    gpuds.compress(new_source, url, overwrite=True, **_compress_settings())
    got = _values(gpuds.open(url))
    for name in new:
        np.testing.assert_array_equal(got[name], new[name])


def test_a_store_in_a_bucket_is_written_and_replaced_only_as_asked(s3: S3, tmp_path: Path):
    source = _input(tmp_path, 4)
    url = f"{s3.url}/d.zarr"
    summary = gpuds.compress(source, url, **_compress_settings())
    assert summary["output"] == url
    with pytest.raises(StoreExistsError, match="already exists; pass --overwrite"):
        gpuds.compress(source, url, **_compress_settings())
    gpuds.compress(source, url, overwrite=True, **_compress_settings())
    root = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key="d.zarr/zarr.json")["Body"].read()
    )
    assert root["node_type"] == "group" and root["attributes"]["gpuds"]["complete"] is True
    # Objects that are not a store are never deleted, not even with --overwrite.
    s3.client().put_object(Bucket=s3.bucket, Key="photos/cat.png", Body=b"x")
    with pytest.raises(StoreExistsError, match="no Zarr store; refusing"):
        gpuds.compress(source, f"{s3.url}/photos", overwrite=True, **_compress_settings())
    s3.client().put_object(Bucket=s3.bucket, Key="notes/zarr.json", Body=b"not json")
    with pytest.raises(StoreExistsError, match="not Zarr metadata"):
        gpuds.compress(source, f"{s3.url}/notes", overwrite=True, **_compress_settings())
    assert s3.keys("photos/") == ["photos/cat.png"] and s3.keys("notes/") == ["notes/zarr.json"]
    with pytest.raises(StoreError, match="overlaps the input"):
        gpuds.compress(url, f"{url}/inner.zarr")


def test_a_failed_run_removes_what_it_wrote(s3: S3, tmp_path: Path):
    url = f"{s3.url}/f.zarr"
    with pytest.raises(RuntimeError, match="boom"), StoreWriter(url) as writer:
        field = writer.create_field("x", np.dtype("i4"), (), length=100, chunk=8)
        field.append(np.arange(100, dtype="i4"))
        assert s3.keys("f.zarr/")  # the mark and chunks are there
        raise RuntimeError("boom")
    assert s3.keys("f.zarr/") == []


def test_two_writers_never_both_succeed(s3: S3, tmp_path: Path):
    """Invariant 4: of two runs claiming the same new store at once, one claims it; the other
    fails before writing anything."""
    url = f"{s3.url}/race.zarr"
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def run() -> None:
        writer = StoreWriter(url)
        barrier.wait()
        try:
            with writer:
                field = writer.create_field("x", np.dtype("i8"), (), length=10, chunk=4)
                field.append(np.arange(10))
                field.finish()
                writer.commit(StoreInfo(num_samples=10, fields={"x": "array"}))
            outcomes.append("ok")
        except (IncompleteStoreError, StoreExistsError, StoreError) as e:
            outcomes.append(type(e).__name__)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[1] == "ok" and outcomes.count("ok") == 1, outcomes
    np.testing.assert_array_equal(gpuds.open(url).arrays["x"][:], np.arange(10))


def test_a_run_whose_claim_was_taken_over_does_not_commit(s3: S3, monkeypatch):
    """A run that a rerun took over (it looked dead) finds out at its commit at the latest, and
    reports failure; the rerun's store stands."""
    url = f"{s3.url}/t.zarr"
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: DEAD_PID)
        first = StoreWriter(url).__enter__()
    field = first.create_field("x", np.dtype("i8"), (), length=10, chunk=4)
    field.append(np.arange(10))
    field.finish()
    with StoreWriter(url) as second:  # takes over: the first one's process looks dead
        f2 = second.create_field("x", np.dtype("i8"), (), length=10, chunk=4)
        f2.append(np.arange(10, 20))
        f2.finish()
        second.commit(StoreInfo(num_samples=10, fields={"x": "array"}))
    with pytest.raises(StoreError, match="took the store over"):
        first.commit(StoreInfo(num_samples=10, fields={"x": "array"}))
    first.__exit__(None, None, None)
    np.testing.assert_array_equal(gpuds.open(url).arrays["x"][:], np.arange(10, 20))


def test_a_live_writer_elsewhere_is_waited_for_until_its_claim_goes_stale(s3: S3, monkeypatch):
    """A mark from another machine is a live run while it is renewed; one not renewed for
    STALE_AFTER seconds is a dead run's, and is taken over."""
    url = f"{s3.url}/h.zarr"
    mark = RemoteCommit.mark({"id": "x", "host": "elsewhere", "pid": 1, "started": "t"})
    s3.client().put_object(Bucket=s3.bucket, Key="h.zarr/zarr.json", Body=mark)
    s3.client().put_object(Bucket=s3.bucket, Key="h.zarr/x/c/0", Body=b"left by it")
    with pytest.raises(IncompleteStoreError, match=r"another run is writing.*host elsewhere"):
        StoreWriter(url).__enter__()
    with pytest.raises(IncompleteStoreError, match="incomplete store: being written"):
        gpuds.open(url)
    with monkeypatch.context() as m:
        m.setattr(RemoteCommit, "STALE_AFTER", -1.0)  # as if not renewed for a long time
        writer = StoreWriter(url).__enter__()
    try:
        assert s3.keys("h.zarr/") == ["h.zarr/zarr.json"]  # its leftovers went first
        field = writer.create_field("y", np.dtype("i8"), (), length=3, chunk=4)
        field.append(np.arange(3))
        field.finish()
        writer.commit(StoreInfo(num_samples=3, fields={"y": "array"}))
    finally:
        writer.__exit__(None, None, None)
    assert s3.keys("h.zarr/") == ["h.zarr/y/c/0", "h.zarr/y/zarr.json", "h.zarr/zarr.json"]


def test_a_run_renews_its_claim_and_stops_writing_once_it_is_lost(s3: S3, monkeypatch):
    monkeypatch.setattr(RemoteCommit, "RENEW_EVERY", 0.05)
    url = f"{s3.url}/r.zarr"
    with StoreWriter(url) as writer:
        first = s3.client().head_object(Bucket=s3.bucket, Key="r.zarr/zarr.json")["ETag"]
        for _ in range(100):
            if s3.client().head_object(Bucket=s3.bucket, Key="r.zarr/zarr.json")["ETag"] != first:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the claim was never renewed")
        # Another run takes over (it thought this one dead): the next renewal notices.
        s3.client().put_object(Bucket=s3.bucket, Key="r.zarr/zarr.json", Body=b"{}")
        field = writer.create_field("x", np.dtype("i8"), (), length=8, chunk=4)
        with pytest.raises(StoreError, match="another run took the store over"):
            for _ in range(100):
                field.append(np.arange(8))
                threading.Event().wait(0.05)
    # The store is the other run's now: nothing of it was deleted or replaced.
    body = s3.client().get_object(Bucket=s3.bucket, Key="r.zarr/zarr.json")["Body"].read()
    assert body == b"{}"


def test_the_incomplete_mark_is_refused_by_every_reader(s3: S3):
    url = f"{s3.url}/m.zarr"
    mark = RemoteCommit.mark({"id": "x", "host": "h", "pid": 7, "started": "2026-01-01T00:00:00Z"})
    assert json.loads(mark)["node_type"] == INCOMPLETE
    s3.client().put_object(Bucket=s3.bucket, Key="m.zarr/zarr.json", Body=mark)
    _refused(url)
    with pytest.raises(IncompleteStoreError, match=r"pid 7 on host h since 2026"):
        gpuds.open(url)
