"""`gpuds compress` on a Dask cluster: one task per shard, the same bytes whatever the scheduler,
a killed worker, a task failing on bad input, an object-store output written by the workers."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
from gpuds.codecs import CodecConfig
from gpuds.compress import FieldSettings
from gpuds.errors import CorruptChunkError

from .conftest import S3, assert_same_store

distributed = pytest.importorskip("distributed")

SETTINGS = {
    # A shard a task (shards of one digest piece, 1 MiB), the shuffle decided by trial.
    "shard-tasks": FieldSettings(CodecConfig("zstd", None, None), chunk_mb=0.25, shard_mb=1.0),
    # Shards of 100 KiB: a task writes a piece's worth of them.
    "small-shards": FieldSettings(CodecConfig("lz4", None, True), chunk_mb=0.02, shard_mb=0.1),
    "auto": FieldSettings(CodecConfig("auto"), chunk_mb=0.1, shard_mb=0.5),
}


@pytest.fixture(scope="module")
def split_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train/val store of three fields, 3.8 MB and 1.3 MB of the two large ones a split: a few
    shards each at 1 MiB, the last one partial."""
    root = tmp_path_factory.mktemp("cluster-input")
    rng = np.random.default_rng(7)
    n = 20_000
    np.save(root / "x.npy", np.cumsum(rng.normal(size=(n, 64)), axis=0).astype("f4"))
    np.save(root / "img.npy", rng.integers(0, 8, (n, 16, 16), dtype=np.uint8))
    np.save(root / "y.npy", rng.integers(0, 10, n))
    gpuds.ingest([root / "x.npy", root / "img.npy", root / "y.npy"], root / "raw.zarr")
    split = {"ops": [{"op": "split", "fractions": {"train": 0.75, "val": 0.25}}]}
    gpuds.preprocess(root / "raw.zarr", root / "prep.zarr", config=split, device="cpu")
    return root / "prep.zarr"


def _fingerprints(store: Path) -> dict[str, str]:
    """Each array's recorded fingerprint, by path."""
    found = {}
    for meta in sorted(store.rglob("zarr.json")):
        doc = json.loads(meta.read_text())
        if doc.get("node_type") == "array":
            fingerprint = doc["attributes"]["gpuds"].get("fingerprint")
            if fingerprint:
                found[str(meta.parent.relative_to(store))] = fingerprint
    return found


def _compress(source: Path | str, out: Path | str, settings: FieldSettings, **kw: Any) -> Any:
    return gpuds.compress(source, out, settings=settings, device="cpu", **kw)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_output_is_the_same_whatever_the_scheduler(
    split_store: Path, tmp_path: Path, dask_cluster: Any, name: str
):
    settings = SETTINGS[name]
    reference = tmp_path / "threads.zarr"
    summary = _compress(split_store, reference, settings, scheduler="threads")
    assert summary["scheduler"] == "threads"
    assert {"train/x", "val/x", "train/img", "val/y"} <= set(summary["fields"])
    x = gpuds.open(reference)["train"].arrays["x"]
    assert x.shape[0] % x.shards[0] != 0 and x.shape[0] // x.shards[0] >= 3  # several + partial
    for workers in (1, 2, 3):
        out = tmp_path / f"cluster{workers}.zarr"
        summary = _compress(split_store, out, settings, scheduler=dask_cluster(workers))
        assert summary["scheduler"].startswith("the Dask cluster at tcp://")
        assert_same_store(reference, out)
        assert "scheduler" not in (out / "zarr.json").read_text()  # not recorded in the store
    assert _fingerprints(reference) == _fingerprints(split_store)


def test_fields_without_a_fingerprint_are_hashed_by_the_tasks(
    split_store: Path, tmp_path: Path, dask_cluster: Any
):
    bare = tmp_path / "bare.zarr"
    shutil.copytree(split_store, bare)
    for meta in bare.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        if doc.get("node_type") == "array":
            del doc["attributes"]["gpuds"]["fingerprint"]
            meta.write_text(json.dumps(doc))
    assert not _fingerprints(bare)
    for name in ("shard-tasks", "small-shards"):
        threads = tmp_path / f"{name}-threads.zarr"
        _compress(bare, threads, SETTINGS[name])
        # The digest joined from the tasks' pieces is the one ingest computed front to back.
        assert _fingerprints(threads) == _fingerprints(split_store)
        cluster = tmp_path / f"{name}-cluster.zarr"
        _compress(bare, cluster, SETTINGS[name], scheduler=dask_cluster(2))
        assert_same_store(threads, cluster)


