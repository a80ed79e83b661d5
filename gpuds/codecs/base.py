"""The codec contract of ``gpuds compress`` and the readers.

A *chunk* here is what Zarr's ``bytes`` codec produces for one chunk: the chunk's values in C
order, little-endian, as ``uint8``. A :class:`ChunkCodec` turns a batch of such chunks into the
exact bytes the Zarr v3 codec chain after ``bytes`` would store (e.g. ``numcodecs.shuffle`` then
``zstd``), and back. Batches, not single chunks, because both implementations want many chunks
per call: the CPU one spreads them over a thread pool (the compressors release the GIL), the GPU
one hands them to nvCOMP in one batched call.

Decoding is defensive: every payload must decode to exactly its expected size, and the claimed
size is checked before anything is allocated; otherwise :class:`~gpuds.errors.CorruptChunkError`
names the chunk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuds.errors import ConfigError

__all__ = [
    "CODEC_NAMES",
    "LEVELS",
    "ChunkCodec",
    "CodecConfig",
    "shuffle_bytes",
    "unshuffle_bytes",
]

CODEC_NAMES = ("zstd", "lz4", "gzip", "gdeflate", "bitcomp", "ans", "cascaded", "none", "auto")
"""``auto`` is resolved per field by :mod:`gpuds.codecs.auto` before anything is written."""

LEVELS = {"zstd": (-131072, 22), "gzip": (0, 9), "lz4": (1, 65537)}
"""Valid ``level`` per codec: zstd's own range (negative levels are its fast modes), zlib's, and
LZ4's acceleration (higher is faster with a lower ratio)."""


@dataclass(frozen=True)
class CodecConfig:
    """What the user chose for one field: codec name, level, byte shuffle (None: decided per
    field by ``gpuds compress`` from a trial on a sample, :func:`gpuds.codecs.auto.choose_shuffle`).

    Examples
    --------
    >>> CodecConfig.from_dict(CodecConfig("zstd", 3, True).to_dict())
    CodecConfig(name='zstd', level=3, shuffle=True)
    >>> CodecConfig("gzip", 12)
    Traceback (most recent call last):
    ...
    gpuds.errors.ConfigError: gzip levels are 0 to 9, got 12
    """

    name: str = "zstd"
    level: int | None = None
    shuffle: bool | None = True

    def __post_init__(self) -> None:
        if self.name not in CODEC_NAMES:
            raise ConfigError(f"Expected a codec in {', '.join(CODEC_NAMES)}, got {self.name!r}")
        if self.level is not None and (
            isinstance(self.level, bool) or not isinstance(self.level, int)
        ):
            raise ConfigError(f"Expected an integer level, got {self.level!r}")
        if self.shuffle is not None and not isinstance(self.shuffle, bool):
            raise ConfigError(f"Expected shuffle to be true, false or unset, got {self.shuffle!r}")
        if self.level is None:
            return
        if self.name in ("none", "auto"):
            raise ConfigError(
                f"codec {self.name} takes no level (auto tries zstd 3, lz4 1 and gzip 5), "
                f"got {self.level}"
            )
        valid = LEVELS.get(self.name)
        if valid is not None and not valid[0] <= self.level <= valid[1]:
            what = "accelerations" if self.name == "lz4" else "levels"
            raise ConfigError(f"{self.name} {what} are {valid[0]} to {valid[1]}, got {self.level}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "shuffle": self.shuffle}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        unknown = sorted(set(data) - {"name", "level", "shuffle"})
        if unknown:
            raise ConfigError(
                f"codec: unknown key(s) {', '.join(unknown)}; valid: name, level, shuffle"
            )
        shuffle = data.get("shuffle", True)
        return cls(str(data.get("name", "zstd")), data.get("level"), shuffle)


class ChunkCodec(ABC):
    """One implementation (CPU or GPU) of one codec chain for one element size."""

    @abstractmethod
    def encode(self, chunks: Sequence[np.ndarray]) -> list[bytes]:
        """Encode raw chunks (``uint8`` arrays) into the stored payloads, in order."""

    @abstractmethod
    def decode(
        self, payloads: Sequence[bytes | memoryview], sizes: Sequence[int], keys: Sequence[str]
    ) -> list[np.ndarray]:
        """Decode payloads to raw chunks of exactly ``sizes`` bytes (``keys`` name them)."""


def shuffle_bytes(raw: Any, itemsize: int) -> Any:
    """``numcodecs.shuffle``'s transform: byte ``j`` of element ``i`` goes to ``j * n + i``.

    Works on NumPy and CuPy ``uint8`` arrays alike (a reshape and a transpose). Like numcodecs, it
    needs a whole number of elements, which whole chunks always are.

    Examples
    --------
    >>> shuffle_bytes(np.array([1, 2, 3, 4], dtype=np.uint8), 2).tolist()
    [1, 3, 2, 4]
    """
    if itemsize <= 1:
        return raw
    n = _elements(raw, itemsize)
    return raw.reshape(n, itemsize).T.reshape(-1).copy()


def unshuffle_bytes(raw: Any, itemsize: int) -> Any:
    """Inverse of :func:`shuffle_bytes`."""
    if itemsize <= 1:
        return raw
    n = _elements(raw, itemsize)
    return raw.reshape(itemsize, n).T.reshape(-1).copy()


def _elements(raw: Any, itemsize: int) -> int:
    n, rest = divmod(int(raw.shape[0]), itemsize)
    if rest:
        raise ValueError(
            f"Expected a whole number of {itemsize}-byte elements, got {raw.shape[0]} bytes"
        )
    return n
