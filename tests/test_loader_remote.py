"""The loader on object storage: a real S3 API server (moto) on 127.0.0.1, behind a forwarding
proxy that counts requests and injects throttling; the local cache; retries; damage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
from gpuds.dataset import Dataset
from gpuds.errors import CorruptChunkError, StoreError
from gpuds.store import read_info

from .conftest import only_line
from .s3proxy import LatencyProxy

obstore = pytest.importorskip("obstore")

N = 3000
BUCKET = "gpuds-loader"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("remote-loader")
    rng = np.random.default_rng(0)
    np.save(tmp / "ids.npy", np.arange(N, dtype=np.int64))
    np.save(tmp / "x.npy", rng.normal(size=(N, 4, 3)).astype(np.float32))
    np.save(tmp / "y.npy", (np.arange(N) % 7).astype(np.int16))
    gpuds.ingest([tmp / "ids.npy", tmp / "x.npy", tmp / "y.npy"], tmp / "raw.zarr")
    # Units of 128 samples (x's chunks), 8 chunks a shard: 3 shards of x; ids in chunks of 32
    # samples (4 a unit, coalesced), y in chunks longer than a unit; a partial last chunk.
    settings = gpuds.FieldSettings(chunk_mb=0.006, shard_mb=0.05)
    per_field = {"ids": gpuds.FieldSettings(chunk_mb=0.00025, shard_mb=0.05)}
    gpuds.compress(tmp / "raw.zarr", tmp / "data.zarr", settings=settings, per_field=per_field)
    return tmp / "data.zarr"


def _s3store(endpoint: str, prefix: str) -> Any:
    from obstore.store import S3Store

    # No retries in the store itself: the loader's own retries are what these tests see.
    return S3Store(
        BUCKET,
        prefix=prefix,
        endpoint=endpoint,
        client_options={"allow_http": True},
        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=10)},
        **KEYS,
    )


def _upload(endpoint: str, root: Path, prefix: str) -> None:
    store = _s3store(endpoint, prefix)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        obstore.put(store, path.relative_to(root).as_posix(), path.read_bytes())


@pytest.fixture(scope="module")
def server(s3_endpoint: str, local: Path) -> str:
    """The session's S3 server (tests/conftest.py), with the local store uploaded as
    ``data.zarr`` in a bucket of this module."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    _upload(s3_endpoint, local, "data.zarr")
    return s3_endpoint


@pytest.fixture
def proxy(server: str) -> Iterator[LatencyProxy]:
    with LatencyProxy(server, max_requests=20_000, max_seconds=120) as p:
        yield p


def _open(endpoint: str, prefix: str = "data.zarr") -> Dataset:
    """The store in the bucket through zarr-python's ObjectStore over obstore (what
    ``gpuds.open("s3://...")`` builds)."""
    import zarr
    from zarr.storage import ObjectStore

    group = zarr.open_group(ObjectStore(_s3store(endpoint, prefix), read_only=True), mode="r")
    return Dataset(group, read_info(group), "", f"s3://{BUCKET}/{prefix}")


def _epoch(loader: gpuds.Loader, epoch: int = 0) -> list[dict[str, np.ndarray]]:
    loader.set_epoch(epoch)
    return [{k: np.array(v) for k, v in batch.items()} for batch in loader]


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])


OPTIONS = {"batch_size": 100, "device": "cpu", "shuffle_window": 4, "seed": 3}


def test_an_epoch_from_the_bucket_delivers_every_sample_once_equal_to_local(
    local: Path, proxy: LatencyProxy
):
    remote = _open(proxy.url).loader(**OPTIONS)
    reference = gpuds.open(local).loader(**OPTIONS)
    for epoch in range(2):
        got = _epoch(remote, epoch)
        ids = np.concatenate([b["ids"] for b in got])
        assert np.array_equal(np.sort(ids), np.arange(N))
        _same(got, _epoch(reference, epoch))
    # One GET per shard index for both epochs.
    suffixes = [path for method, path, rng in proxy.log if rng.startswith("bytes=-")]
    assert sorted(suffixes) == sorted(set(suffixes))
    assert len(suffixes) == len(_shards(local))


def _shards(local: Path, field: str = "*") -> list[Path]:
    return [p for p in local.glob(f"{field}/c/**/*") if p.is_file()]


def test_the_chunks_of_a_shard_are_read_in_one_ranged_get(local: Path, proxy: LatencyProxy):
    """In store order, one window: every shard's chunks are one run, so one GET each."""
    loader = _open(proxy.url).loader(batch_size=500, shuffle=False, shuffle_window=100)
    _epoch(loader)
    for field in ("x", "ids"):
        gets = [rng for _, path, rng in proxy.log if f"/{field}/c/" in path and "=-" not in rng]
        assert len(gets) == len(_shards(local, field)), (field, gets)
    assert len(_shards(local, "x")) > 1


