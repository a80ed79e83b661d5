"""CPU implementations of the portable codec chains, byte-compatible with zarr-python's.

Encoding uses the very numcodecs classes zarr-python's codecs wrap (``numcodecs.Zstd``,
``numcodecs.GZip``, ``numcodecs.LZ4``, and the ``numcodecs.shuffle`` transform), so a chunk gpuds
writes is the chunk zarr-python would write. Decoding checks sizes *before* allocating: the zstd
frame header's content size, the ``numcodecs.lz4`` 4-byte size prefix, and a bounded inflate for
gzip; anything but the expected size is a :class:`~gpuds.errors.CorruptChunkError` naming the
chunk. A batch is spread over a thread pool: the compressors release the GIL.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import numpy as np
from numcodecs import LZ4, GZip, Zstd

from gpuds.codecs.base import ChunkCodec, CodecConfig, shuffle_bytes, unshuffle_bytes
from gpuds.errors import CorruptChunkError

__all__ = ["DEFAULT_LEVELS", "CpuChunkCodec", "zstd_content_size"]

DEFAULT_LEVELS = {"zstd": 3, "gzip": 5, "lz4": 1}
"""Levels used when none is given (lz4: numcodecs' ``acceleration``)."""

_ZSTD_MAGIC = 0xFD2FB528


def zstd_content_size(frame: bytes | memoryview) -> int | None:
    """The decompressed size a zstd frame header declares (None when the frame omits it).

    Follows RFC 8878, section 3.1.1.1: magic, Frame_Header_Descriptor, optional Window_Descriptor
    and Dictionary_ID, then Frame_Content_Size of 0/1/2/4/8 bytes (2-byte values are offset by 256).
    """
    view = memoryview(frame)
    if len(view) < 5 or struct.unpack_from("<I", view, 0)[0] != _ZSTD_MAGIC:
        raise ValueError("not a zstd frame (bad magic number)")
    descriptor = view[4]
    fcs_flag, single_segment, did_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[did_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    if len(view) < pos + size:
        raise ValueError("truncated zstd frame header")
    value = int.from_bytes(view[pos : pos + size], "little")
    return value + 256 if size == 2 else value


class CpuChunkCodec(ChunkCodec):
    """``[numcodecs.shuffle] -> zstd | gzip | numcodecs.lz4`` (or nothing for ``none``) on the CPU.

    Examples
    --------
    >>> codec = CpuChunkCodec(CodecConfig("zstd", 3, True), itemsize=4)
    >>> raw = np.arange(256, dtype="<u4").view(np.uint8)
    >>> (payload,) = codec.encode([raw])
    >>> bool((codec.decode([payload], [raw.nbytes], ["c/0"])[0] == raw).all())
    True
    """

    def __init__(self, config: CodecConfig, itemsize: int, threads: int | None = None) -> None:
        if config.name not in ("zstd", "gzip", "lz4", "none"):
            raise ValueError(f"no CPU implementation of {config.name!r}")
        self.config = config
        self.itemsize = itemsize
        self.shuffle = config.shuffle and itemsize > 1 and config.name != "none"
        self.level = config.level if config.level is not None else DEFAULT_LEVELS.get(config.name)
        self.threads = threads or os.cpu_count() or 1

    @cached_property
    def _compressor(self) -> Any:
        if self.config.name == "zstd":
            return Zstd(level=self.level)
        if self.config.name == "gzip":
            return GZip(level=self.level)
        if self.config.name == "lz4":
            return LZ4(acceleration=self.level)
        return None

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="gpuds-codec")

    def _map(self, fn: Any, *items: Sequence[Any]) -> list[Any]:
        if len(items[0]) <= 1 or self.threads == 1:
            return [fn(*args) for args in zip(*items, strict=True)]
        return list(self._pool.map(fn, *items))

    def encode(self, chunks: Sequence[np.ndarray]) -> list[bytes]:
        return self._map(self._encode_one, chunks)

    def _encode_one(self, raw: np.ndarray) -> bytes:
        data = shuffle_bytes(raw, self.itemsize) if self.shuffle else raw
        if self._compressor is None:
            return bytes(data)
        return bytes(self._compressor.encode(data))

    def decode(
        self, payloads: Sequence[bytes | memoryview], sizes: Sequence[int], keys: Sequence[str]
    ) -> list[np.ndarray]:
        return self._map(self._decode_one, payloads, sizes, keys)

    def _decode_one(self, payload: bytes | memoryview, size: int, key: str) -> np.ndarray:
        raw = self._checked(lambda: self._decompress(payload, size), size, key)
        return unshuffle_bytes(raw, self.itemsize) if self.shuffle else raw

    @staticmethod
    def _checked(decode: Any, size: int, key: str) -> np.ndarray:
        """Run ``decode``; any library error or a size other than ``size`` is a corrupt chunk."""
        try:
            raw: np.ndarray = decode()
        except CorruptChunkError:
            raise
        except Exception as e:  # each library raises its own types for damaged input
            raise CorruptChunkError(f"corrupt chunk {key}: {type(e).__name__}: {e}") from e
        if raw.nbytes != size:
            raise CorruptChunkError(
                f"corrupt chunk {key}: decodes to {raw.nbytes} bytes, expected {size}"
            )
        return raw

    def decode_into(self, payload: bytes | memoryview, out: np.ndarray, key: str) -> None:
        """Decode one payload straight into ``out`` (``uint8``, C-contiguous, exactly the chunk's
        size), saving the copy of :meth:`decode`; same checks."""
        size = out.nbytes
        if self.config.name in ("zstd", "lz4") and not self.shuffle:

            def direct() -> np.ndarray:
                self._check_header(payload, size)
                self._compressor.decode(payload, out=out)
                return out

            self._checked(direct, size, key)
            return
        raw = self._checked(lambda: self._decompress(payload, size), size, key)
        out[...] = unshuffle_bytes(raw, self.itemsize) if self.shuffle else raw

    def _check_header(self, payload: bytes | memoryview, size: int) -> None:
        """The size a zstd frame header or an lz4 prefix declares must be ``size``."""
        if self.config.name == "zstd":
            declared = zstd_content_size(payload)
            if declared is not None and declared != size:
                raise ValueError(f"frame declares {declared} bytes, expected {size}")
        elif self.config.name == "lz4":
            if len(payload) < 4:
                raise ValueError("payload shorter than the 4-byte size prefix")
            prefix = struct.unpack_from("<I", memoryview(payload), 0)[0]
            if prefix != size:
                raise ValueError(f"size prefix says {prefix} bytes, expected {size}")

    def _decompress(self, payload: bytes | memoryview, size: int) -> np.ndarray:
        name = self.config.name
        if name == "none":
            return np.frombuffer(payload, dtype=np.uint8)
        self._check_header(payload, size)
        if name == "gzip":
            inflater = zlib.decompressobj(wbits=31)
            data = inflater.decompress(payload, size)
            if inflater.unconsumed_tail or not inflater.eof:
                raise ValueError(f"gzip member does not end after the expected {size} bytes")
            return np.frombuffer(data, dtype=np.uint8)
        out = np.empty(size, dtype=np.uint8)
        self._compressor.decode(payload, out=out)
        return out
