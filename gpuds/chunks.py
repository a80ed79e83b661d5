"""The chunk-reading service: every read of a gpuds store's chunks goes through here.

The loader (CPU and GPU windows), ``gpuds bench``, ``preprocess`` and ``compress`` reading their
input and ``inspect --verify`` all read through :class:`FieldChunks`, so they share one policy:

- **A store is dense.** A missing chunk, a missing shard, or a chunk absent from its shard's
  index is damage, never the fill value (zarr-python would fill it: Zarr allows sparse arrays).
- **Checksums are checked before decoding.** A chain ending in ``crc32c`` has every chunk's
  CRC-32C checked; a shard index has its own CRC-32C, and every entry must lie inside the shard.
- **Sizes are checked before allocating** (declared chunk size, stored size, the size the
  codec's header declares: :meth:`~gpuds.codecs.spec.CodecSpec.check_declared_size`) **and after
  decoding**.
- **Every failure is a** :class:`~gpuds.errors.CorruptChunkError` naming store, split, field,
  shard and chunk.

Bytes come from local files (one ``os.pread`` per chunk, each shard index read once and cached) or
from any other zarr-python store (object stores, fsspec URLs) through ranged GETs
(:class:`~gpuds.fetch.RangeFetcher`: many in flight, retried); :meth:`FieldChunks.fetch` reads a
batch of chunks ahead, a shard's neighbouring chunks coalesced into one GET, and an optional local
disk cache (:class:`~gpuds.cache.ChunkCache`) keeps them, checked on every read like the rest.
The chains gpuds writes (``bytes [numcodecs.shuffle] <codec> [crc32c]`` with a registered codec,
sharded or not: :func:`parse_chain`) are decoded here: on the CPU by
:class:`~gpuds.codecs.cpu.CpuChunkCodec`, chunk by chunk; on the GPU by nvCOMP, a batch of chunks
per call (:meth:`FieldChunks.read_device` for the loader's GPU windows). Chains of the nvCOMP-only
codecs decode on a GPU only: host reads of them (``read``, ``read_range``) decode a shard's chunks
per nvCOMP call and copy them back, and raise :class:`~gpuds.errors.DeviceError` naming the fix
where no GPU is usable. Any other chain is decoded by zarr-python once the chunk's presence has
been checked here.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError, Future
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from gpuds import backend
from gpuds.cache import ChunkCache
from gpuds.codecs import registry
from gpuds.codecs.base import CodecConfig
from gpuds.codecs.checksum import CHECKSUM_NAME, strip_crc32c
from gpuds.codecs.cpu import CpuChunkCodec
from gpuds.codecs.shard import EMPTY, index_nbytes, parse_index
from gpuds.codecs.spec import SHUFFLE_NAME
from gpuds.errors import CorruptChunkError, DeviceError, StoreError
from gpuds.fetch import RangeFetcher, coalesce
from gpuds.store import MAX_CHUNKS

if TYPE_CHECKING:
    from gpuds.codecs.nvcomp import NvcompChunkCodec

__all__ = ["MAX_CHUNK_BYTES", "Fetched", "FieldChunks", "field_label", "parse_chain"]

MAX_CHUNK_BYTES = 2**31
"""The largest decoded chunk gpuds allocates (2 GiB); metadata declaring more is refused."""

_OPEN_FILES = 32


def field_label(store: str, split: str, name: str) -> str:
    """How errors name a field: ``data.zarr field 'train/x'``."""
    return f"{store} field '{split}/{name}'" if split else f"{store} field '{name}'"


def parse_chain(codecs: list[dict[str, Any]], itemsize: int) -> tuple[CodecConfig | None, bool]:
    """The :class:`CodecConfig` of a ``bytes [numcodecs.shuffle] [codec] [crc32c]`` chain whose
    codec is a registered one (:func:`gpuds.codecs.registry.recognize`; None for any other chain)
    and whether it ends in the ``crc32c`` checksum. The config holds what decoding needs: the
    shuffle, and for the nvCOMP-only codecs their recorded level and ``data_type``.

    Examples
    --------
    >>> parse_chain([{"name": "bytes"}, {"name": "zstd"}, {"name": "crc32c"}], 1)
    (CodecConfig(name='zstd', level=None, shuffle=False), True)
    >>> nvcomp = {"name": "gpuds.nvcomp",
    ...           "configuration": {"algorithm": "cascaded", "level": 1, "data_type": "<i4"}}
    >>> parse_chain([{"name": "bytes"}, nvcomp], 4)[0]
    CodecConfig(name='cascaded', level=1, shuffle=False, data_type='<i4')
    """
    names = [c["name"] for c in codecs]
    checksum = bool(names) and names[-1] == CHECKSUM_NAME
    if checksum:
        codecs = codecs[:-1]
        names = names[:-1]
    if not names or names[0] != "bytes":
        return None, checksum
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if itemsize > 1 and endian != "little":
        return None, checksum
    rest = codecs[1:]
    shuffle = False
    if rest and rest[0]["name"] == SHUFFLE_NAME:
        if (rest[0].get("configuration") or {}).get("elementsize") != itemsize:
            return None, checksum
        shuffle, rest = True, rest[1:]
    found = registry.recognize(rest)
    if found is None:
        return None, checksum
    spec, settings = found
    if shuffle and spec.stores_raw:
        return None, checksum
    return CodecConfig(
        spec.name, settings.get("level"), shuffle, settings.get("data_type")
    ), checksum


class _Files:
    """The stored objects of one array as local files.

    Shard files stay open (``os.pread`` on a descriptor is thread-safe); a descriptor is closed
    only when no thread is reading through it, so a read never lands on a reused number.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, list[int]] = {}  # key -> [fd, readers]
        self._lock = threading.Lock()

    def size(self, key: str) -> int | None:
        try:
            return (self.root / key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read(self, key: str, limit: int) -> bytes | None:
        """The whole object, or its first ``limit + 1`` bytes (enough to see it is too big)."""
        try:
            with open(self.root / key, "rb") as fh:
                return fh.read(min(os.fstat(fh.fileno()).st_size, limit + 1))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_range(self, key: str, offset: int, nbytes: int) -> bytes | None:
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                try:
                    fd = os.open(self.root / key, os.O_RDONLY)
                except (FileNotFoundError, NotADirectoryError):
                    return None
                entry = self._files[key] = [fd, 0]
            entry[1] += 1
            self._evict()
        try:
            return os.pread(entry[0], nbytes, offset)
        finally:
            with self._lock:
                entry[1] -= 1

    def _evict(self) -> None:
        """Close idle descriptors beyond the limit (called with the lock held)."""
        for key in list(self._files):
            if len(self._files) <= _OPEN_FILES:
                return
            fd, readers = self._files[key]
            if readers == 0:
                del self._files[key]
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._files.values():
                os.close(fd)
            self._files.clear()


class _Remote:
    """The stored objects of one array through its zarr-python store (object stores, fsspec
    URLs, memory), read by a :class:`~gpuds.fetch.RangeFetcher`: ranged GETs, many in flight."""

    def __init__(self, fetcher: RangeFetcher, prefix: str) -> None:
        self.fetcher = fetcher
        self.prefix = prefix

    def size(self, key: str) -> int | None:
        return self.fetcher.size(self.prefix + key)

    def read(self, key: str, limit: int) -> memoryview | None:
        """The whole object, or its first ``limit + 1`` bytes (enough to see it is too big):
        one ranged GET."""
        return self.fetcher.get(self.prefix + key, 0, limit + 1)

    def read_range(self, key: str, offset: int, nbytes: int) -> memoryview | None:
        return self.fetcher.get(self.prefix + key, offset, offset + nbytes)

    def close(self) -> None:
        pass


def _resolve(future: Future[Any], value: Any) -> None:
    """Set a chunk's future (from the event loop's thread, once) to bytes or an error."""
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


def _source(array: zarr.Array, fetcher: RangeFetcher | None) -> _Files | _Remote:
    store = array.store_path.store
    prefix = f"{array.path}/" if array.path else ""
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        return _Files(root / array.path if array.path else root)
    if fetcher is None or fetcher.store is not store:
        fetcher = RangeFetcher(store)
    return _Remote(fetcher, prefix)


class Fetched:
    """Chunks being read ahead by :meth:`FieldChunks.fetch`: each one's stored bytes, taken once
    by the read that decodes it (so the bytes go as soon as they are decoded)."""

    def __init__(self) -> None:
        self._futures: dict[int, Future[Any]] = {}
        self._tasks: list[Future[None]] = []

    def __contains__(self, index: object) -> bool:
        return index in self._futures

    def __len__(self) -> int:
        return len(self._futures)

    def take(self, index: int) -> bytes | memoryview | None:
        """Chunk ``index``'s stored bytes (waiting for them), or None when it was not fetched
        (cached, or not asked for); raises what reading it raised."""
        future = self._futures.pop(index, None)
        return None if future is None else future.result()

    def cancel(self) -> None:
        """Stop the requests still queued or in flight (the loader stopped early)."""
        for task in self._tasks:
            task.cancel()
        self._futures.clear()


class FieldChunks:
    """The chunks of one field (an array chunked along axis 0), read and checked.

    Parameters
    ----------
    array
        The field's Zarr array.
    label
        How errors name it (:func:`field_label`): store, split and field.
    fetcher
        Reads an object store's bytes (ranged GETs, many in flight, retried); shared by the
        fields of a loader. Default: one of its own when the array is not on local disk.
    cache, cache_identity
        A local disk cache of the chunks read from an object store, and what identifies the
        store's content besides its URL and the array's metadata (its creation record). Only
        chains ending in ``crc32c`` are cached: a cached chunk is checked like any other.

    Examples
    --------
    >>> chunks = FieldChunks(gpuds.open("data.zarr")["train"].arrays["x"], "data.zarr 'train/x'")
    ... # doctest: +SKIP
    >>> first = chunks.read(0)                                    # doctest: +SKIP
    """

    def __init__(
        self,
        array: zarr.Array,
        label: str,
        *,
        fetcher: RangeFetcher | None = None,
        cache: ChunkCache | None = None,
        cache_identity: str = "",
    ) -> None:
        self.array = array
        self.label = label
        shape = tuple(int(s) for s in array.shape)
        chunks = tuple(int(c) for c in array.chunks)
        if not shape or chunks[1:] != shape[1:]:
            raise StoreError(
                f"{label}: chunks {chunks} of shape {shape} do not hold whole samples; gpuds "
                "stores chunk along axis 0 only"
            )
        self.length = shape[0]
        self.chunk = chunks[0]
        self.sample_shape = shape[1:]
        self.dtype = np.dtype(array.dtype)
        sample_nbytes = math.prod(self.sample_shape) * self.dtype.itemsize
        self.chunk_nbytes = self.chunk * sample_nbytes
        if self.chunk < 1 or self.chunk_nbytes > MAX_CHUNK_BYTES:
            raise StoreError(
                f"{label}: declares chunks of {self.chunk} samples ({self.chunk_nbytes} bytes); "
                f"gpuds reads chunks of 1 sample to {MAX_CHUNK_BYTES} bytes"
            )
        self.nchunks = -(-self.length // self.chunk)
        if self.nchunks > MAX_CHUNKS:
            raise StoreError(
                f"{label}: declares {self.length} samples in {self.nchunks} chunks, more than "
                f"the {MAX_CHUNKS} gpuds reads per field"
            )
        metadata: dict[str, Any] = dict(array.metadata.to_dict())
        if metadata.get("storage_transformers"):
            raise StoreError(
                f"{label}: uses storage transformers "
                f"{[t.get('name') for t in metadata['storage_transformers']]}, which gpuds "
                "does not read (Zarr readers must refuse unknown ones)"
            )
        codecs = [dict(c) for c in metadata.get("codecs") or []]
        self.sharded = False
        self.per_shard = 1
        self._own_index = False
        if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
            sharding = codecs[0].get("configuration") or {}
            self.sharded = True
            shards = tuple(int(s) for s in array.shards or ())
            shard = shards[0] if shards else 0
            if shard < self.chunk or shard % self.chunk or shards[1:] != shape[1:]:
                raise StoreError(
                    f"{label}: shards {list(shards)} do not hold whole chunks {list(chunks)}"
                )
            self.per_shard = shard // self.chunk
            index_codecs = [c["name"] for c in sharding.get("index_codecs", [])]
            self._own_index = index_codecs == ["bytes", CHECKSUM_NAME] and (
                sharding.get("index_location", "end") == "end"
            )
            codecs = [dict(c) for c in sharding.get("codecs", [])]
        config, self.checksum = parse_chain(codecs, self.dtype.itemsize)
        if self.sharded and not self._own_index:
            config = None
        self.config = config
        """The chain's codec when gpuds decodes it itself, else None (zarr-python decodes)."""
        self.gpu_only = config is not None and registry.get(config.name).cpu is None
        """Its codec decodes on a GPU only (the nvCOMP-only family): reads go through nvCOMP."""
        self.codec = (
            CpuChunkCodec(config, self.dtype.itemsize, threads=1)
            if config is not None and not self.gpu_only
            else None
        )
        self._gpu_checked = False
        # What a chunk's stored bytes may be at most: any codec's worst case stays well inside.
        self.max_payload = self.chunk_nbytes + self.chunk_nbytes // 8 + 4096
        self._bytes = _source(array, fetcher)
        self.remote = isinstance(self._bytes, _Remote)
        """Read from an object store (or another zarr-python store), not from local files."""
        self._indexes: dict[int, np.ndarray] = {}
        self._index_tasks: dict[
            int, asyncio.Future[tuple[memoryview, int] | None]
        ] = {}  # on the fetcher's loop
        self._lock = threading.Lock()
        self._cache = None
        self._scope = ""
        if cache is not None and isinstance(self._bytes, _Remote) and self.checksum:
            self._cache = cache
            self._scope = ChunkCache.scope(
                self._bytes.fetcher.url,
                array.path,
                json.dumps(metadata, sort_keys=True, default=str),
                cache_identity,
            )

    def __repr__(self) -> str:
        return f"FieldChunks({self.label}, {self.nchunks} chunks of {self.chunk} samples)"

    def close(self) -> None:
        """Release the files kept open."""
        self._bytes.close()

    def __del__(self) -> None:
        bytes_ = getattr(self, "_bytes", None)
        if bytes_ is not None:
            bytes_.close()

    # -- where ------------------------------------------------------------------------------
    def object_key(self, obj: int) -> str:
        """The key (relative to the field) of stored object ``obj``: a shard, or a chunk."""
        coords = (obj,) + (0,) * (self.array.ndim - 1)
        return str(self.array.metadata.encode_chunk_key(coords))

    @property
    def nobjects(self) -> int:
        """Stored objects of the field: shards when sharded, else chunks."""
        return -(-self.nchunks // self.per_shard)

    def where(self, index: int) -> str:
        """Chunk ``index`` named for an error: store, split, field, shard, chunk and samples."""
        first = index * self.chunk
        samples = f"samples {first}..{min(first + self.chunk, self.length) - 1}"
        if self.sharded:
            shard, inner = divmod(index, self.per_shard)
            return (
                f"in {self.label}, shard {self.object_key(shard)} inner chunk {inner} ({samples})"
            )
        return f"in {self.label}, chunk {self.object_key(index)} ({samples})"

    def _check(self, index: int) -> None:
        if not 0 <= index < self.nchunks:
            raise IndexError(f"{self.label}: chunk {index} out of range 0..{self.nchunks - 1}")

    # -- bytes ------------------------------------------------------------------------------
    def read_object(self, obj: int) -> bytes | memoryview:
        """The stored bytes of object ``obj`` (a whole shard or chunk), unchecked: for
        measuring storage reads."""
        key = self.object_key(obj)
        data = self._bytes.read(key, 2**62)
        if data is None:
            raise CorruptChunkError(f"missing object {key} in {self.label}")
        return data

    def _shard_index(self, shard: int) -> np.ndarray:
        with self._lock:
            cached = self._indexes.get(shard)
        if cached is not None:
            return cached
        if isinstance(self._bytes, _Remote):
            return self._bytes.fetcher.run(self._shard_index_async(shard))
        key = self.object_key(shard)
        length = self._bytes.size(key)
        size = index_nbytes(self.per_shard)
        if length is None:
            found = None
        else:
            tail = self._bytes.read_range(key, max(0, length - size), min(size, length))
            found = (tail or b"", length)
        return self._keep_index(shard, found)

    def _keep_index(self, shard: int, found: tuple[bytes | memoryview, int] | None) -> np.ndarray:
        """Check the tail ``found`` of shard ``shard`` (bytes, shard length; None: no shard) and
        keep its index."""
        where = f"in {self.label}, shard {self.object_key(shard)}"
        if found is None:
            raise CorruptChunkError(
                f"missing shard {where}: a gpuds store is dense, so a missing shard is damage"
            )
        index = parse_index(bytes(found[0]), found[1], self.per_shard, where)
        with self._lock:
            self._indexes[shard] = index
        return index

    async def _shard_index_async(self, shard: int) -> np.ndarray:
        """The shard's index: one GET for its last bytes (obstore), read once however many
        windows ask for it at the same time."""
        cached = self._indexes.get(shard)
        if cached is not None:
            return cached
        assert isinstance(self._bytes, _Remote)
        task = self._index_tasks.get(shard)
        if task is None:
            key = self._bytes.prefix + self.object_key(shard)
            tail = self._bytes.fetcher.tail_async(key, index_nbytes(self.per_shard))
            task = self._index_tasks[shard] = asyncio.ensure_future(tail)
            # Its error reaches every waiter; none left (the loader stopped) is not an error.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            found = await asyncio.shield(task)
        finally:
            if task.done():
                self._index_tasks.pop(shard, None)  # kept, or failed: a later read retries
        return self._keep_index(shard, found)

    def _locate(self, index: int, shard_index: np.ndarray) -> tuple[int, int]:
        """Offset and stored size of chunk ``index`` in its shard, from the shard's index."""
        offset, nbytes = (int(v) for v in shard_index[index % self.per_shard])
        if offset == EMPTY:
            raise CorruptChunkError(
                f"missing chunk {self.where(index)}: absent from its shard's index"
            )
        if nbytes > self.max_payload:
            raise CorruptChunkError(
                f"corrupt chunk {self.where(index)}: stored as {nbytes} bytes, more than a "
                f"chunk of {self.chunk_nbytes} bytes encodes to"
            )
        return offset, nbytes

    def _missing(self, index: int) -> CorruptChunkError:
        if self.sharded:
            return CorruptChunkError(f"missing shard {self.where(index)}: it disappeared")
        return CorruptChunkError(
            f"missing chunk {self.where(index)}: a gpuds store is dense, so a missing "
            "chunk is damage (zarr-python would read it as fill values)"
        )

    def _truncated(self, index: int, got: int, nbytes: int) -> CorruptChunkError:
        return CorruptChunkError(
            f"corrupt chunk {self.where(index)}: truncated shard ({got} of {nbytes} bytes)"
        )

    def _stored(self, index: int) -> bytes | memoryview:
        """Chunk ``index`` as stored (checksum included), read now."""
        if self.sharded:
            shard = index // self.per_shard
            offset, nbytes = self._locate(index, self._shard_index(shard))
            data = self._bytes.read_range(self.object_key(shard), offset, nbytes)
            if data is None:
                raise self._missing(index)
            if len(data) != nbytes:
                raise self._truncated(index, len(data), nbytes)
            return data
        stored = self._bytes.read(self.object_key(index), self.max_payload)
        if stored is None:
            raise self._missing(index)
        return stored

    def _checked(self, index: int, stored: bytes | memoryview) -> bytes | memoryview:
        """The encoded bytes of stored chunk ``index``: size and checksum checked and removed."""
        if len(stored) > self.max_payload:
            raise CorruptChunkError(
                f"corrupt chunk {self.where(index)}: more than the {self.max_payload} bytes "
                f"a chunk of {self.chunk_nbytes} bytes encodes to"
            )
        return strip_crc32c(stored, self.where(index)) if self.checksum else stored

    def payload(self, index: int, fetched: Fetched | None = None) -> bytes | memoryview:
        """The encoded bytes of chunk ``index``, checksum checked and removed; raises
        :class:`~gpuds.errors.CorruptChunkError` when the chunk is missing or damaged.

        The stored bytes come from the local cache when it holds them, else from ``fetched``
        (read ahead by :meth:`fetch`) or a read now. A cached copy that fails its checks is
        dropped and read again from the store, the source of truth; the store's bytes go to the
        cache only once they pass.
        """
        self._check(index)
        cache = self._cache
        if cache is not None:
            key = f"{self._scope}/{index}"
            cached = cache.get(key)
            if cached is not None:
                try:
                    return self._checked(index, cached)
                except CorruptChunkError:
                    cache.discard(key)
        stored = fetched.take(index) if fetched is not None else None
        if stored is None:
            stored = self._stored(index)
        body = self._checked(index, stored)
        if cache is not None:
            cache.put(key, stored)
        return body

    def fetch(self, indices: Iterable[int]) -> Fetched:
        """Start reading chunks ``indices`` ahead of their decoding: from an object store, the
        chunks of each shard not in the cache are coalesced into ranged GETs of whole runs, all
        sent at once (the fetcher bounds the requests in flight) after one GET of the shard's
        index (read once, then kept). Returns at once; :meth:`payload` takes each chunk's bytes.
        Local files need nothing ahead: the result is empty."""
        fetched = Fetched()
        if not isinstance(self._bytes, _Remote) or self.config is None:
            return fetched
        by_object: dict[int, dict[int, Future[Any]]] = {}
        cache = self._cache
        for index in indices:
            self._check(index)
            if index in fetched or (cache is not None and f"{self._scope}/{index}" in cache):
                continue
            future: Future[Any] = Future()
            fetched._futures[index] = future
            by_object.setdefault(index // self.per_shard, {})[index] = future
        fetcher = self._bytes.fetcher
        for obj, futures in by_object.items():
            fetched._tasks.append(fetcher.submit(self._fetch_object(obj, futures)))
        return fetched

    async def _fetch_object(self, obj: int, futures: dict[int, Future[Any]]) -> None:
        """Read the chunks ``futures`` of stored object ``obj`` and resolve each one's future."""
        assert isinstance(self._bytes, _Remote)
        fetcher, key = self._bytes.fetcher, self._bytes.prefix + self.object_key(obj)
        try:
            if not self.sharded:
                ((index, future),) = futures.items()
                data = await fetcher.get_async(key, 0, self.max_payload + 1)
                _resolve(future, self._missing(index) if data is None else data)
                return
            shard_index = await self._shard_index_async(obj)
            spans: list[tuple[int, int, int]] = []
            for index, future in futures.items():
                try:
                    offset, nbytes = self._locate(index, shard_index)
                except CorruptChunkError as e:
                    _resolve(future, e)
                    continue
                spans.append((index, offset, offset + nbytes))

            async def run(start: int, stop: int, members: list[int]) -> None:
                try:
                    data: Any = await fetcher.get_async(key, start, stop)
                except Exception as e:
                    data = e
                for m in members:
                    index, a, b = spans[m]
                    if isinstance(data, Exception):
                        _resolve(futures[index], data)
                    elif data is None:
                        _resolve(futures[index], self._missing(index))
                    elif len(data) < b - start:
                        _resolve(
                            futures[index], self._truncated(index, len(data) - a + start, b - a)
                        )
                    else:
                        _resolve(futures[index], data[a - start : b - start])

            runs = coalesce([(a, b) for _, a, b in spans])
            await asyncio.gather(*(run(*r) for r in runs))
        except BaseException as e:  # the index failed, or the loader cancelled the reads
            error = e if isinstance(e, Exception) else CancelledError()
            for future in futures.values():
                _resolve(future, error)
            raise

    def _require_present(self, index: int) -> None:
        """For chains zarr-python decodes: the chunk must be stored (dense store)."""
        if self.sharded and self._own_index:
            shard, inner = divmod(index, self.per_shard)
            if int(self._shard_index(shard)[inner][0]) == EMPTY:
                raise CorruptChunkError(
                    f"missing chunk {self.where(index)}: absent from its shard's index"
                )
            return
        obj = index // self.per_shard
        if self._bytes.size(self.object_key(obj)) is None:
            kind = "shard" if self.sharded else "chunk"
            raise CorruptChunkError(
                f"missing {kind} {self.where(index)}: a gpuds store is dense, so a missing "
                f"{kind} is damage"
            )

    # -- values -----------------------------------------------------------------------------
    @cached_property
    def gpu_codec(self) -> NvcompChunkCodec:
        """The nvCOMP implementation of the field's chain (built on first use; CuPy and nvCOMP are
        imported when it first decodes)."""
        if self.config is None:
            raise StoreError(f"{self.label}: its codec chain has no gpuds GPU implementation")
        from gpuds.codecs.nvcomp import NvcompChunkCodec

        return NvcompChunkCodec(self.config, self.dtype.itemsize, self.dtype)

    def read_device(self, indices: Sequence[int], fetched: Fetched | None = None) -> Any:
        """Chunks ``indices`` decoded on the GPU by one batched nvCOMP call: their payloads are
        read (or taken from ``fetched``) and checked here (presence, checksum, size), go to the
        device in one copy, and come back as one CuPy array ``(len(indices) * chunk,
        *sample_shape)`` (padding rows included). Call it with a usable GPU (the loader resolves
        its device first)."""
        if self.config is None:
            raise StoreError(f"{self.label}: its codec chain has no gpuds GPU implementation")
        for index in indices:
            self._check(index)
        payloads = [self.payload(i, fetched) for i in indices]
        keys = [self.where(i) for i in indices]
        raw = self.gpu_codec.decode_to_device(payloads, [self.chunk_nbytes] * len(keys), keys)
        return raw.view(self.dtype).reshape((len(keys) * self.chunk, *self.sample_shape))

    def _read_on_gpu(
        self, indices: Sequence[int], fetched: Fetched | None = None
    ) -> list[np.ndarray]:
        """Chunks ``indices`` of a GPU-only chain decoded by one nvCOMP call, back on the host."""
        if not self._gpu_checked:
            cp, reason, _ = backend.probe_cuda()
            if cp is None:
                assert self.config is not None
                raise DeviceError(
                    f"{self.label} is stored with the GPU-only codec {self.config.name} "
                    f"(gpuds.nvcomp) and {reason}; read it on a machine with a GPU, or "
                    "re-compress it there portably: gpuds compress IN.zarr -o OUT.zarr "
                    "--codec zstd"
                )
            self._gpu_checked = True
        payloads = [self.payload(i, fetched) for i in indices]
        keys = [self.where(i) for i in indices]
        return self.gpu_codec.decode(payloads, [self.chunk_nbytes] * len(keys), keys)

    def read_into(self, index: int, out: np.ndarray, fetched: Fetched | None = None) -> None:
        """Decode chunk ``index`` into ``out`` (C-contiguous, ``(chunk, *sample_shape)``; rows
        past the end of the field are padding); its bytes from ``fetched`` when read ahead."""
        if self.config is None:
            self._check(index)
            self._require_present(index)
            start = index * self.chunk
            stop = min(start + self.chunk, self.length)
            try:
                values = np.asarray(self.array[start:stop])
            except Exception as e:  # zarr-python and its codecs raise many types
                raise CorruptChunkError(
                    f"corrupt chunk {self.where(index)}: {type(e).__name__}: {e}"
                ) from e
            out[: stop - start] = values
            out[stop - start :] = 0
            return
        if self.codec is None:  # GPU only
            self._check(index)
            (raw,) = self._read_on_gpu([index], fetched)
            out.reshape(-1).view(np.uint8)[...] = raw
            return
        payload = self.payload(index, fetched)
        self.codec.decode_into(payload, out.reshape(-1).view(np.uint8), self.where(index))

    def read(self, index: int, fetched: Fetched | None = None) -> np.ndarray:
        """Chunk ``index`` decoded, shaped ``(chunk, *sample_shape)`` (padding included)."""
        out = np.empty((self.chunk, *self.sample_shape), dtype=self.dtype)
        self.read_into(index, out, fetched)
        return out

    def read_range(self, start: int, stop: int, fetched: Fetched | None = None) -> np.ndarray:
        """Samples ``[start, stop)``, decoded chunk by chunk (a GPU-only chain: a shard's chunks
        per nvCOMP call). From an object store, the chunks not in ``fetched`` are all requested
        at once first (:meth:`fetch`)."""
        if not 0 <= start <= stop <= self.length:
            raise IndexError(f"{self.label}: samples {start}..{stop} outside 0..{self.length}")
        out = np.empty((stop - start, *self.sample_shape), dtype=self.dtype)
        if start == stop:
            return out
        first, last = start // self.chunk, (stop - 1) // self.chunk
        if fetched is None and last > first and isinstance(self._bytes, _Remote):
            fetched = self.fetch(range(first, last + 1))
        if self.gpu_only:
            for batch_start in range(first, last + 1, self.per_shard):
                batch = list(range(batch_start, min(batch_start + self.per_shard, last + 1)))
                for index, raw in zip(batch, self._read_on_gpu(batch, fetched), strict=True):
                    chunk = raw.view(self.dtype).reshape((self.chunk, *self.sample_shape))
                    self._place(out, start, stop, index, chunk)
            return out
        for index in range(first, last + 1):
            lo = index * self.chunk
            a, b = max(start, lo), min(stop, lo + self.chunk)
            if a == lo and b - a == self.chunk:
                self.read_into(index, out[a - start : b - start], fetched)
            else:
                out[a - start : b - start] = self.read(index, fetched)[a - lo : b - lo]
        return out

    def _place(self, out: np.ndarray, start: int, stop: int, index: int, chunk: np.ndarray) -> None:
        """Copy the samples of decoded chunk ``index`` that lie in ``[start, stop)`` to ``out``."""
        lo = index * self.chunk
        a, b = max(start, lo), min(stop, lo + self.chunk)
        out[a - start : b - start] = chunk[a - lo : b - lo]
