"""``gpuds bench``: throughput a user can trust, measured side by side in one run.

Every figure is a median over ``repeats`` timed runs after one untimed warm-up, with the
min-max spread; throughputs are decimal GB/s of *uncompressed* bytes (or samples/s). GPU work
is synchronised before the clock is read. Every round trip is checked for equality: a codec that
corrupts data stops the bench with an error instead of a speed.

Sections (``section`` in the report, schema in docs/bench.md):

- ``codec``: per field x codec x device, data already in memory: ratio, encode and decode rate.
  The bound is the memory copy rate (no codec delivers faster than memory can be written).
- ``store``: the store as the loader reads it (page cache warm: the files were just read):
  reading the stored bytes, decoding them in memory, and both together. The read+decode bound
  is ``min(storage x ratio, decode rate)`` (and ``link x ratio`` on a GPU).
- ``loader``: steady-state samples/s and GB/s of ``loader(...)`` with an optional simulated
  training step; its bound is the read+decode bound in samples/s. Its shuffle quality is given.
- ``reference``: a memory copy, a zarr-python read of the same store, a memory-mapped read of
  the uncompressed equivalent (.npy), and host-to-device copies on a GPU.

Rows that need a GPU on a machine without one have ``status: "skipped (no GPU)"`` and no value.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds import __version__
from gpuds.backend import Backend, resolve
from gpuds.chunks import FieldChunks, field_label
from gpuds.codecs import CodecConfig
from gpuds.codecs.checksum import append_crc32c, strip_crc32c
from gpuds.codecs.cpu import CpuChunkCodec
from gpuds.errors import ConfigError, GpudsError
from gpuds.loader import default_workers
from gpuds.progress import NullProgress, Progress, check_cancelled
from gpuds.store import chunk_samples, iter_fields, open_store, utc_now

__all__ = ["SCHEMA", "BenchError", "bench", "environment", "sample_data"]

SCHEMA = "gpuds.bench/1"
SKIPPED_NO_GPU = "skipped (no GPU)"


class BenchError(GpudsError, RuntimeError):
    """A measurement could not be trusted (e.g. a codec did not round-trip)."""


def environment(backend: Backend) -> dict[str, Any]:
    """Where the numbers come from: CPU, GPU, driver and library versions."""
    from importlib import metadata

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    env: dict[str, Any] = {
        "gpuds": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu or "unknown",
        "cores": os.cpu_count(),
        "gpu": backend.info.get("gpu"),
        "driver": backend.info.get("driver"),
        "cuda_runtime": backend.info.get("cuda_runtime"),
    }
    for dist in ("numpy", "zarr", "numcodecs", "cupy-cuda12x", "cupy-cuda13x",
                 "nvidia-nvcomp-cu12", "nvidia-nvcomp-cu13"):  # fmt: skip
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    return env


def sample_data(quick: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """The documented sample fields used when no store is given (seeded; same sample count).

    ``N`` is 4,096 samples (``quick``, ~18 MB) or 16,384 (~71 MB):

    - ``incompressible``: uniform random bytes, (N, 1024) uint8, the control (ratio ~1);
    - ``smooth_float32``: random walks along the samples axis (sensor-like), (N, 64) float32;
    - ``images``: image-like (N, 32, 32, 3) uint8: a noisy dark background and a flat square;
    - ``counts``: a small-integer int64 column (Poisson, mean 3).
    """
    rng = np.random.default_rng(seed)
    n = 4096 if quick else 16384
    images = np.clip(rng.normal(30, 10, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    corners = rng.integers(0, 16, size=(n, 2))
    colours = rng.integers(80, 256, size=(n, 3), dtype=np.uint8)
    for i in range(n):
        y, x = corners[i]
        images[i, y : y + 16, x : x + 16] = colours[i]
    return {
        "incompressible": rng.integers(0, 256, size=(n, 1024), dtype=np.uint8),
        "smooth_float32": np.cumsum(rng.normal(0, 0.01, size=(n, 64)), axis=0).astype(np.float32),
        "images": images,
        "counts": rng.poisson(3, size=n).astype(np.int64),
    }


def _timed(
    fn: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Seconds of ``repeats`` runs of ``fn`` after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        check_cancelled()
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return times


def _row(
    section: str,
    name: str,
    metric: str,
    unit: str,
    *,
    nbytes: float | None = None,
    samples: float | None = None,
    times: Sequence[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "section": section,
        "name": name,
        "metric": metric,
        "unit": unit,
        "value": None,
        "spread": None,
        "repeats": len(times) if times else 0,
        "field": None,
        "codec": None,
        "device": "cpu",
        "ratio": None,
        "bound": None,
        "bound_basis": None,
        "percent_of_bound": None,
        "cache": None,
        "status": "ok",
    }
    row.update(extra)
    if times:
        amount = (nbytes or 0) / 1e9 if unit == "GB/s" else samples
        assert amount is not None
        rates = sorted(amount / t for t in times)
        row["value"] = round(statistics.median(rates), 4)
        row["spread"] = [round(rates[0], 4), round(rates[-1], 4)]
    return row


def _set_bound(row: dict[str, Any], bound: float | None, basis: str) -> None:
    if bound is None or row["value"] is None:
        return
    row["bound"] = round(bound, 4)
    row["bound_basis"] = basis
    row["percent_of_bound"] = round(100 * row["value"] / bound, 1) if bound > 0 else None


def _little(values: np.ndarray) -> np.ndarray:
    dtype = values.dtype.newbyteorder("<") if values.dtype.itemsize > 1 else values.dtype
    return np.ascontiguousarray(values, dtype=dtype)


def _chunks(values: np.ndarray, limit_bytes: int) -> list[np.ndarray]:
    """Raw 1 MiB chunks (whole samples) of up to ``limit_bytes`` of ``values``."""
    values = _little(values)
    per_sample = max(1, values[:1].nbytes)
    n = chunk_samples(per_sample, 1.0)
    take = min(len(values), max(n, limit_bytes // per_sample // n * n))
    return [
        values[i : i + n].reshape(-1).view(np.uint8) for i in range(0, take, n) if i + n <= take
    ] or [values[:take].reshape(-1).view(np.uint8)]


def _codec_rows(
    name: str,
    values: np.ndarray,
    codecs: Sequence[str],
    repeats: int,
    backend: Backend,
    memcpy_gbps: float | None,
    limit_bytes: int,
) -> list[dict[str, Any]]:
    raw = _chunks(values, limit_bytes)
    rows: list[dict[str, Any]] = []
    for codec_name in codecs:
        rows += _one_codec(name, raw, values.dtype, codec_name, repeats, backend, memcpy_gbps)
    return rows


def _one_codec(
    name: str,
    raw: list[np.ndarray],
    dtype: np.dtype[Any],
    codec_name: str,
    repeats: int,
    backend: Backend,
    memcpy_gbps: float | None,
) -> list[dict[str, Any]]:
    itemsize = dtype.itemsize
    config = CodecConfig(codec_name, None, itemsize > 1)
    label = f"{codec_name}{'+shuffle' if config.shuffle and codec_name != 'none' else ''}"
    cpu = CpuChunkCodec(config, itemsize)
    logical = sum(r.nbytes for r in raw)
    sizes = [r.nbytes for r in raw]
    keys = [f"{name} chunk {i}" for i in range(len(raw))]

    # As gpuds writes and reads chunks: each stored chunk carries its crc32c, checked first.
    def encode() -> list[bytes]:
        return [append_crc32c(p) for p in cpu.encode(raw)]

    def decode_checked() -> list[np.ndarray]:
        bodies = [strip_crc32c(p, k) for p, k in zip(payloads, keys, strict=True)]
        return cpu.decode(bodies, sizes, keys)

    payloads = encode()
    stored = sum(len(p) for p in payloads)

    def check(decoded: list[np.ndarray], who: str) -> None:
        for got, want in zip(decoded, raw, strict=True):
            if got.nbytes != want.nbytes or not np.array_equal(got, want):
                raise BenchError(
                    f"{who} codec {label} did not round-trip field {name!r}: the decoded bytes "
                    "differ from the input; no speed is reported for a corrupting codec"
                )

    check(decode_checked(), "cpu")
    common: dict[str, Any] = {
        "field": name,
        "codec": label,
        "ratio": round(logical / stored, 4) if stored else None,
    }
    results: list[list[np.ndarray]] = []

    def decode() -> None:
        results.append(decode_checked())

    enc_times = _timed(encode, repeats)
    dec_times = _timed(decode, repeats)
    for decoded in results:
        check(decoded, "cpu")
    enc = _row("codec", f"{label} encode {name}", "encode", "GB/s", nbytes=logical, times=enc_times)
    dec = _row("codec", f"{label} decode {name}", "decode", "GB/s", nbytes=logical, times=dec_times)
    rows = [enc, dec]
    for metric in ("encode", "decode"):
        gpu_row = _row("codec", f"{label} {metric} {name}", metric, "GB/s", device="cuda")
        if not backend.is_gpu:
            gpu_row["status"] = SKIPPED_NO_GPU
        elif codec_name == "none":
            gpu_row["status"] = "not applicable"
        else:
            gpu_row.update(
                _gpu_codec(config, itemsize, dtype, raw, metric, repeats, backend, check)
            )
        rows.append(gpu_row)
    for row in rows:
        row.update(common)
        if row["device"] == "cpu":
            _set_bound(row, memcpy_gbps, "memory copy")
    return rows


def _gpu_codec(
    config: CodecConfig,
    itemsize: int,
    dtype: np.dtype[Any],
    raw: list[np.ndarray],
    metric: str,
    repeats: int,
    backend: Backend,
    check: Callable[[list[np.ndarray], str], None],
) -> dict[str, Any]:
    """nvCOMP encode or decode of device-resident chunks, one batched call, synchronised."""
    from gpuds.codecs.nvcomp import NvcompChunkCodec

    cp = backend.xp
    gpu = NvcompChunkCodec(config, itemsize, dtype)
    payloads = gpu.encode(raw)
    lengths = [len(p) for p in payloads]
    device = cp.asarray(np.frombuffer(b"".join(payloads), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    sizes = [r.nbytes for r in raw]
    keys = [f"chunk {i}" for i in range(len(raw))]
    out = cp.asnumpy(gpu.decode_device(device, offsets, lengths, sizes, keys))
    check(
        [out[a:b] for a, b in zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), strict=True)],
        "gpu",
    )
    sync = cp.cuda.get_current_stream().synchronize
    if metric == "encode":
        times = _timed(lambda: gpu.encode(raw), repeats, sync)
    else:
        times = _timed(
            lambda: gpu.decode_device(device, offsets, lengths, sizes, keys), repeats, sync
        )
    logical = sum(sizes)
    measured = _row("codec", "", metric, "GB/s", nbytes=logical, times=times)
    return {k: measured[k] for k in ("value", "spread", "repeats")}


def _memcpy(repeats: int, quick: bool) -> dict[str, Any]:
    nbytes = (64 if quick else 256) * 2**20
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    times = _timed(lambda: np.copyto(dst, src), repeats)
    return _row("reference", "memory copy (host)", "memcpy", "GB/s", nbytes=nbytes, times=times)


def _h2d(repeats: int, backend: Backend) -> dict[str, Any]:
    row = _row("reference", "host-to-device copy", "h2d", "GB/s", device="cuda")
    if not backend.is_gpu:
        row["status"] = SKIPPED_NO_GPU
        return row
    cp = backend.xp
    nbytes = 256 * 2**20
    host = np.frombuffer(cp.cuda.alloc_pinned_memory(nbytes), dtype=np.uint8, count=nbytes)
    device = cp.empty(nbytes, dtype=cp.uint8)
    times = _timed(lambda: device.set(host), repeats, cp.cuda.get_current_stream().synchronize)
    measured = _row("reference", "", "h2d", "GB/s", nbytes=nbytes, times=times)
    row.update({k: measured[k] for k in ("value", "spread", "repeats")})
    return row


def _store_fields(store: str) -> tuple[str, list[tuple[str, zarr.Array]]]:
    group = open_store(store)
    fields = list(iter_fields(group))
    splits = [s for s, _, _ in fields if s]
    split = "train" if "train" in splits else (splits[0] if splits else "")
    chosen = [(name, arr) for s, name, arr in fields if s == split]
    if not chosen:
        raise ConfigError(f"{store}: no fields to benchmark")
    return split, chosen


def _store_rows(
    store: str,
    split: str,
    fields: list[tuple[str, zarr.Array]],
    repeats: int,
    backend: Backend,
    limit_bytes: int,
) -> tuple[list[dict[str, Any]], float | None]:
    """Storage read, in-memory decode, and read+decode of the first whole shards (or chunks) of
    each field, up to about ``limit_bytes`` of it: a sample, so a large store fits in memory."""
    readers = {name: FieldChunks(arr, field_label(store, split, name)) for name, arr in fields}
    if any(r.codec is None for r in readers.values()):
        row = _row("store", "read+decode (store to memory)", "read_decode", "GB/s")
        row["status"] = "not applicable (a codec chain gpuds does not decode itself)"
        return [row], None
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
    storage = _row("store", "read stored bytes (page cache)", "storage_read", "GB/s",
                   nbytes=stored, times=_timed(read_files, repeats), cache="warm")  # fmt: skip
    decode = _row("store", "decode every chunk in memory", "decode", "GB/s", nbytes=logical,
                  times=_timed(decode_only, repeats), ratio=ratio)  # fmt: skip
    both = _row("store", "read+decode (store to host memory)", "read_decode", "GB/s",
                nbytes=logical, times=_timed(read_decode, repeats), ratio=ratio,
                cache="warm")  # fmt: skip
    bound = min(storage["value"] * (ratio or 1), decode["value"])
    _set_bound(both, bound, "min(storage x ratio, decode rate)")
    if backend.is_gpu:
        to_device = _to_device(store, fields, repeats, backend, logical)
        to_device["ratio"] = ratio
    else:
        to_device = _row("store", "read+decode+transfer (store to device)", "read_decode_h2d",
                         "GB/s", device="cuda", ratio=ratio)  # fmt: skip
        to_device["status"] = SKIPPED_NO_GPU
    return [storage, decode, both, to_device], bound


def _to_device(
    store: str, fields: list[tuple[str, zarr.Array]], repeats: int, backend: Backend, logical: int
) -> dict[str, Any]:
    """The whole store onto the device through the loader's GPU path, in store order."""
    from gpuds.dataset import open_dataset

    ds = open_dataset(store)
    split = next((s for s in ds.splits if s == "train"), ds.splits[0] if ds.splits else "")
    ds = ds[split] if split else ds
    loader = ds.loader(max(1, len(ds) // 4), shuffle=False, drop_last=False, device="cuda")

    def run() -> None:
        for _ in loader:
            pass
        backend.xp.cuda.get_current_stream().synchronize()

    times = _timed(run, repeats)
    return _row("store", "read+decode+transfer (store to device)", "read_decode_h2d", "GB/s",
                nbytes=logical, times=times, device="cuda", cache="warm")  # fmt: skip


def _loader_row(
    store: str,
    split: str,
    repeats: int,
    backend: Backend,
    step_ms: float,
    bound_gbps: float | None,
    limit_bytes: int,
) -> dict[str, Any]:
    from gpuds.dataset import open_dataset
    from gpuds.loader import shuffle_quality

    ds = open_dataset(store)
    if split:
        ds = ds[split]
    # Batches of 256, or a quarter of a small dataset, so that every epoch has whole batches.
    batch_size = max(1, min(256, len(ds) // 4))
    loader = ds.loader(batch_size, device=backend.name, seed=0)
    sample_bytes = sum(
        int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        for arr in ds.arrays.values()
    )
    epochs = iter(range(10**6))
    # A timed run is an epoch, or the first batches of one on a large store (steady state
    # after the warm-up run).
    max_batches = max(8, limit_bytes // max(1, batch_size * sample_bytes))

    def epoch() -> int:
        loader.set_epoch(next(epochs))
        count = 0
        for i, batch in enumerate(loader):
            count += len(next(iter(batch.values())))
            if step_ms:
                time.sleep(step_ms / 1000)
            if i + 1 >= max_batches:
                break
        if backend.is_gpu:
            backend.xp.cuda.get_current_stream().synchronize()
        return count

    delivered = epoch()
    times = _timed(epoch, repeats)
    row = _row("loader", f"loader(batch {batch_size}){f', step {step_ms:g} ms' if step_ms else ''}",
               "samples", "samples/s", samples=delivered, times=times, device=backend.name,
               cache="warm")  # fmt: skip
    row["gbps"] = round((row["value"] or 0) * sample_bytes / 1e9, 4)
    row["shuffle_quality"] = shuffle_quality(loader.plan().stream())
    if bound_gbps is not None:
        _set_bound(row, bound_gbps * 1e9 / sample_bytes, "store read+decode bound, in samples/s")
    return row


def _reference_reads(
    fields: list[tuple[str, zarr.Array]], repeats: int, workdir: Path, limit_bytes: int
) -> list[dict[str, Any]]:
    """zarr-python and uncompressed reads of the first ``limit_bytes`` (about) of each field."""
    per_sample = {
        name: max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
        for name, arr in fields
    }
    counts = {
        name: min(arr.shape[0], max(1, limit_bytes // per_sample[name])) for name, arr in fields
    }
    logical = sum(counts[name] * per_sample[name] for name, _ in fields)
    zarr_times = _timed(lambda: [arr[: counts[name]] for name, arr in fields], repeats)
    rows = [_row("reference", "zarr-python read of the same store", "zarr_read", "GB/s",
                 nbytes=logical, times=zarr_times, cache="warm")]  # fmt: skip
    paths = []
    for name, arr in fields:
        path = workdir / f"{name}.npy"
        np.save(path, arr[: counts[name]])
        paths.append(path)

    def read_npy() -> None:
        for p in paths:
            np.array(np.load(p, mmap_mode="r"))

    rows.append(_row("reference", "uncompressed .npy (memory-mapped) read", "raw_read", "GB/s",
                     nbytes=logical, times=_timed(read_npy, repeats), cache="warm"))  # fmt: skip
    return rows


def bench(
    store: str | None = None,
    *,
    device: str = "auto",
    codecs: Sequence[str] = ("zstd", "lz4", "gzip"),
    repeats: int = 3,
    quick: bool = False,
    step_ms: float = 0.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure codecs, the store, the loader and the references; return the report.

    Parameters
    ----------
    store
        A gpuds store to measure; None generates the documented sample data
        (:func:`sample_data`), ingests and compresses it (zstd) in a temporary folder.
    device
        ``auto``, ``cpu`` or ``cuda``.
    codecs
        Codecs of the ``codec`` section (portable ones: zstd, lz4, gzip, none).
    repeats
        Timed runs per measurement (after one warm-up); the median is reported.
    quick
        Smaller data (about 8 MB a field) and 2 repeats: under a minute on 2 cores.
    step_ms
        A simulated training step after each loader batch.
    """
    progress = progress or NullProgress()
    for name in codecs:
        if name not in ("zstd", "lz4", "gzip", "none"):
            raise ConfigError(f"bench --codecs: expected zstd, lz4, gzip or none, got {name!r}")
    if repeats < 1:
        raise ConfigError(f"Expected repeats >= 1, got {repeats}")
    repeats = min(repeats, 2) if quick else repeats
    backend = resolve(device)
    if backend.reason and device == "auto":
        progress.note(backend.reason)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpuds-bench-"))
    try:
        progress.start("bench", 5)
        data: dict[str, np.ndarray] = {}
        if store is None:
            data = sample_data(quick)
            from gpuds.compress import compress
            from gpuds.ingest import ingest

            for name, values in data.items():
                np.save(work / f"{name}.npy", values)
            raw = work / "raw.zarr"
            ingest([work / f"{n}.npy" for n in data], raw)
            compress(raw, work / "sample.zarr", verify=False, device="cpu")
            shutil.rmtree(raw)
            for name in data:
                (work / f"{name}.npy").unlink()
            store_path = str(work / "sample.zarr")
        else:
            store_path = str(store)
        split, fields = _store_fields(store_path)
        limit = (8 if quick else 32) * 2**20  # bytes sampled per field by the codec section
        if store is not None:
            for name, arr in fields:
                per = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
                reader = FieldChunks(arr, field_label(store_path, split, name))
                data[name] = reader.read_range(0, min(reader.length, max(1, limit // per)))
        progress.advance(1)
        memcpy = _memcpy(repeats, quick)
        rows = [memcpy, _h2d(repeats, backend)]
        for name, values in data.items():
            rows += _codec_rows(name, values, codecs, repeats, backend, memcpy["value"], limit)
        progress.advance(1)
        store_rows, bound = _store_rows(store_path, split, fields, repeats, backend, 4 * limit)
        rows += store_rows
        progress.advance(1)
        rows.append(_loader_row(store_path, split, repeats, backend, step_ms, bound, 4 * limit))
        progress.advance(1)
        rows += _reference_reads(fields, repeats, work, 4 * limit)
        progress.advance(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "environment": environment(backend),
        "settings": {
            "store": str(store) if store is not None else None,
            "data": "sample data (gpuds.bench.sample_data)"
            if store is None
            else f"split {split!r}"
            if split
            else "root fields",
            "device": backend.name,
            "codecs": list(codecs),
            "repeats": repeats,
            "quick": quick,
            "step_ms": step_ms,
        },
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 2),
    }


TUNE_CODECS = (("zstd", 1), ("zstd", 3), ("zstd", 9), ("lz4", 1), ("gzip", 1), ("gzip", 5))
TUNE_CHUNK_MB = (0.25, 1.0, 4.0)


def tune(
    store: str,
    *,
    quick: bool = False,
    repeats: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Sweep codec x level x chunk size on a sample of ``store`` on this machine's CPU.

    Each candidate encodes up to 32 MiB (8 with ``quick``) of every field (the first split of a
    split store) in chunks of the given size, decodes it (checked for equality) and reports the
    ratio and the decode rate. The recommendation follows ``--codec auto``'s rule
    (:func:`gpuds.codecs.auto.pick`: ratios and documented speed classes, not the timings, so it
    is the same on any machine).
    """
    from gpuds.codecs.auto import MIN_RATIO, SLOWER_CLASS_GAIN, pick

    progress = progress or NullProgress()
    split, fields = _store_fields(store)
    limit = (8 if quick else 32) * 2**20
    samples = {}
    for name, arr in fields:
        per = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
        reader = FieldChunks(arr, field_label(store, split, name))
        samples[name] = _little(reader.read_range(0, min(reader.length, max(1, limit // per))))
    rows: list[dict[str, Any]] = []
    progress.start("tune", len(TUNE_CODECS) * len(TUNE_CHUNK_MB))
    for codec_name, level in TUNE_CODECS:
        for chunk_mb in TUNE_CHUNK_MB:
            logical = stored = 0
            seconds = 0.0
            for name, values in samples.items():
                per = max(1, values[:1].nbytes)
                n = chunk_samples(per, chunk_mb)
                raw = [
                    values[i : i + n].reshape(-1).view(np.uint8) for i in range(0, len(values), n)
                ]
                config = CodecConfig(codec_name, level, values.dtype.itemsize > 1)
                codec = CpuChunkCodec(config, values.dtype.itemsize)
                payloads = codec.encode(raw)
                sizes = [r.nbytes for r in raw]
                keys = [f"{name} chunk {i}" for i in range(len(raw))]
                decoded: list[np.ndarray] = []

                def run(
                    c: CpuChunkCodec = codec,
                    p: list[bytes] = payloads,
                    s: list[int] = sizes,
                    k: list[str] = keys,
                    out: list[np.ndarray] = decoded,
                ) -> None:
                    out[:] = c.decode(p, s, k)

                seconds += min(_timed(run, repeats))
                if any(not np.array_equal(d, r) for d, r in zip(decoded, raw, strict=True)):
                    raise BenchError(f"{codec_name} level {level} did not round-trip {name!r}")
                logical += sum(sizes)
                stored += sum(len(p) for p in payloads)
            rows.append(
                {
                    "codec": codec_name,
                    "level": level,
                    "shuffle": any(v.dtype.itemsize > 1 for v in samples.values()),
                    "chunk_mb": chunk_mb,
                    "ratio": round(logical / stored, 4) if stored else None,
                    "decode_gbps": round(logical / seconds / 1e9, 4) if seconds else None,
                }
            )
            progress.advance(1)
    index = pick(rows, name_key="codec")
    if index is not None:
        best = rows[index]
        command = (
            f"gpuds compress {store} -o OUT.zarr --codec {best['codec']} --level {best['level']} "
            f"--chunk-mb {best['chunk_mb']:g}"
        )
    else:
        best = None
        command = f"gpuds compress {store} -o OUT.zarr --codec none"
    return {
        "schema": SCHEMA + "/tune",
        "created": utc_now(),
        "environment": environment(resolve("cpu")),
        "store": store,
        "split": split,
        "rows": rows,
        "recommended": best,
        "command": command,
        "rule": (
            f"--codec auto's: the best ratio (>= {MIN_RATIO}) of the fastest decode class (lz4, "
            f"zstd); gzip only when {SLOWER_CLASS_GAIN - 1:.0%} better"
        ),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, for pasting into an issue."""
    env = report["environment"]
    lines = [
        f"**gpuds bench** ({report['created']}): {env['cpu']}, {env['cores']} cores, "
        f"GPU {env['gpu'] or 'none'}; gpuds {env['gpuds']}, zarr {env['zarr']}, "
        f"numcodecs {env['numcodecs']}, numpy {env['numpy']}",
        "",
        "| section | measurement | device | value | spread | ratio | bound | % of bound | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        value = f"{row['value']:,.3f} {row['unit']}" if row["value"] is not None else "-"
        spread = f"{row['spread'][0]:,.3f}-{row['spread'][1]:,.3f}" if row["spread"] else "-"
        bound = f"{row['bound']:,.3f}" if row["bound"] is not None else "-"
        pct = f"{row['percent_of_bound']:.0f}%" if row["percent_of_bound"] is not None else "-"
        lines.append(
            f"| {row['section']} | {row['name']} | {row['device']} | {value} | {spread} | "
            f"{row['ratio'] if row['ratio'] is not None else '-'} | {bound} | {pct} | "
            f"{row['status']} |"
        )
    return "\n".join(lines) + "\n"


BAR_COLOUR = "#1f77b4"
BOUND_COLOUR = "#d62728"


def plot(report: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A PNG bar chart of the CPU decode rate per codec and field, with the bound drawn in.

    Returns what was drawn (``bars``, and ``scan_row``: a pixel row crossing every bar, used by
    the tests to count them). Needs matplotlib (``pip install 'gpuds[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib: pip install 'gpuds[plot]'") from e
    rows = [
        r for r in report["rows"]
        if r["section"] == "codec" and r["metric"] == "decode" and r["value"] is not None
    ]  # fmt: skip
    if not rows:
        raise ConfigError("nothing to plot: no decode measurement in the report")
    labels = [f"{r['codec']}\n{r['field']}" for r in rows]
    values = [r["value"] for r in rows]
    bound = next((r["bound"] for r in rows if r["bound"] is not None), None)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows)), 4.5), dpi=100)
    ax.bar(range(len(rows)), values, color=BAR_COLOUR, width=0.6)
    if bound is not None:
        ax.axhline(
            bound, color=BOUND_COLOUR, linewidth=2, label=f"bound: memory copy {bound:.1f} GB/s"
        )
        ax.legend(loc="upper right")
    ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("decode GB/s (uncompressed, log scale)")
    env = report["environment"]
    ax.set_title(f"gpuds bench: decode on {env['cpu']} ({env['cores']} cores)", fontsize=9)
    # Rates span orders of magnitude (gzip ~0.1 GB/s, lz4 and the memory copy ~10): on a linear
    # axis the slow codecs' bars would be a pixel high. Bars rise from a decade below the slowest.
    floor = 10 ** math.floor(math.log10(min(values) / 10))
    ax.set_yscale("log")
    ax.set_ylim(floor, max([*values, bound or 0]) * 3)
    fig.tight_layout()
    fig.canvas.draw()
    low = math.sqrt(floor * min(values))  # halfway up the shortest bar, on the log axis
    _, y_pixel = ax.transData.transform((0, low))
    height = fig.canvas.get_width_height()[1]
    fig.savefig(path, format="png")
    plt.close(fig)
    return {"bars": len(rows), "scan_row": round(height - y_pixel)}
