"""The training loader: shuffled, rank-partitioned, resumable batches from a store.

Reading plan (the same on CPU and GPU):

- The dataset is cut into **units** of ``U`` consecutive samples, ``U`` being the chunk length of
  the requested field with the most bytes per sample (the one decoding costs most), so a unit is
  one chunk of it. Fields with shorter chunks decode whole chunks inside the unit (chunk lengths
  are powers of two and nest, docs/FORMAT.md); fields with longer chunks (light ones such as
  labels) are decoded a whole chunk at a time and kept in a small cache while units use them.
  Only the requested fields are read.
- **Epoch order**, deterministic from ``(seed, epoch)``: the units are permuted; consecutive
  groups of ``shuffle_window`` units form *windows*; the samples of a window are permuted. The
  concatenated windows are the epoch's *stream*: every sample exactly once. Without ``shuffle``
  the stream is the store's order.
- **Ranks** take disjoint, equal-length, contiguous ranges of the stream: with ``N`` samples and
  ``W`` ranks, rank ``r`` gets positions ``[r * L, (r + 1) * L)`` with ``L = N // W``
  (``remainder="drop"``: the last ``N mod W < W`` samples of the stream, different ones every
  epoch, are not delivered) or ``L = ceil(N / W)`` (``remainder="pad"``: the stream wraps around,
  so up to ``W - 1`` samples are delivered twice). Equal lengths mean DDP never waits on a rank
  with fewer batches. A rank reads only the windows its range touches.
- **Batches** are cut from the rank's range; ``drop_last`` drops a final partial batch.
- **Reading** runs ahead: a thread pool decodes the units of the next ``prefetch`` windows while
  the current one is consumed (codecs release the GIL). Each unit is decoded into a per-thread
  scratch chunk and scattered from there (still in the core's cache) into its window's arrays,
  which hold the window's samples in delivery order; a batch is then a view of its window, and
  only a batch straddling two windows is a new array.
- **Object stores**: when the store is not on local disk, opening a window also starts reading
  its chunks (:meth:`~gpuds.chunks.FieldChunks.fetch`: one GET per shard index, kept; the
  chunks of each shard coalesced into ranged GETs of whole runs, tens in flight on zarr's event
  loop, retried with backoff), so the next ``prefetch`` windows are on their way while the
  current one is consumed; a decoding task waits only for its own unit's bytes. With
  ``cache_dir`` the chunks go to a local disk cache (:mod:`gpuds.cache`), which later epochs read
  instead of the network; cached or not, every chunk's checksum is checked when it is decoded.
- **Resume**: :meth:`Loader.state_dict` records the epoch and how many samples this rank has
  handed out; a new loader given that state continues with exactly the batches the uninterrupted
  one would have produced.

Window arrays are new for every window and never written again once decoded, so a batch stays
valid for as long as the caller keeps it, which is what DLPack consumers such as
``torch.from_dlpack`` assume. Memory: the loader holds at most ``prefetch + 2`` windows (the
ones ahead, the current one, and the previous one while the caller still holds its last batch);
a batch the caller keeps keeps its whole window alive.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuds.backend import Backend, resolve
from gpuds.cache import ChunkCache
from gpuds.chunks import Fetched, FieldChunks, field_label
from gpuds.errors import ConfigError
from gpuds.fetch import RangeFetcher, ReadPolicy

if TYPE_CHECKING:
    from gpuds.dataset import Dataset

__all__ = ["STATE_VERSION", "EpochPlan", "Loader", "default_workers", "shuffle_quality"]

STATE_VERSION = 1
DEFAULT_WINDOW = 16
_UNITS_PER_TASK = 2  # units decoded by one pool task: halves the pool's per-task cost (+3%)
_CACHE_CHUNKS = 64  # decoded chunks of light fields kept (each at most a chunk, ~1 MiB)


def default_workers() -> int:
    """Decoding threads used by default: one more than the cores this process may run on.

    The cores are those of the process's CPU affinity (what ``taskset``, SLURM or a container's
    cpuset allow), else the machine's. The extra thread keeps the cores busy while one thread
    waits for a read or for the GIL (measured on 2 cores: +5-8% samples/s, docs/loader.md).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores + 1


ALIGNMENT = 64
"""Byte alignment of the loader's window arrays on the host (a batch starts aligned when its
offset in the window, samples times sample bytes, is a multiple of it): what XLA needs to
share a batch's memory without a copy (``gpuds.jax``) and what SIMD code likes."""


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on an :data:`ALIGNMENT`-byte boundary."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _sample_nbytes(array: Any) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) * int(array.dtype.itemsize)


