"""Fast reads of whole chunks from local gpuds stores, for the loader and verification.

zarr-python reads any store, but each call goes through its async pipeline and, for a sharded
array, re-reads the shard index; for a training loader reading thousands of chunks per second that
overhead dominates. :class:`ChunkReader` reads the same bytes directly: the shard index once per
shard (checked: length, CRC-32C, bounds), each chunk's byte range with one ``os.pread``, and the
decode through :class:`~gpuds.codecs.cpu.CpuChunkCodec` (size-checked before allocation). It
handles the chains gpuds writes on local disk: ``bytes`` then optionally ``numcodecs.shuffle``
then ``zstd``, ``gzip``, ``numcodecs.lz4`` or nothing, sharded or not.
:func:`chunk_reader` returns None for anything else and callers fall back to zarr-python.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.codecs.base import CodecConfig
from gpuds.codecs.cpu import CpuChunkCodec
from gpuds.codecs.shard import EMPTY, index_nbytes, parse_index
from gpuds.errors import CorruptChunkError

__all__ = ["ChunkReader", "chunk_reader", "parse_chain"]

_COMPRESSORS = {"zstd": "zstd", "gzip": "gzip", "numcodecs.lz4": "lz4"}
_OPEN_FILES = 32


def parse_chain(codecs: list[dict[str, Any]], itemsize: int) -> CodecConfig | None:
    """The :class:`CodecConfig` of a ``bytes [shuffle] [compressor]`` chain, else None."""
    names = [c["name"] for c in codecs]
    if not names or names[0] != "bytes":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if itemsize > 1 and endian != "little":
        return None
    rest = codecs[1:]
    shuffle = False
    if rest and rest[0]["name"] == "numcodecs.shuffle":
        if (rest[0].get("configuration") or {}).get("elementsize") != itemsize:
            return None
        shuffle, rest = True, rest[1:]
    if not rest:
        return CodecConfig("none", None, False) if not shuffle else None
    if len(rest) != 1 or rest[0]["name"] not in _COMPRESSORS:
        return None
    return CodecConfig(_COMPRESSORS[rest[0]["name"]], None, shuffle)


class ChunkReader:
    """Decoded chunks of one array, by chunk index along axis 0 (chunked along axis 0 only)."""

    def __init__(
        self, array: zarr.Array, root: Path, config: CodecConfig, sharded: bool, label: str
    ) -> None:
        self.array = array
        self.root = root
        self.label = label
        self.chunk = int(array.chunks[0])
        self.sample_shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self.chunk_nbytes = (
            self.chunk * int(np.prod(self.sample_shape, dtype=np.int64)) * (self.dtype.itemsize)
        )
        self.codec = CpuChunkCodec(config, self.dtype.itemsize, threads=1)
        self.sharded = sharded
        self.per_shard = int(array.shards[0]) // self.chunk if sharded and array.shards else 1
        self._indexes: dict[int, np.ndarray] = {}
        self._files: dict[int, int] = {}
        self._lock = threading.Lock()

    def _fd(self, shard: int, path: Path) -> int:
        """An open descriptor of the shard file (kept: os.pread on it is thread-safe)."""
        with self._lock:
            fd = self._files.get(shard)
            if fd is None:
                if len(self._files) >= _OPEN_FILES:
                    os.close(self._files.pop(next(iter(self._files))))
                fd = os.open(path, os.O_RDONLY)
                self._files[shard] = fd
            return fd

    def close(self) -> None:
        """Close the shard files kept open."""
        with self._lock:
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()

    def __del__(self) -> None:
        self.close()

    def _key(self, outer: int) -> tuple[str, Path]:
        coords = (outer,) + (0,) * (self.array.ndim - 1)
        key = self.array.metadata.encode_chunk_key(coords)
        return key, self.root / key

    def _index(self, shard: int) -> np.ndarray:
        with self._lock:
            cached = self._indexes.get(shard)
        if cached is not None:
            return cached
        key, path = self._key(shard)
        size = index_nbytes(self.per_shard)
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                length = fh.tell()
                fh.seek(max(0, length - size))
                tail = fh.read(size)
        except FileNotFoundError as e:
            raise CorruptChunkError(f"missing shard {self.label} {key}") from e
        index = parse_index(tail, length, self.per_shard, f"{self.label} {key}")
        with self._lock:
            self._indexes[shard] = index
        return index

    def read(self, index: int) -> np.ndarray:
        """Chunk ``index`` decoded, shaped ``(chunk, *sample_shape)`` (padding included)."""
        out = np.empty((self.chunk, *self.sample_shape), dtype=self.dtype)
        self.read_into(index, out)
        return out

    def read_into(self, index: int, out: np.ndarray) -> None:
        """Decode chunk ``index`` into ``out`` (C-contiguous, ``(chunk, *sample_shape)``)."""
        payload, where = self._payload(index)
        if payload is None:
            out[...] = self._fill()
            return
        flat = out.reshape(-1).view(np.uint8)
        self.codec.decode_into(payload, flat, f"{self.label} {where}")

    def _payload(self, index: int) -> tuple[bytes | None, str]:
        if self.sharded:
            shard, inner = divmod(index, self.per_shard)
            offset, nbytes = self._index(shard)[inner].tolist()
            key, path = self._key(shard)
            where = f"{key} (inner chunk {inner})"
            if offset == EMPTY:
                return None, where
            payload = os.pread(self._fd(shard, path), nbytes, offset)
            if len(payload) != nbytes:
                raise CorruptChunkError(f"corrupt chunk {self.label} {where}: truncated shard")
            return payload, where
        key, path = self._key(index)
        try:
            return path.read_bytes(), key
        except FileNotFoundError:
            return None, key

    def _fill(self) -> np.ndarray:
        fill = self.array.fill_value
        return np.full(
            (self.chunk, *self.sample_shape), fill if fill is not None else 0, self.dtype
        )


def chunk_reader(array: zarr.Array, label: str) -> ChunkReader | None:
    """A fast reader for ``array`` when its store is local and its chain is one gpuds writes."""
    store = array.store_path.store
    root = getattr(store, "root", None)
    if root is None or array.metadata.zarr_format != 3:
        return None
    if any(c != s for c, s in zip(array.chunks[1:], array.shape[1:], strict=True)):
        return None
    metadata: dict[str, Any] = dict(array.metadata.to_dict())
    codecs: list[Any] = list(metadata["codecs"])
    sharded = False
    if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
        config_ = codecs[0]["configuration"]
        index_codecs = [c["name"] for c in config_.get("index_codecs", [])]
        if index_codecs != ["bytes", "crc32c"] or config_.get("index_location", "end") != "end":
            return None
        codecs, sharded = list(config_["codecs"]), True
    config = parse_chain([dict(c) for c in codecs], np.dtype(array.dtype).itemsize)
    if config is None:
        return None
    return ChunkReader(array, Path(root) / array.path, config, sharded, label)
