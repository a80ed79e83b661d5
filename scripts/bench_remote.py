"""Benchmark: the gpuds loader reading an S3 bucket, against zarr-python reading the same bucket.

    python scripts/bench_remote.py [--latency-ms 20] [--samples 65536] [--epochs 3]

A local S3 API server (moto, in a child process on 127.0.0.1) holds the store
``scripts/bench_loader.py`` uses (65,536 image-like uint8 samples of 32x32x3 and int64 labels,
zstd, 1 MiB chunks), with shards of ``--shard-mb`` (8 MiB by default: moto reads a whole object
to answer a ranged GET, so larger shards would measure moto's copying; S3 does not). Every client
reaches it through a forwarding proxy (a second child process, ``tests/s3proxy.py``) that delays
each request by ``--latency-ms``, as a real object store's first-byte latency would; both
children stop by themselves after ``--max-seconds``. Figures (samples/s):

- ``gpuds_obstore_first`` / ``_steady``: the loader over zarr-python's ``ObjectStore`` (obstore):
  the first epoch of a new loader (shard indexes read), then the best of the next epochs.
- ``gpuds_obstore_cache_first``: the same with ``cache_dir`` (empty at first), the epoch that
  fills the cache. Then ``--rounds`` rounds each time one epoch of the loader on the same store
  on local disk (``local``) and one of the cached loader (``gpuds_obstore_cache_warm``), in
  alternating order, so both see the same machine conditions: best of each, and
  ``warm_cache_vs_local``, the median over rounds of the ratio within a round.
- ``gpuds_fsspec_first`` / ``_steady``: the loader over zarr-python's ``FsspecStore`` (s3fs).
- ``zarr_obstore_loop`` / ``zarr_fsspec_loop``: zarr-python's own reading of the same shuffled
  batches (the loader's order), ``arr.oindex[sorted(batch)]`` per field, over the first
  ``--zarr-batches`` batches; ``gpuds_vs_zarr_first`` / ``_steady``: the obstore loader's first
  and steady epochs over the obstore loop.
- ``network_bound``: the loader's access pattern with nothing else: every stored chunk of the
  store read once by its own ranged GET (``obstore.get_range_async``, 32 in flight, shard
  indexes known), as samples/s and MB/s of stored bytes; ``gpuds_obstore_steady_vs_network``.
- ``requests``: GETs the proxy saw per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_loader import make_store  # scripts/ is on the path when run as a script
from zarr.core.sync import sync

import gpuds
from gpuds.dataset import Dataset
from gpuds.store import read_info

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "gpuds-bench"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}

_MOTO = """
import sys, threading, os
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%d" % server.get_host_and_port(), flush=True)
threading.Timer(float(sys.argv[1]), lambda: os._exit(0)).start()
sys.stdin.read()  # until the parent closes it (or exits)
os._exit(0)
"""

_PROXY = """
import sys, threading, os
sys.path.insert(0, sys.argv[1])
from tests.s3proxy import LatencyProxy
proxy = LatencyProxy(sys.argv[2], latency=float(sys.argv[3]), max_seconds=float(sys.argv[4]))
proxy.start()
print(proxy.url, flush=True)
threading.Timer(float(sys.argv[4]), lambda: os._exit(0)).start()
for line in sys.stdin:  # "reset": print the GETs so far, then forget them
    count = sum(1 for method, _, _ in proxy.log if method == "GET")
    if line.strip() == "reset":
        proxy.reset()
    print(count, flush=True)
