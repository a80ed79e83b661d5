"""Benchmark: the gpuds loader on the CPU, checksums on and off, against zarr-python and bounds.

    python scripts/bench_loader.py [--samples 65536] [--batch 256] [--epochs 8] [--no-tf]

Two stores hold the same samples (an image-like uint8 32x32x3 field and an int64 label, zstd,
sharded): the one ``gpuds compress`` writes, whose chunks end in the ``crc32c`` checksum, and a
copy with every chunk's checksum stripped, the codec dropped from the chains and the store's
records updated to match (built from public gpuds functions; ``gpuds.open`` accepts it). Both
loaders have the same options; epoch 0 runs them in lockstep, untimed, and checks that they
deliver identical batches. Then each round times one epoch of each (their order swaps every
round, same epoch number, so the same batches), then the loops below, so all see the same
machine conditions. Figures (rates in samples/s; "best" is the fastest of the rounds,
"median" the median over rounds of a ratio taken within each round, the steadier figure on a
shared machine):

- ``gpuds_samples_per_s``, ``gpuds_no_checksum_samples_per_s``: one epoch of
  ``gpuds.open(store).loader(batch, device="cpu")`` (shuffled) on the checked and the unchecked
  store, best; ``checksum_cost``: median of 1 - checked/unchecked; ``checksum_cpu_cost``: median
  of the checked epoch's process CPU time over the unchecked one's, minus 1: the work the checks
  add, which holds steady when other processes compete for the cores.
- ``zarr_python_loop_samples_per_s``: the same shuffled batches (the loader's order), read with
  ``arr.oindex[sorted(batch)]`` per field per batch on the checked store (zarr-python checks the
  CRCs too), the straightforward way.
- ``decode_ceiling_samples_per_s``: every chunk of the checked store read (``os.pread`` of its
  byte range, CRC bytes stripped, not checked) and decoded with the same library (numcodecs) in a
  tight parallel loop, no batching, no shuffling, no checks, each chunk into a buffer dropped at
  once (the allocator hands the same memory back, so it stays in the cache): about the most any
  loader using that library can deliver here. It runs with a thread per core and with one more
  (the loader's default pool); best of both. ``gpuds_share_of_ceiling``: best/best;
  ``..._median_of_rounds``: its median, each round against that round's faster run.
- ``decode_into_memory_samples_per_s``: the same loop, each chunk decoded into its own slot of a
  (pre-touched) ring as large as the loader's windows, on a pool of the loader's size, so the
  output lands in memory as batches must; context for where the loader's time goes. Best, and
  the loader's share of it, median.
- ``copy_scatter_samples_per_s``: the one copy a shuffled batch needs, alone: for every unit of
  the loader's own epoch plan, each field's rows are copied from a cache-resident decoded chunk
  to the unit's delivery positions in its window (numpy fancy assignment, exactly the loader's
  scatter) in pre-touched window buffers cycling over the loader's footprint, two units per task
  on a pool of the loader's size. Best.
- ``bound_decode_plus_copy_samples_per_s``: 1 / (1/decode + 1/copy) of the two best figures
  above: decoding into reused buffers plus that copy. ``gpuds_share_of_decode_plus_copy_bound``:
  median of the checked loader's rate over the bound computed from the same round's runs.
- ``shuffle_quality`` of the delivered order and ``loader_peak_traced_mib``, the checked
  loader's peak traced memory (measured in an extra, untimed epoch).

With TensorFlow installed (``--no-tf`` skips it), each round also times, on the checked store
and at the loader's epoch of the round:

- ``tf_data_samples_per_s``: ``gpuds.tensorflow.dataset(loader, "images", "labels")`` (a loader
  with the same options) drained by TensorFlow itself, ``Dataset.reduce`` in a ``tf.function``,
  as Keras's ``model.fit`` drains it in its compiled train function; best.
  ``tf_data_share_of_loader``: median over rounds of its rate over the checked loader's
  (goal: 0.9). ``tf_data_eager_loop_...``: the same drained by a Python ``for`` loop, as a custom
  training loop does. Epoch 0 checks that the dataset delivers the loader's batches.
- ``tf_from_tensor_slices_samples_per_s``: the input pipeline a TensorFlow user writes for the
  same data held in memory (both fields read into NumPy arrays): ``tf.data.Dataset.
  from_tensor_slices((images, labels)).shuffle(samples).batch(batch).prefetch(AUTOTUNE)``
  (a uniform shuffle, as the tf.data guide shows for NumPy arrays), drained the same way;
  ``tf_data_vs_from_tensor_slices``: median over rounds of gpuds' rate over it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Shuffle, Zstd

import gpuds
from gpuds.chunks import FieldChunks
from gpuds.codecs.checksum import CHECKSUM_NAME, strip_crc32c
from gpuds.codecs.shard import EMPTY, encode_shard, read_index
from gpuds.loader import EpochPlan, Loader

SAMPLE_BYTES = 32 * 32 * 3 + 8  # an image and its int64 label
CRC_BYTES = 4  # the crc32c codec's trailer

Chunk = tuple[str, int, int]  # shard path, offset, stored bytes


def make_store(work: Path, samples: int, shard_mb: float | None = None) -> Path:
    """The benchmark store (also scripts/bench_remote.py's): image-like uint8 samples (as in
    scripts/make_sample.py: a noisy dark background with a flat coloured square; zstd compresses
    them about 1.9x, like the quick start's images) and int64 labels; shards of ``shard_mb``
    (default: compress's)."""
    rng = np.random.default_rng(0)
    images = np.empty((samples, 32, 32, 3), dtype=np.uint8)
    for start in range(0, samples, 4096):
        n = min(4096, samples - start)
        block = np.clip(rng.normal(30, 10, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
        corner = rng.integers(0, 16, size=(n, 2))
        colour = rng.integers(80, 256, size=(n, 3), dtype=np.uint8)
        for i in range(n):
            y, x = corner[i]
            block[i, y : y + 16, x : x + 16] = colour[i]
        images[start : start + n] = block
    np.save(work / "images.npy", images)
    np.save(work / "labels.npy", rng.integers(0, 10, samples).astype(np.int64))
    gpuds.ingest([work / "images.npy", work / "labels.npy"], work / "raw.zarr")
    settings = gpuds.FieldSettings(shard_mb=shard_mb) if shard_mb else None
    gpuds.compress(work / "raw.zarr", work / "data.zarr", settings=settings, verify=False)
    return work / "data.zarr"


def _shards(field: Path) -> list[Path]:
    return sorted(p for p in (field / "c").rglob("*") if p.is_file())


def _strip_checksums(store: Path, fields: list[str], out: Path) -> Path:
    """A copy of ``store`` at ``out`` whose chunks carry no ``crc32c`` checksum.

    Every shard is rewritten with each inner chunk's CRC checked and removed (empty entries stay
    empty), the codec is dropped from the field's inner chain, and the store's record of the
    field (its ``zarr.json`` minus the attributes) is updated so the store still opens.
    """
    shutil.copytree(store, out)
    root = json.loads((out / "zarr.json").read_text())
    for name in fields:
        per_shard = _chunks_per_shard(out / name)
        for path in _shards(out / name):
            data = memoryview(path.read_bytes())
            index = read_index(data, per_shard, str(path))
            path.write_bytes(
                encode_shard(
                    [
                        None
                        if offset == EMPTY
                        else bytes(strip_crc32c(data[offset : offset + nbytes], f"{path} {i}"))
                        for i, (offset, nbytes) in enumerate(index.tolist())
                    ]
                )
            )
        document = json.loads((out / name / "zarr.json").read_text())
        (sharding,) = document["codecs"]
        inner = sharding["configuration"]["codecs"]
        if sharding["name"] != "sharding_indexed" or inner[-1] != {"name": CHECKSUM_NAME}:
            raise SystemExit(f"{store / name}: expected a sharded chain ending in crc32c")
        sharding["configuration"]["codecs"] = inner[:-1]
        (out / name / "zarr.json").write_text(json.dumps(document, indent=2))
        document.pop("attributes", None)
        root["attributes"]["gpuds"]["arrays"][name] = document
    (out / "zarr.json").write_text(json.dumps(root, indent=2))
    return out


def _chunks_per_shard(field: Path) -> int:
    arr = zarr.open_array(field, mode="r")
    return int((arr.shards or arr.chunks)[0]) // int(arr.chunks[0])


def _stored_chunks(field: Path) -> list[Chunk]:
    """Where every stored chunk of a field lies, from its shard indexes."""
    per_shard = _chunks_per_shard(field)
    return [
        (str(path), offset, nbytes)
        for path in _shards(field)
        for offset, nbytes in read_index(path.read_bytes(), per_shard, str(path)).tolist()
        if offset != EMPTY
    ]


def _decode(chunk: Chunk, itemsize: int, out: np.ndarray | None = None) -> Any:
    """Read one stored chunk and decode it with numcodecs; the CRC is stripped, not checked."""
    path, offset, nbytes = chunk
    fd = os.open(path, os.O_RDONLY)
    try:
        payload = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    body = memoryview(payload)[:-CRC_BYTES]
    if itemsize == 1:
        return Zstd().decode(body, out=out)
    return Shuffle(itemsize).decode(Zstd().decode(body), out=out)


def _check_decode(store: Path, fields: list[str]) -> None:
    """The ceiling's decoding must give the data: the first chunk of each field, against
    zarr-python's read of the same samples."""
    for name in fields:
        arr = zarr.open_array(store / name, mode="r")
        expected = np.asarray(arr[: int(arr.chunks[0])]).reshape(-1)
        decoded = np.frombuffer(
            _decode(_stored_chunks(store / name)[0], arr.dtype.itemsize), arr.dtype
        )
        if not np.array_equal(decoded[: expected.size], expected):
            raise SystemExit(f"{store / name}: the ceiling loop decodes its first chunk wrongly")


def _ceiling(store: Path, fields: list[str], workers: int, footprint: int = 0) -> float:
    """Seconds to read and decode every chunk of the fields with numcodecs, in parallel.

    The tightest loop a loader could run: the chunk byte ranges are located from the shard
    indexes beforehand, then ``workers`` threads read each chunk's bytes (``os.pread``), strip
    the 4 CRC bytes and decode them; no batching, no shuffling, no checks (not even the CRC).
    Each decoded chunk goes to a fresh buffer that is dropped at once, so it stays in the cache.
    With ``footprint`` bytes, each chunk is instead decoded into its own slot of a ring buffer
    that size (the memory the loader's windows span), so the output lands in memory as any
    loader's batches must: context for where the loader's time goes.
    """
    jobs = []
    cursor = 0
    for name in fields:
        arr = zarr.open_array(store / name, mode="r")
        itemsize = arr.dtype.itemsize
        size = int(np.prod(arr.chunks)) * itemsize
        for chunk in _stored_chunks(store / name):
            if footprint and cursor + size > footprint:
                cursor = 0
            jobs.append((chunk, itemsize, cursor, size))
            cursor += size
    ring = np.ones(footprint, dtype=np.uint8)  # written once: no page faults while timed

    def decode(job: tuple[Chunk, int, int, int]) -> None:
        chunk, itemsize, slot, size = job
        _decode(chunk, itemsize, ring[slot : slot + size] if footprint else None)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, jobs))
    return time.perf_counter() - start


def _scatter(loader: Loader, plan: EpochPlan) -> float:
    """Seconds for the loader's scatter alone over one epoch: every unit's rows of every field,
    from a cache-resident decoded chunk, to their delivery positions in the unit's window.

    The window buffers (one per window the loader holds, ``prefetch + 2``) are written before
    timing; windows cycle over them, and the pool has the loader's threads, two units per task.
    """
    dataset = loader.dataset
    slots = loader.prefetch + 2
    rows = loader.shuffle_window * loader.unit
    windows: dict[str, np.ndarray] = {}
    sources: dict[str, np.ndarray] = {}
    for name in loader.fields:
        arr = dataset.arrays[name]
        windows[name] = np.ones((slots, rows, *arr.shape[1:]), dtype=arr.dtype)
        sources[name] = np.ones((loader.unit, *arr.shape[1:]), dtype=arr.dtype)
    tasks = []
    for w, window in enumerate(plan.windows):
        where = np.empty(window.size, dtype=np.int64)
        where[plan.local_order(w)] = np.arange(window.size)
        offset = 0
        jobs = []
        for u in window.units:
            n = plan.unit_size(u)
            jobs.append((w % slots, where[offset : offset + n]))
            offset += n
        tasks += [jobs[i : i + 2] for i in range(0, len(jobs), 2)]

    def copy(jobs: list[tuple[int, np.ndarray]]) -> None:
        for slot, dest in jobs:
            for name in loader.fields:
                windows[name][slot][dest] = sources[name][: len(dest)]

    start = time.perf_counter()
    with ThreadPoolExecutor(loader.workers) as pool:
        list(pool.map(copy, tasks))
    return time.perf_counter() - start


def _check_same(loaders: dict[str, Loader], fields: list[str]) -> int:
    """Run epoch 0 of both loaders in lockstep; every batch must be identical. Returns the
    samples of the epoch."""
    count = 0
    for loader in loaders.values():
        loader.set_epoch(0)
    checked, unchecked = loaders.values()
    for a, b in zip(checked, unchecked, strict=True):
        for name in fields:
            if not np.array_equal(a[name], b[name]):
                raise SystemExit(f"the unchecked store delivers other {name} than the checked one")
        count += len(a[fields[0]])
    return count


class _TensorFlowRows:
    """The tf.data figures: gpuds.tensorflow.dataset against the loader and the tf.data pipeline
    a TensorFlow user writes for the same arrays in memory."""

    def __init__(self, loader: Loader, store: Path, fields: list[str], batch: int) -> None:
        import tensorflow as tf

        import gpuds.tensorflow as gtf

        self.tf = tf
        self.loader = loader
        self.gpuds = gtf.dataset(loader, inputs="images", targets="labels")
        arrays = [np.asarray(zarr.open_array(store / name, mode="r")[...]) for name in fields]
        self.baseline = (
            tf.data.Dataset.from_tensor_slices(tuple(arrays))
            .shuffle(len(arrays[0]), seed=0)
            .batch(batch)
            .prefetch(tf.data.AUTOTUNE)
        )

        @tf.function
        def drain(data: Any) -> Any:
            return data.reduce(
                tf.constant(0, tf.int64),
                lambda count, element: count + tf.shape(element[1], out_type=tf.int64)[0],
            )

        self.drain = drain

    def check(self, reference: Loader, fields: list[str]) -> None:
        """Epoch 0 of the dataset must be the loader's epoch 0, batch for batch."""
        self.loader.set_epoch(0)
        reference.set_epoch(0)
        for (images, labels), batch in zip(self.gpuds, reference, strict=True):
            for name, values in zip(fields, (images, labels), strict=True):
                if not np.array_equal(np.asarray(values), batch[name]):
                    raise SystemExit(f"gpuds.tensorflow.dataset delivers other {name}")
        self.drain(self.baseline)  # traces the drain once for each dataset
        self.drain(self.gpuds)

    def rates(self, epoch: int) -> dict[str, float]:
        """Samples/s of one epoch of each: drained by TensorFlow, by a Python loop, baseline."""
        out = {}
        self.loader.set_epoch(epoch)  # a loader moved by hand: its next pass is this epoch
        start = time.perf_counter()
        count = int(self.drain(self.gpuds))
        out["graph"] = count / (time.perf_counter() - start)
        self.loader.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for _, labels in self.gpuds:
            count += int(labels.shape[0])
        out["eager"] = count / (time.perf_counter() - start)
        start = time.perf_counter()
        count = int(self.drain(self.baseline))
        out["baseline"] = count / (time.perf_counter() - start)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--baseline-batches", type=int, default=40)
    parser.add_argument(
        "--window", type=int, default=None, help="shuffle_window (default: the loader's)"
    )
    parser.add_argument(
        "--prefetch", type=int, default=None, help="prefetch (default: the loader's)"
    )
    parser.add_argument("--no-tf", action="store_true", help="skip the tf.data figures")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="gpuds-bench-loader-"))
    try:
        store = make_store(work, args.samples)
        fields = ["images", "labels"]
        nocheck = _strip_checksums(store, fields, work / "nocheck.zarr")
        _check_decode(store, fields)
        options = {
            key: value
            for key, value in (("shuffle_window", args.window), ("prefetch", args.prefetch))
            if value is not None
        }
        datasets = {"checked": gpuds.open(str(store)), "unchecked": gpuds.open(str(nocheck))}
        for kind, dataset in datasets.items():
            for name in fields:
                if FieldChunks(dataset.arrays[name], name).checksum != (kind == "checked"):
                    raise SystemExit(f"the {kind} store's {name} chunks are not {kind}")
        loaders = {
            kind: dataset.loader(args.batch, fields=fields, device="cpu", **options)
            for kind, dataset in datasets.items()
        }
        loader = loaders["checked"]
        if _check_same(loaders, fields) != args.samples:
            raise SystemExit("an epoch does not deliver every sample")
        tf_rows = None
        if not args.no_tf:
            try:
                tf_rows = _TensorFlowRows(
                    datasets["checked"].loader(args.batch, fields=fields, device="cpu", **options),
                    store,
                    fields,
                    args.batch,
                )
            except ImportError:
                print("tensorflow is not installed: no tf.data figures", file=sys.stderr)
            else:
                tf_rows.check(
                    datasets["checked"].loader(args.batch, fields=fields, device="cpu", **options),
                    fields,
                )
        tf_best = {"graph": 0.0, "eager": 0.0, "baseline": 0.0}
        tf_ratios: dict[str, list[float]] = {"graph": [], "eager": [], "baseline": []}
        # The memory the loader's windows span: prefetch + 2 windows of every field.
        footprint = (loader.prefetch + 2) * loader.shuffle_window * loader.unit * SAMPLE_BYTES
        best = {kind: float("inf") for kind in loaders}
        ceiling_threads = {cores: float("inf"), cores + 1: float("inf")}
        materialized = copied = float("inf")
        costs: list[float] = []
        cpu_costs: list[float] = []
        ratios: list[float] = []
        ratios_into: list[float] = []
        ratios_bound: list[float] = []
        # Loader epochs and the loops alternate, so all see the same machine conditions (a
        # shared 2-core machine drifts between runs); the loaders' order swaps every round.
        for epoch in range(1, args.epochs + 1):
            rate = {}
            cpu = {}
            for kind in sorted(loaders, reverse=epoch % 2 == 0):
                loaders[kind].set_epoch(epoch)
                start, cpu_start = time.perf_counter(), time.process_time()
                count = 0
                for batch in loaders[kind]:
                    count += len(batch["labels"])
                seconds = time.perf_counter() - start
                cpu[kind] = time.process_time() - cpu_start
                best[kind] = min(best[kind], seconds)
                rate[kind] = count / seconds
            costs.append(1 - rate["checked"] / rate["unchecked"])
            cpu_costs.append(cpu["checked"] / cpu["unchecked"] - 1)
            if tf_rows is not None:
                tf_rate = tf_rows.rates(epoch)
                for kind, value in tf_rate.items():
                    tf_best[kind] = max(tf_best[kind], value)
                tf_ratios["graph"].append(tf_rate["graph"] / rate["checked"])
                tf_ratios["eager"].append(tf_rate["eager"] / rate["checked"])
                tf_ratios["baseline"].append(tf_rate["graph"] / tf_rate["baseline"])
            this_round = float("inf")
            for threads in ceiling_threads:
                took = _ceiling(store, fields, threads)
                ceiling_threads[threads] = min(ceiling_threads[threads], took)
                this_round = min(this_round, took)
            ratios.append(rate["checked"] / (args.samples / this_round))
            into = _ceiling(store, fields, loader.workers, footprint)
            materialized = min(materialized, into)
            ratios_into.append(rate["checked"] / (args.samples / into))
            scatter = _scatter(loader, loader.plan())
            copied = min(copied, scatter)
            ratios_bound.append(rate["checked"] / (args.samples / (this_round + scatter)))
        ceiling_s = min(ceiling_threads.values())
        tracemalloc.start()  # an extra, untimed epoch: tracing slows everything down
        for _ in loader:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        stream = loader.plan().stream()
        quality = gpuds.shuffle_quality(stream)
        arrays = {name: zarr.open_array(store / name, mode="r") for name in fields}
        batches = [
            np.sort(stream[i : i + args.batch])
            for i in range(0, args.baseline_batches * args.batch, args.batch)
        ]
        start = time.perf_counter()
        for idx in batches:
            for arr in arrays.values():
                arr.oindex[idx]
        zarr_rate = len(batches) * args.batch / (time.perf_counter() - start)
        loader_rate = args.samples / best["checked"]
        ceiling_rate = args.samples / ceiling_s
        report = {
            "samples": args.samples,
            "bytes_per_sample": SAMPLE_BYTES,
            "batch_size": args.batch,
            "shuffle_window": loader.shuffle_window,
            "prefetch": loader.prefetch,
            "cores": cores,
            "loader_workers": loader.workers,
            "decode_ceiling_threads": min(ceiling_threads, key=ceiling_threads.__getitem__),
            "chunks": {name: list(arrays[name].chunks) for name in fields},
            "rounds": args.epochs,
            "gpuds_samples_per_s": round(loader_rate),
            "gpuds_no_checksum_samples_per_s": round(args.samples / best["unchecked"]),
            "checksum_cost": round(statistics.median(costs), 3),
            "checksum_cpu_cost": round(statistics.median(cpu_costs), 3),
            "zarr_python_loop_samples_per_s": round(zarr_rate),
            "decode_ceiling_samples_per_s": round(ceiling_rate),
            "gpuds_vs_zarr_loop": round(loader_rate / zarr_rate, 2),
            "gpuds_share_of_ceiling": round(loader_rate / ceiling_rate, 3),
            "gpuds_share_of_ceiling_median_of_rounds": round(statistics.median(ratios), 3),
            "decode_into_memory_samples_per_s": round(args.samples / materialized),
            "gpuds_share_of_decode_into_memory_median_of_rounds": round(
                statistics.median(ratios_into), 3
            ),
            "copy_scatter_samples_per_s": round(args.samples / copied),
            "bound_decode_plus_copy_samples_per_s": round(args.samples / (ceiling_s + copied)),
            "gpuds_share_of_decode_plus_copy_bound": round(statistics.median(ratios_bound), 3),
            "shuffle_quality": quality,
            "loader_peak_traced_mib": round(peak / 2**20, 1),
        }
        if tf_rows is not None:
            report.update(
                {
                    "tensorflow": tf_rows.tf.__version__,
                    "tf_data_samples_per_s": round(tf_best["graph"]),
                    "tf_data_share_of_loader": round(statistics.median(tf_ratios["graph"]), 3),
                    "tf_data_eager_loop_samples_per_s": round(tf_best["eager"]),
                    "tf_data_eager_loop_share_of_loader": round(
                        statistics.median(tf_ratios["eager"]), 3
                    ),
                    "tf_from_tensor_slices_samples_per_s": round(tf_best["baseline"]),
                    "tf_data_vs_from_tensor_slices": round(
                        statistics.median(tf_ratios["baseline"]), 2
                    ),
                }
            )
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