@dataclass
class _WindowData:
    buffers: dict[str, Any]
    futures: list[Future[None]]
    fetched: dict[str, Fetched]
    ready: bool = False

    def cancel(self) -> None:
        """Stop reading ahead for this window (the loader stopped early)."""
        for fetched in self.fetched.values():
            fetched.cancel()


@dataclass(frozen=True)
class _Window:
    units: tuple[int, ...]
    start: int  # stream position of the window's first sample
    size: int


class EpochPlan:
    """The order of one epoch for one rank (pure: no I/O).

    Examples
    --------
    >>> plan = EpochPlan(10, unit=4, window=2, shuffle=False, seed=0, epoch=0)
    >>> plan.stream().tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(
        self,
        n: int,
        *,
        unit: int,
        window: int,
        shuffle: bool,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        remainder: str = "drop",
    ) -> None:
        self.n, self.unit, self.shuffle, self.seed, self.epoch = n, unit, shuffle, seed, epoch
        units = math.ceil(n / unit) if n else 0
        order = np.arange(units)
        if shuffle:
            order = np.random.default_rng([seed, epoch, 0x0DE7]).permutation(units)
        self.windows: list[_Window] = []
        pos = 0
        for w in range(0, units, window):
            members = tuple(int(u) for u in order[w : w + window])
            size = sum(self.unit_size(u) for u in members)
            self.windows.append(_Window(members, pos, size))
            pos += size
        self._starts = np.array([w.start for w in self.windows], dtype=np.int64)
        if world_size > 1 and remainder == "pad":
            per_rank = math.ceil(n / world_size)
        else:
            per_rank = n // world_size
        self.lo, self.hi = rank * per_rank, (rank + 1) * per_rank

    def unit_size(self, u: int) -> int:
        return min(self.unit, self.n - u * self.unit)

    def local_order(self, w: int) -> np.ndarray:
        """Positions (into the window's units, concatenated) in delivery order."""
        size = self.windows[w].size
        if not self.shuffle:
            return np.arange(size)
        return np.random.default_rng([self.seed, self.epoch, w, 0x5A11]).permutation(size)

    def sample_ids(self, w: int) -> np.ndarray:
        """Global sample indices of window ``w`` in delivery order."""
        ids = np.concatenate(
            [
                np.arange(u * self.unit, u * self.unit + self.unit_size(u))
                for u in self.windows[w].units
            ]
        )
        return ids[self.local_order(w)]

    def segments(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(window, a, b)``: local positions ``[a, b)`` of the windows covering stream
        positions ``[start, stop)``; positions past the end wrap around (padding)."""
        if self.n == 0:
            return
        pos = start
        while pos < stop:
            wrapped = pos % self.n
            w = int(np.searchsorted(self._starts, wrapped, side="right")) - 1
            window = self.windows[w]
            a = wrapped - window.start
            b = min(window.size, a + (stop - pos))
            yield w, a, b
            pos += b - a

    def stream(self) -> np.ndarray:
        """This rank's sample indices in delivery order (for tests and quality figures)."""
        parts = [self.sample_ids(w)[a:b] for w, a, b in self.segments(self.lo, self.hi)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def shuffle_quality(order: Sequence[int] | np.ndarray) -> dict[str, float]:
    """How well a delivered order is shuffled, as two figures in ``[0, ~1]``.

    - ``displacement``: the mean distance between a sample's delivered and stored positions,
      relative to a uniform shuffle's ``(n**2 - 1) / (3 n)``: global mixing (``0`` = store order,
      ``~1`` = uniform).
    - ``neighbours``: the share of consecutive delivered samples that were also neighbours in the
      store: local mixing (``~1`` = store order, ``~2 / n`` = uniform). Units shuffled without a
      window keep it high; the window brings it down.

    Examples
    --------
    >>> shuffle_quality(range(100))
    {'displacement': 0.0, 'neighbours': 1.0}
    """
    positions = np.asarray(order, dtype=np.int64)
    n = len(positions)
    if n < 2:
        return {"displacement": 0.0, "neighbours": 1.0}
    displacement = np.abs(positions - np.arange(n)).mean() / ((n * n - 1) / (3 * n))
    neighbours = (np.abs(np.diff(positions)) == 1).mean()
    return {
        "displacement": round(float(displacement), 4),
        "neighbours": round(float(neighbours), 4),
    }


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def resolve_ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size from the arguments, else torch.distributed, else the environment
    (``RANK``/``WORLD_SIZE`` as set by torchrun, or ``SLURM_PROCID``/``SLURM_NTASKS``).

    torch.distributed is looked up in ``sys.modules``, never imported: a process group exists only
    if the program imported it, and importing it would cost a program that does not use torch
    about a second and 180 MB.
    """
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    if rank is None:
        rank = _env_int("RANK", "SLURM_PROCID")
    if world_size is None:
        world_size = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    rank, world_size = rank or 0, world_size or 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"Expected 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
        )
    return rank, world_size


class Loader:
    """Iterate batches of a :class:`~gpuds.dataset.Dataset` (see the module docstring).

    Parameters
    ----------
    dataset
        From ``gpuds.open(path)`` (or one of its splits).
    batch_size
        Samples per batch.
    fields
        Fields to read (default: all). Only these are read.
    shuffle, seed
        Shuffle the units and, within windows of ``shuffle_window`` units, the samples; the order
        depends only on ``(seed, epoch)``.
    drop_last
        Drop the last batch of an epoch when it is short (default False, as PyTorch's
        ``DataLoader``: every sample of the rank's share is delivered). An epoch that would
        deliver no batch at all is a :class:`~gpuds.errors.ConfigError`.
    device
        ``auto``, ``cpu`` (NumPy batches) or ``cuda`` (CuPy batches).
    rank, world_size
        This process's share (default: torch.distributed or the environment).
    prefetch
        Windows decoded ahead of the one being consumed.
    shuffle_window
        Units per shuffle window (a larger window shuffles better and holds more memory).
    remainder
        ``drop`` or ``pad``: what happens to the ``N mod world_size`` samples that do not divide.
    workers
        Decoding threads (default: :func:`default_workers`, the usable cores plus one).
    cache_dir, cache_limit
        Object stores only: keep the chunks read in this local directory (made if absent), at
        most ``cache_limit`` bytes (default: no limit), least recently used evicted first
        (:class:`~gpuds.cache.ChunkCache`); later epochs, and later runs, read them from there.
    requests
        Object stores only: ranged GETs in flight at most.
    retries
        Object stores only: retries of a request that fails transiently (throttling, 5xx,
        dropped connections), with exponential backoff and jitter, before the epoch fails.

    Examples
    --------
    >>> loader = gpuds.open("data.zarr")["train"].loader(256, fields=["images", "labels"])
    ... # doctest: +SKIP
    >>> for epoch in range(3):                                   # doctest: +SKIP
    ...     loader.set_epoch(epoch)
    ...     for batch in loader:
    ...         step(batch["images"], batch["labels"])
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        fields: Sequence[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        device: str = "auto",
        rank: int | None = None,
        world_size: int | None = None,
        prefetch: int = 2,
        shuffle_window: int = DEFAULT_WINDOW,
        remainder: str = "drop",
        workers: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
        requests: int = ReadPolicy.requests,
        retries: int = ReadPolicy.retries,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"Expected batch_size to be a positive integer, got {batch_size!r}")
        if remainder not in ("drop", "pad"):
            raise ConfigError(f"Expected remainder to be 'drop' or 'pad', got {remainder!r}")
        if prefetch < 0 or shuffle_window < 1:
            raise ConfigError("Expected prefetch >= 0 and shuffle_window >= 1")
        names = list(fields) if fields is not None else list(dataset.arrays)
        unknown = [f for f in names if f not in dataset.arrays]
        if unknown or not names:
            raise ConfigError(
                f"{dataset!r}: no field(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"fields: {', '.join(dataset.arrays)}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.fields = names
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank, self.world_size = resolve_ranks(rank, world_size)
        self.prefetch = prefetch
        self.shuffle_window = shuffle_window
        self.remainder = remainder
        self.workers = workers or default_workers()
        self.backend: Backend = resolve(device)
        # The unit follows the field that costs the most to decode (most bytes per sample);
        # fields with longer chunks are read a whole chunk at a time through a small cache.
        heaviest = max(names, key=lambda f: _sample_nbytes(dataset.arrays[f]))
        self.unit = int(dataset.arrays[heaviest].chunks[0]) if len(dataset) else 1
        self._cache: OrderedDict[tuple[str, int], Future[np.ndarray]] = OrderedDict()
        self._local = threading.local()  # per-thread scratch chunks
        self._dtypes = {f: np.dtype(dataset.arrays[f].dtype) for f in names}
        self.read_policy = ReadPolicy(requests=requests, retries=retries)
        self.cache = ChunkCache(cache_dir, cache_limit) if cache_dir is not None else None
        """The local cache of chunks read from an object store (``cache_dir``), or None."""
        store = dataset.arrays[names[0]].store_path.store
        # One fetcher for all fields: one bound on the requests in flight.
        fetcher = RangeFetcher(store, str(dataset.path).rstrip("/"), self.read_policy)
        identity = json.dumps(
            [dataset.info.get("created"), dataset.info.get("fingerprint")], default=str
        )
        self._readers = {
            f: FieldChunks(
                dataset.arrays[f],
                field_label(dataset.path, dataset.name, f),
                fetcher=fetcher,
                cache=self.cache,
                cache_identity=identity,
            )
            for f in names
        }
        self._remote = any(reader.remote for reader in self._readers.values())
        # On a GPU, the unit-sized fields whose chain gpuds decodes are decoded there by nvCOMP
        # (the nvCOMP-only codecs included); light fields (longer chunks, e.g. labels) are
        # decoded on the host and copied.
        self._device_fields: frozenset[str] = frozenset(
            f
            for f in names
            if self.backend.is_gpu
            and self._readers[f].config is not None
            and self._readers[f].chunk == self.unit
        )
        self._cache_lock = threading.Lock()
        self.epoch = 0
        self._position = 0
        self._check_not_empty()

    def _check_not_empty(self) -> None:
        plan = self.plan()
        share = plan.hi - plan.lo
        if share >= (self.batch_size if self.drop_last else 1):
            return
        split = f" split {self.dataset.name!r}" if self.dataset.name else ""
        why = (
            f"with drop_last=True its share of {share} samples is less than batch_size "
            f"{self.batch_size}"
            if share
            else "its share is 0 samples"
        )
        raise ConfigError(
            f"{self.dataset.path}{split}: an epoch would deliver no batch: {len(self.dataset)} "
            f"samples over {self.world_size} rank(s) (remainder={self.remainder!r}), rank "
            f"{self.rank} gets {share}; {why}. Use a smaller batch_size, drop_last=False, "
            "fewer ranks or remainder='pad'"
        )

    # -- order ------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (changes the shuffle and the ranks' shares)."""
        self.epoch = int(epoch)
        self._position = 0

    def plan(self) -> EpochPlan:
        return EpochPlan(
            len(self.dataset),
            unit=self.unit,
            window=self.shuffle_window,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            remainder=self.remainder,
        )

    def __len__(self) -> int:
        plan = self.plan()
        samples = plan.hi - plan.lo
        return (
            samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)
        )

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this rank is: epoch and samples handed out (JSON-safe)."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "shuffle_window": self.shuffle_window,
            "unit": self.unit,
            "samples": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; settings that change the order must match."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"loader state version {state.get('version')!r} is not supported")
        mine = self.state_dict()
        for key in (
            "seed",
            "shuffle",
            "batch_size",
            "rank",
            "world_size",
            "shuffle_window",
            "unit",
            "samples",
        ):
            if state.get(key) != mine[key]:
                raise ConfigError(
                    f"loader state was saved with {key}={state.get(key)!r} but this loader has "
                    f"{key}={mine[key]!r}; the order would differ"
                )
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])

    # -- reading ----------------------------------------------------------------------------
    def _read_chunk(self, name: str, index: int) -> np.ndarray:
        """A whole chunk of a field whose chunks are longer than the unit, decoded once."""
        chunk = int(self.dataset.arrays[name].chunks[0])
        key = (name, index)
        with self._cache_lock:
            future = self._cache.get(key)
            if future is None:
                future = Future()
                self._cache[key] = future
                owner = True
                while len(self._cache) > _CACHE_CHUNKS:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
                owner = False
        if owner:
            try:
                start = index * chunk
                stop = min(start + chunk, len(self.dataset))
                future.set_result(self._readers[name].read_range(start, stop))
            except BaseException as e:
                future.set_exception(e)
                with self._cache_lock:
                    self._cache.pop(key, None)
        return future.result()

    def _batches(self, plan: EpochPlan, start: int) -> Iterator[list[tuple[int, int, int]]]:
        """The rank's remaining batches, each as pieces ``(window, a, b)``: positions ``[a, b)``
        of the window's samples in delivery order."""
        pieces: list[tuple[int, int, int]] = []
        filled = 0
        for w, a, b in plan.segments(start, plan.hi):
            pos = a
            while pos < b:
                take = min(b - pos, self.batch_size - filled)
                pieces.append((w, pos, pos + take))
                filled += take
                pos += take
                if filled == self.batch_size:
                    yield pieces
                    pieces, filled = [], 0
        if pieces and not self.drop_last:
            yield pieces

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan = self.plan()
        start = plan.lo + self._position
        order_of_windows = list(dict.fromkeys(w for w, _, _ in plan.segments(start, plan.hi)))
        rank_of = {w: i for i, w in enumerate(order_of_windows)}
        windows: dict[int, _WindowData] = {}
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gpuds-load")
        try:
            opened = 0
            for spec in self._batches(plan, start):
                # Decode windows in stream order, up to `prefetch` beyond the one needed now.
                current = rank_of[spec[-1][0]]
                while opened < len(order_of_windows) and opened <= current + self.prefetch:
                    w = order_of_windows[opened]
                    windows[w] = self._open_window(plan, w, pool)
                    opened += 1
                for w in list(windows):  # windows behind this batch are done: let them go
                    if rank_of[w] < rank_of[spec[0][0]]:
                        del windows[w]
                parts = []
                for w, a, b in spec:
                    data = windows[w]
                    if not data.ready:
                        for future in data.futures:
                            future.result()  # re-raises a decoding error here, in the consumer
                        data.ready = True
                    parts.append({name: data.buffers[name][a:b] for name in self.fields})
                if len(parts) == 1:
                    batch = parts[0]  # views of the window: no copy
                else:  # a batch straddling windows: a new array
                    xp = self.backend.xp
                    batch = {
                        name: xp.concatenate([part[name] for part in parts]) for name in self.fields
                    }
                self._position += len(batch[self.fields[0]])
                yield batch
        finally:  # also when the caller stops early: drop the reading and decoding queued ahead
            for data in windows.values():
                data.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
        self._position = 0

    def _open_window(self, plan: EpochPlan, w: int, pool: ThreadPoolExecutor) -> _WindowData:
        """Allocate a window's arrays and queue the decoding of its units into them.

        The arrays hold the window's samples in delivery order, so batches are views of them.
        They are new for every window and the loader never writes them again once decoded:
        batches handed out stay valid for as long as the caller keeps them (DLPack consumers
        rely on that), and the memory goes back when the last view of a window is dropped.
        """
        window = plan.windows[w]
        fetched = self._fetch(plan, w)
        if self.backend.is_gpu:
            data = _WindowData({}, [], fetched)
            data.futures.append(
                pool.submit(self._decode_window_gpu, plan, w, data.buffers, fetched)
            )
            return data
        buffers = {
            name: _aligned_empty(
                (window.size, *self.dataset.arrays[name].shape[1:]), self._dtypes[name]
            )
            for name in self.fields
        }
        # Sample k of the window (units concatenated) goes to delivery position where[k].
        where = None
        if plan.shuffle:
            order = plan.local_order(w)
            where = np.empty_like(order)
            where[order] = np.arange(len(order))
        jobs = []
        offset = 0
        for u in window.units:
            n = plan.unit_size(u)
            jobs.append((u, offset, None if where is None else where[offset : offset + n]))
            offset += n
        futures = [
            pool.submit(self._fill_units, buffers, jobs[i : i + _UNITS_PER_TASK], fetched)
            for i in range(0, len(jobs), _UNITS_PER_TASK)
        ]
        return _WindowData(buffers, futures, fetched)

    def _fetch(self, plan: EpochPlan, w: int) -> dict[str, Fetched]:
        """From an object store, start reading the chunks of window ``w`` that its units need
        (fields whose chunks are longer than a unit go through the chunk cache instead); nothing
        for local files."""
        if not self._remote:
            return {}
        units = plan.windows[w].units
        fetched = {}
        for name in self.fields:
            reader = self._readers[name]
            if reader.chunk > self.unit:
                continue
            per_unit = self.unit // reader.chunk
            indices = [
                i
                for u in units
                for i in range(u * per_unit, min((u + 1) * per_unit, reader.nchunks))
            ]
            fetched[name] = reader.fetch(indices)
        return fetched

    def _fill_units(
        self,
        buffers: dict[str, np.ndarray],
        jobs: list[tuple[int, int, np.ndarray | None]],
        fetched: dict[str, Fetched],
    ) -> None:
        """Decode units ``(u, offset, dest)`` into the window: in store order at ``offset``, or
        scattered to the delivery positions ``dest`` from a per-thread scratch chunk (still in
        the core's cache, so the scatter is the only pass over the window's memory)."""
        for u, offset, dest in jobs:
            n = min(self.unit, len(self.dataset) - u * self.unit)
            for name in self.fields:
                ahead = fetched.get(name)
                if dest is None:
                    self._read_unit_field_into(name, u, buffers[name][offset : offset + n], ahead)
                else:
                    buffers[name][dest] = self._unit_rows(name, u, ahead)

    def _scratch(self, name: str) -> np.ndarray:
        """This thread's buffer for one decoded chunk of field ``name``."""
        scratch: dict[str, np.ndarray] | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = {}
        if name not in scratch:
            reader = self._readers[name]
            scratch[name] = np.empty((reader.chunk, *reader.sample_shape), reader.dtype)
        return scratch[name]

    def _unit_rows(self, name: str, u: int, fetched: Fetched | None = None) -> np.ndarray:
        """Unit ``u`` of field ``name`` in store order; possibly a view of this thread's scratch
        or of a cached chunk, valid until the thread's next call."""
        start = u * self.unit
        stop = min(start + self.unit, len(self.dataset))
        reader = self._readers[name]
        if reader.chunk == self.unit:
            scratch = self._scratch(name)
            reader.read_into(u, scratch, fetched)
            return scratch[: stop - start]
        if reader.chunk > self.unit:
            first = start // reader.chunk * reader.chunk
            return self._read_chunk(name, start // reader.chunk)[start - first : stop - first]
        return reader.read_range(start, stop, fetched)

    def _read_unit_field_into(
        self, name: str, u: int, rows: np.ndarray, fetched: Fetched | None = None
    ) -> None:
        """Unit ``u`` of field ``name`` into ``rows`` (in store order)."""
        reader = self._readers[name]
        if reader.chunk == self.unit and len(rows) == self.unit:
            reader.read_into(u, rows, fetched)  # straight into place: no copy
        else:
            rows[...] = self._unit_rows(name, u, fetched)

    def _stream(self) -> Any:
        """This worker thread's CUDA stream, made once: the window's copies, nvCOMP calls and
        gathers run on it (overlapping the consumer), and the nvCOMP codecs, which are made per
        thread and stream, are made once per worker."""
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self.backend.xp.cuda.Stream(non_blocking=True)
        return stream

    def _decode_window_gpu(
        self, plan: EpochPlan, w: int, buffers: dict[str, Any], fetched: dict[str, Fetched]
    ) -> None:
        """Decode one window on the device, on this worker's stream: per field, the chunk service
        sends the window's compressed chunks to the device in one copy and decodes them with one
        batched nvCOMP call (un-shuffled there too), and one gather on the device puts the
        samples in delivery order."""
        xp = self.backend.xp
        units = plan.windows[w].units
        sizes = [plan.unit_size(u) for u in units]
        order = plan.local_order(w)
        # Rows of the decoded units in delivery order (the dataset's last unit may be partial:
        # its padding rows are skipped); one gather per field, when needed at all.
        rows = np.concatenate(
            [np.arange(i * self.unit, i * self.unit + n) for i, n in enumerate(sizes)]
        )
        gather = rows[order] if plan.shuffle or len(rows) != len(units) * self.unit else None
        stream = self._stream()
        with stream:
            for name in self.fields:
                if name not in self._device_fields:
                    host = np.empty(
                        (sum(sizes), *self.dataset.arrays[name].shape[1:]), self._dtypes[name]
                    )
                    offset = 0
                    for u, n in zip(units, sizes, strict=True):
                        self._read_unit_field_into(
                            name, u, host[offset : offset + n], fetched.get(name)
                        )
                        offset += n
                    buffers[name] = xp.asarray(host[order] if plan.shuffle else host)
                    continue
                # Checksums and declared sizes are checked on the host as the chunk service
                # gathers the payloads for the one copy to the device (docs/FORMAT.md).
                values = self._readers[name].read_device(units, fetched.get(name))
                if gather is not None:
                    values = xp.take(values, xp.asarray(gather), axis=0)
                buffers[name] = values
            stream.synchronize()