def test_a_local_cluster_gpuds_starts_is_named_in_the_summary_and_stopped(
    split_store: Path, tmp_path: Path
):
    settings = SETTINGS["shard-tasks"]
    _compress(split_store, tmp_path / "threads.zarr", settings)
    before = {p.pid for p in multiprocessing.active_children()}
    summary = _compress(split_store, tmp_path / "p.zarr", settings, scheduler="processes:2")
    assert summary["scheduler"] == "a local Dask cluster of 2 worker process(es)"
    assert_same_store(tmp_path / "threads.zarr", tmp_path / "p.zarr")
    assert {p.pid for p in multiprocessing.active_children()} <= before


class _KillOnce:
    """A progress receiver that kills the worker process ``pid`` at the first task done."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.killed = False
        self.advanced = 0

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        self.advanced += amount
        if not self.killed:
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True

    def note(self, message: str) -> None:
        pass


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # the shared clusters' HTTP
def test_a_worker_killed_mid_stage_leaves_the_output_unchanged(split_store: Path, tmp_path: Path):
    settings = SETTINGS["small-shards"]
    reference = _compress(split_store, tmp_path / "threads.zarr", settings)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        progress = _KillOnce(sorted(pids.values())[0])
        out = tmp_path / "cluster.zarr"
        summary = _compress(
            split_store, out, settings, scheduler=cluster.scheduler_address, progress=progress
        )
    assert progress.killed
    # Every shard counted once in each pass (write, verify), the rerun ones included.
    data = gpuds.open(out)
    shards = sum(
        -(-a.shape[0] // a.shards[0])
        for split in ("train", "val")
        for a in data[split].arrays.values()
    )
    assert progress.advanced == 2 * shards
    assert summary["stored_bytes"] == reference["stored_bytes"]
    assert_same_store(tmp_path / "threads.zarr", out)


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_a_task_failing_on_bad_input_fails_the_stage_and_leaves_nothing(
    split_store: Path, tmp_path: Path, dask_cluster: Any, where: str
):
    source = tmp_path / "in" / "prep.zarr"
    shutil.copytree(split_store, source)
    chunk = sorted(p for p in (source / "train" / "img" / "c").rglob("*") if p.is_file())[1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    scheduler = "threads" if where == "threads" else dask_cluster(2)
    with pytest.raises(CorruptChunkError, match=r"prep\.zarr field 'train/img'"):
        _compress(source, out_dir / "c.zarr", SETTINGS["small-shards"], scheduler=scheduler)
    assert list(out_dir.iterdir()) == []  # no output and no partial folder


def _objects(s3: S3, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    return {
        key.removeprefix(prefix): client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        for key in s3.keys(prefix)
    }


def test_workers_write_an_object_store_output(
    s3: S3, split_store: Path, tmp_path: Path, dask_cluster: Any
):
    # The workers were started without this test's AWS_* variables: everything they need to
    # reach the bucket comes with the storage options.
    options = {
        "endpoint": s3.endpoint,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "region": "us-east-1",
    }
    source = s3.upload(split_store, "in.zarr")
    settings = SETTINGS["shard-tasks"]
    runs = {}
    for name, scheduler in (("threads", "threads"), ("cluster", dask_cluster(2))):
        url = f"{s3.url}/{name}.zarr"
        runs[name] = _compress(
            source, url, settings, fields=["x", "y"], scheduler=scheduler, storage_options=options
        )
    threads, cluster = _objects(s3, "threads.zarr/"), _objects(s3, "cluster.zarr/")
    assert sorted(threads) == sorted(cluster) and len(threads) > 10
    differ = [k for k in threads if k != "zarr.json" and threads[k] != cluster[k]]
    assert not differ
    info = [json.loads(objs["zarr.json"])["attributes"]["gpuds"] for objs in (threads, cluster)]
    assert info[0]["fingerprint"] == info[1]["fingerprint"] and info[1]["complete"] is True
    assert runs["cluster"]["stored_bytes"] == runs["threads"]["stored_bytes"]
    ds = gpuds.open(f"{s3.url}/cluster.zarr", storage_options=options)
    local = gpuds.open(split_store)
    np.testing.assert_array_equal(ds["train"].arrays["x"][...], local["train"].arrays["x"][...])