def test_fsspec_store_reads_the_same(local: Path, server: str):
    s3fs = pytest.importorskip("s3fs")
    import zarr
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=server,
        asynchronous=True,
        client_kwargs={"region_name": "us-east-1"},
    )
    client = sync(fs.set_session())  # made on zarr's event loop, where the store uses it
    try:
        store = FsspecStore(fs, path=f"{BUCKET}/data.zarr", read_only=True)
        group = zarr.open_group(store, mode="r")
        dataset = Dataset(group, read_info(group), "", f"s3://{BUCKET}/data.zarr")
        _same(_epoch(dataset.loader(**OPTIONS)), _epoch(gpuds.open(local).loader(**OPTIONS)))
    finally:
        sync(client.close())


def test_a_damaged_object_raises_naming_it(local: Path, server: str, tmp_path: Path):
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(local, damaged)
    shard = sorted(p for p in (damaged / "x" / "c").rglob("*") if p.is_file())[1]
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF  # inside the shard's first chunk
    shard.write_bytes(bytes(data))
    _upload(server, damaged, "damaged.zarr")
    key = shard.relative_to(damaged / "x").as_posix()
    with pytest.raises(CorruptChunkError) as caught:
        _epoch(_open(server, "damaged.zarr").loader(**OPTIONS))
    message = str(caught.value)
    assert f"s3://{BUCKET}/damaged.zarr field 'x'" in message
    assert f"shard {key} inner chunk 0" in message and "crc32c checksum mismatch" in message


def _cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_second_epoch_reads_the_cache_not_the_server(
    local: Path, proxy: LatencyProxy, tmp_path: Path
):
    cache = tmp_path / "cache"
    reference = gpuds.open(local).loader(**OPTIONS)
    loader = _open(proxy.url).loader(**OPTIONS, cache_dir=cache)
    _same(_epoch(loader, 0), _epoch(reference, 0))
    assert proxy.count > 0 and _cache_files(cache)
    proxy.reset()
    _same(_epoch(loader, 1), _epoch(reference, 1))
    assert proxy.log == []
    # A new loader (a later run) over the same cache reads nothing either, once open.
    again = _open(proxy.url).loader(**OPTIONS, cache_dir=cache)
    proxy.reset()
    _same(_epoch(again, 2), _epoch(reference, 2))
    assert proxy.log == []


def test_the_cache_keeps_within_its_limit(local: Path, proxy: LatencyProxy, tmp_path: Path):
    cache = tmp_path / "cache"
    stored = sum(p.stat().st_size for p in local.rglob("c/**/*") if p.is_file())
    limit = stored // 3
    loader = _open(proxy.url).loader(**OPTIONS, cache_dir=cache, cache_limit=limit)
    reference = gpuds.open(local).loader(**OPTIONS)
    for epoch in range(2):
        _same(_epoch(loader, epoch), _epoch(reference, epoch))
        assert 0 < sum(p.stat().st_size for p in _cache_files(cache)) <= limit
        assert loader.cache is not None and loader.cache.nbytes <= limit


def test_a_damaged_cache_file_is_read_again_from_the_store(
    local: Path, proxy: LatencyProxy, tmp_path: Path
):
    cache = tmp_path / "cache"
    loader = _open(proxy.url).loader(**OPTIONS, cache_dir=cache)
    reference = gpuds.open(local).loader(**OPTIONS)
    _epoch(loader, 0)
    victim = sorted(_cache_files(cache))[5]
    good = victim.read_bytes()
    victim.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])
    proxy.reset()
    _same(_epoch(loader, 1), _epoch(reference, 1))
    assert len(proxy.log) == 1  # the damaged chunk, read again: one ranged GET
    assert victim.read_bytes() == good  # and cached again


def test_throttled_requests_are_retried(local: Path, proxy: LatencyProxy):
    dataset = _open(proxy.url)  # metadata read before the throttling starts
    proxy.reset()
    proxy.fail_first = 3
    got = _epoch(dataset.loader(**OPTIONS))
    _same(got, _epoch(gpuds.open(local).loader(**OPTIONS)))
    assert sum(1 for _ in proxy.log) > 3


def test_a_store_that_keeps_failing_raises_one_line_naming_the_url(proxy: LatencyProxy):
    dataset = _open(proxy.url)
    proxy.fail_always = True
    loader = dataset.loader(**OPTIONS, retries=2)
    with pytest.raises(StoreError) as caught:
        _epoch(loader)
    line = only_line(str(caught.value))
    assert line.startswith(f"s3://{BUCKET}/data.zarr/") and "failed after 2 retries" in line
    assert "503" in line or "SlowDown" in line or "Service Unavailable" in line


def test_stopping_early_cancels_the_reads_ahead(proxy: LatencyProxy):
    proxy.latency = 0.02
    loader = _open(proxy.url).loader(**OPTIONS, prefetch=3, requests=2)
    batches = iter(loader)
    next(batches)
    batches.close()
    count = proxy.count
    time.sleep(0.3)
    assert proxy.count <= count + 2  # at most the requests in flight when it stopped
