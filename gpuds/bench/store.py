"""The ``store`` section: the store as the loader reads it, page cache warm (the files were just
read): reading the stored bytes, decoding them in memory, and both together through the chunk
service (:class:`~gpuds.chunks.FieldChunks`); on a GPU, store to device through the loader.

The read+decode bound is ``min(storage x ratio, decode rate)``; the loader section is measured
against it too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zarr

from gpuds.backend import Backend
from gpuds.bench.data import sample_nbytes
from gpuds.bench.harness import SKIPPED_NO_GPU, row, set_bound, timed
from gpuds.chunks import FieldChunks, field_label
from gpuds.loader import default_workers
from gpuds.storage import Location

__all__ = ["store_rows"]


def store_rows(
    store: str | Location,
    split: str,
    fields: list[tuple[str, zarr.Array]],
    repeats: int,
    backend: Backend,
    limit_bytes: int,
) -> tuple[list[dict[str, Any]], float | None]:
    """Storage read, in-memory decode, and read+decode of the first whole shards (or chunks) of
    each field, up to about ``limit_bytes`` of it: a sample, so a large store fits in memory.

    Returns the rows and the read+decode bound in GB/s (None for a codec chain gpuds does not
    decode itself, whose row says so).
    """
    readers = {name: FieldChunks(arr, field_label(str(store), split, name)) for name, arr in fields}
    if any(r.codec is None for r in readers.values()):
        skipped = row("store", "read+decode (store to memory)", "read_decode", "GB/s")
        skipped["status"] = "not applicable (a codec chain gpuds does not decode itself)"
        return [skipped], None
    jobs: list[tuple[FieldChunks, int]] = []
    objects: list[tuple[FieldChunks, int]] = []
    logical = 0
    for reader in readers.values():
        n = reader.length
        sample_bytes = reader.chunk_nbytes // reader.chunk
        for obj in range(reader.nobjects):
            if obj and obj * reader.per_shard * reader.chunk_nbytes >= limit_bytes:
                break
            first = obj * reader.per_shard
            last = min(first + reader.per_shard, reader.nchunks)
            jobs += [(reader, i) for i in range(first, last)]
            objects.append((reader, obj))
            logical += (min(last * reader.chunk, n) - first * reader.chunk) * sample_bytes
    stored = sum(len(r.read_object(obj)) for r, obj in objects)
    workers = default_workers()  # the loader's pool: its bound is measured like it reads
    remote = isinstance(store, Location) and not store.is_local

    def read_files() -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda job: job[0].read_object(job[1]), objects))

    def read_decode() -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda job: job[0].read(job[1]), jobs))

    payloads = [(r, r.payload(i), i) for r, i in jobs]

    def decode_only() -> None:
        def one(item: tuple[FieldChunks, bytes | memoryview, int]) -> None:
            r, payload, i = item
            assert r.codec is not None
            r.codec.decode([payload], [r.chunk_nbytes], [r.where(i)])

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, payloads))

    ratio = round(logical / stored, 4) if stored else None
    # From a bucket the read row is the network's rate (raw GETs of whole objects), and so the
    # bound of the read+decode and loader rows; locally it is the page cache's.
    storage = row("store", "read stored bytes (network: GETs)" if remote else
                  "read stored bytes (page cache)", "storage_read", "GB/s", nbytes=stored,
                  times=timed(read_files, repeats), cache=None if remote else "warm")  # fmt: skip
    decode = row("store", "decode every chunk in memory", "decode", "GB/s", nbytes=logical,
                 times=timed(decode_only, repeats), ratio=ratio)  # fmt: skip
    both = row("store", "read+decode (store to host memory)", "read_decode", "GB/s",
               nbytes=logical, times=timed(read_decode, repeats), ratio=ratio,
               cache="warm")  # fmt: skip
    bound = min(storage["value"] * (ratio or 1), decode["value"])
    set_bound(both, bound, "min(storage x ratio, decode rate)")
    if backend.is_gpu:
        to_device = _to_device(store, split, repeats, backend)
        to_device["ratio"] = ratio
    else:
        to_device = row("store", "read+decode+transfer (store to device)", "read_decode_h2d",
                        "GB/s", device="cuda", ratio=ratio)  # fmt: skip
        to_device["status"] = SKIPPED_NO_GPU
    return [storage, decode, both, to_device], bound


def _to_device(store: str | Location, split: str, repeats: int, backend: Backend) -> dict[str, Any]:
    """The measured split onto the device through the loader's GPU path, in store order."""
    from gpuds.dataset import open_dataset

    ds = open_dataset(store)
    ds = ds[split] if split else ds
    # Every sample of the split is delivered: the rate counts all of them.
    logical = len(ds) * sum(sample_nbytes(arr) for arr in ds.arrays.values())
    loader = ds.loader(max(1, len(ds) // 4), shuffle=False, drop_last=False, device="cuda")

    def run() -> None:
        for _ in loader:
            pass
        backend.xp.cuda.get_current_stream().synchronize()

    times = timed(run, repeats)
    return row("store", "read+decode+transfer (store to device)", "read_decode_h2d", "GB/s",
               nbytes=logical, times=times, device="cuda", cache="warm")  # fmt: skip
