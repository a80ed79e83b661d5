"""CPU implementations of the portable codec chains, byte-compatible with zarr-python's.

One :class:`CpuChunkCodec` runs any registered codec that declares a CPU implementation
(:attr:`~gpuds.codecs.spec.CodecSpec.cpu`): encoding uses the very numcodecs classes
zarr-python's codecs wrap, plus the ``numcodecs.shuffle`` transform, so a chunk gpuds writes is
the chunk zarr-python would write. Decoding checks the size a payload declares (the codec's
header: the zstd frame header, the lz4 size prefix, the gzip trailer) *before* allocating, and
the decoded size after; anything else is a :class:`~gpuds.errors.CorruptChunkError` naming the
chunk. A batch is spread over a thread pool: the compressors release the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import numpy as np

from gpuds.codecs import registry
from gpuds.codecs.base import ChunkCodec, CodecConfig, shuffle_bytes, unshuffle_bytes
from gpuds.codecs.zstd import zstd_content_size
from gpuds.errors import ConfigError, CorruptChunkError
from gpuds.execution import task_threads

__all__ = ["DEFAULT_LEVELS", "CpuChunkCodec", "zstd_content_size"]

DEFAULT_LEVELS = {
    s.name: s.default_level for s in registry.specs() if s.cpu and s.default_level is not None
}
"""Levels used when none is given (lz4: numcodecs' ``acceleration``), from the registry."""


class CpuChunkCodec(ChunkCodec):
    """``[numcodecs.shuffle] -> compressor`` (or the bytes, for ``none``) on the CPU.

    Examples
    --------
    >>> codec = CpuChunkCodec(CodecConfig("zstd", 3, True), itemsize=4)
    >>> raw = np.arange(256, dtype="<u4").view(np.uint8)
    >>> (payload,) = codec.encode([raw])
    >>> bool((codec.decode([payload], [raw.nbytes], ["c/0"])[0] == raw).all())
    True
    """

    def __init__(self, config: CodecConfig, itemsize: int, threads: int | None = None) -> None:
        spec = registry.get(config.name)
        if spec.cpu is None:
            raise ConfigError(
                f"codec {config.name!r} has no CPU implementation: it needs a GPU (nvCOMP)"
            )
        self.spec = spec
        self.config = config
        self.itemsize = itemsize
        self.shuffle = bool(config.shuffle) and itemsize > 1 and not spec.stores_raw
        self.level = spec.level(config.level)
        self.threads = threads or task_threads()

    @cached_property
    def _compressor(self) -> Any:
        return self.spec.cpu_compressor(self.level)

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
        return self.spec.cpu_encode(self._compressor, data)

    def decode(
        self, payloads: Sequence[bytes | memoryview], sizes: Sequence[int], keys: Sequence[str]
    ) -> list[np.ndarray]:
        return self._map(self._decode_one, payloads, sizes, keys)

    def _decode_one(self, payload: bytes | memoryview, size: int, key: str) -> np.ndarray:
        self.spec.check_declared_size(payload, size, key)
        raw = self._checked(
            lambda: self.spec.cpu_decode(self._compressor, payload, size), size, key
        )
        return unshuffle_bytes(raw, self.itemsize) if self.shuffle else raw

    @staticmethod
    def _checked(decode: Callable[[], np.ndarray], size: int, key: str) -> np.ndarray:
        """Run ``decode``; any library error or a size other than ``size`` is a corrupt chunk."""
        try:
            raw = decode()
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
        size), saving the copy of :meth:`decode` where the codec allows; same checks."""
        size = out.nbytes
        self.spec.check_declared_size(payload, size, key)
        if self.spec.decodes_in_place and not self.shuffle:

            def direct() -> np.ndarray:
                self.spec.cpu_decode_into(self._compressor, payload, out)
                return out

            self._checked(direct, size, key)
            return
        raw = self._checked(
            lambda: self.spec.cpu_decode(self._compressor, payload, size), size, key
        )
        out[...] = unshuffle_bytes(raw, self.itemsize) if self.shuffle else raw