os._exit(0)
"""


class _Child:
    """A child process that prints its URL first; stopped when the bench ends."""

    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # moto logs every request
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"a child process did not start: {self.url!r}")

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _s3store(endpoint: str, prefix: str = "data.zarr") -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET, prefix=prefix, endpoint=endpoint, client_options={"allow_http": True}, **KEYS
    )


def _upload(endpoint: str, root: Path) -> None:
    import boto3
    import obstore

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    store = _s3store(endpoint)

    async def put_all() -> None:
        files = sorted(p for p in root.rglob("*") if p.is_file())
        for i in range(0, len(files), 8):
            await asyncio.gather(
                *(
                    obstore.put_async(store, p.relative_to(root).as_posix(), p.read_bytes())
                    for p in files[i : i + 8]
                )
            )

    asyncio.run(put_all())


def _obstore_dataset(endpoint: str) -> Dataset:
    import zarr
    from zarr.storage import ObjectStore

    group = zarr.open_group(ObjectStore(_s3store(endpoint), read_only=True), mode="r")
    return Dataset(group, read_info(group), "", f"s3://{BUCKET}/data.zarr")


def _fsspec_dataset(endpoint: str) -> tuple[Dataset, Any]:
    """The store through zarr-python's FsspecStore (s3fs), and s3fs' client (to close)."""
    import s3fs
    import zarr
    from zarr.storage import FsspecStore

    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=endpoint,
        asynchronous=True,
        client_kwargs={"region_name": "us-east-1"},
    )
    client = sync(fs.set_session())  # made on zarr's event loop, where the store uses it
    group = zarr.open_group(FsspecStore(fs, path=f"{BUCKET}/data.zarr", read_only=True), mode="r")
    return Dataset(group, read_info(group), "", f"s3://{BUCKET}/data.zarr"), client


def _epoch(loader: gpuds.Loader, epoch: int) -> float:
    """Samples/s of one epoch."""
    loader.set_epoch(epoch)
    start = time.perf_counter()
    count = sum(len(batch["labels"]) for batch in loader)
    return count / (time.perf_counter() - start)


def _epochs(loader: gpuds.Loader, epochs: int) -> tuple[float, float]:
    """The first epoch's rate and the best of the next ``epochs``."""
    first = _epoch(loader, 0)
    return first, max(_epoch(loader, e) for e in range(1, epochs + 1))


def _zarr_loop(dataset: Dataset, reference: gpuds.Loader, batches: int) -> float:
    """zarr-python reading the loader's first ``batches`` shuffled batches itself."""
    order = reference.plan().stream()
    size = reference.batch_size
    arrays = [dataset.arrays["images"], dataset.arrays["labels"]]
    start = time.perf_counter()
    count = 0
    for b in range(batches):
        ids = np.sort(order[b * size : (b + 1) * size])
        for arr in arrays:
            arr.oindex[ids]
        count += len(ids)
    return count / (time.perf_counter() - start)


def _network_bound(endpoint: str, store: Path) -> tuple[float, float]:
    """Every stored chunk read once by its own ranged GET, 32 in flight: (MB/s, samples/s)."""
    import obstore

    from gpuds.codecs.shard import EMPTY, index_nbytes, parse_index

    dataset = gpuds.open(str(store))
    jobs = []
    for name in ("images", "labels"):
        array = dataset.arrays[name]
        per_shard = int(array.shards[0]) // int(array.chunks[0])
        for shard in sorted(p for p in (store / name / "c").rglob("*") if p.is_file()):
            data = shard.read_bytes()
            tail = data[-index_nbytes(per_shard) :]
            for offset, nbytes in parse_index(tail, len(data), per_shard, str(shard)).tolist():
                if offset != EMPTY:
                    jobs.append((shard.relative_to(store).as_posix(), offset, nbytes))
    remote = _s3store(endpoint)

    async def read_all() -> int:
        semaphore = asyncio.Semaphore(32)

        async def one(key: str, offset: int, nbytes: int) -> int:
            async with semaphore:
                got = await obstore.get_range_async(remote, key, start=offset, length=nbytes)
            return len(got)

        return sum(await asyncio.gather(*(one(*job) for job in jobs)))

    start = time.perf_counter()
    total = asyncio.run(read_all())
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6, len(dataset) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the first")
    parser.add_argument("--rounds", type=int, default=6, help="local / warm cache rounds")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--shard-mb", type=float, default=8.0)
    parser.add_argument("--zarr-batches", type=int, default=6)
    parser.add_argument("--no-fsspec", action="store_true", help="skip the fsspec/s3fs rows")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpuds-bench-remote-"))
    children: list[_Child] = []
    try:
        store = make_store(work, args.samples, args.shard_mb)
        moto = _Child(_MOTO, str(args.max_seconds))
        children.append(moto)
        _upload(moto.url, store)
        proxy = _Child(
            _PROXY, str(ROOT), moto.url, str(args.latency_ms / 1000), str(args.max_seconds)
        )
        children.append(proxy)
        options: dict[str, Any] = {"fields": ["images", "labels"], "device": "cpu"}
        out: dict[str, Any] = {
            "samples": args.samples,
            "latency_ms": args.latency_ms,
            "shard_mb": args.shard_mb,
            "cores": len(os.sched_getaffinity(0)),
        }
        requests: dict[str, int] = {}

        def phase(name: str) -> None:
            requests[name] = int(proxy.ask("reset"))

        proxy.ask("reset")
        start = time.perf_counter()
        remote = _obstore_dataset(proxy.url)
        out["open_s"] = round(time.perf_counter() - start, 3)
        phase("open")
        first, steady = _epochs(remote.loader(args.batch, **options), args.epochs)
        out["gpuds_obstore_first"], out["gpuds_obstore_steady"] = first, steady
        phase(f"gpuds_obstore ({args.epochs + 1} epochs)")

        cached = remote.loader(args.batch, cache_dir=work / "cache", **options)
        out["gpuds_obstore_cache_first"] = _epoch(cached, 0)
        phase("gpuds_obstore_cache (first epoch)")
        local = gpuds.open(str(store)).loader(args.batch, **options)
        _epoch(local, 0)
        rates: dict[str, list[float]] = {"local": [], "warm": []}
        for r in range(1, args.rounds + 1):
            pair = [("local", local), ("warm", cached)]
            for kind, loader in pair if r % 2 else pair[::-1]:
                rates[kind].append(_epoch(loader, r))
        out["local"] = max(rates["local"])
        out["gpuds_obstore_cache_warm"] = max(rates["warm"])
        out["warm_cache_vs_local"] = statistics.median(
            w / v for w, v in zip(rates["warm"], rates["local"], strict=True)
        )
        phase(f"gpuds_obstore_cache ({args.rounds} warm epochs)")

        reference = remote.loader(args.batch, **options)
        out["zarr_obstore_loop"] = _zarr_loop(remote, reference, args.zarr_batches)
        phase(f"zarr_obstore_loop ({args.zarr_batches} batches)")
        out["gpuds_vs_zarr_first"] = out["gpuds_obstore_first"] / out["zarr_obstore_loop"]
        out["gpuds_vs_zarr_steady"] = out["gpuds_obstore_steady"] / out["zarr_obstore_loop"]

        if not args.no_fsspec:
            fsspec, client = _fsspec_dataset(proxy.url)
            proxy.ask("reset")
            first, steady = _epochs(fsspec.loader(args.batch, **options), args.epochs)
            out["gpuds_fsspec_first"], out["gpuds_fsspec_steady"] = first, steady
            phase(f"gpuds_fsspec ({args.epochs + 1} epochs)")
            out["zarr_fsspec_loop"] = _zarr_loop(fsspec, reference, args.zarr_batches)
            phase(f"zarr_fsspec_loop ({args.zarr_batches} batches)")
            sync(client.close())

        mb, rate = _network_bound(proxy.url, store)
        out["network_bound_mb_per_s"], out["network_bound"] = mb, rate
        out["gpuds_obstore_steady_vs_network"] = out["gpuds_obstore_steady"] / rate
        phase("network_bound")
        out["requests"] = requests
        print(
            json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, indent=1
            )
        )
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
