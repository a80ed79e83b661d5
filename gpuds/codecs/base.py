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

from gpuds.codecs import registry
from gpuds.errors import ConfigError

__all__ = [
    "CODEC_NAMES",
    "LEVELS",
    "ChunkCodec",
    "CodecConfig",
    "shuffle_bytes",
    "unshuffle_bytes",
]

CODEC_NAMES = registry.choices()
"""Every ``--codec`` name (:func:`gpuds.codecs.registry.choices`); ``auto`` is resolved per
field by :mod:`gpuds.codecs.auto` before anything is written."""

LEVELS = {
    s.name: (s.levels[0], s.levels[1])
    for s in registry.specs()
    if s.cpu is not None and s.levels is not None and s.levels[1] is not None
}
"""Valid ``level`` per codec a CPU compresses, from the registry: zstd's own range (negative
levels are its fast modes), zlib's, and LZ4's acceleration (higher is faster, lower ratio)."""


@dataclass(frozen=True)
class CodecConfig:
    """One field's codec: name, level, byte shuffle (None: decided per field by ``gpuds
    compress`` from a trial on a sample, :func:`gpuds.codecs.auto.choose_shuffle`) and, for the
    nvCOMP-only codecs that take one, nvCOMP's ``data_type`` (None: derived from the field's dtype
    when it is written; a stored chain records it, :mod:`gpuds.codecs.nvcomp_only`).

    Examples
    --------
    >>> CodecConfig.from_dict(CodecConfig("zstd", 3, True).to_dict())
    CodecConfig(name='zstd', level=3, shuffle=True)
    >>> CodecConfig("cascaded", 2, False, "<i4").to_dict()
    {'name': 'cascaded', 'level': 2, 'shuffle': False, 'data_type': '<i4'}
    >>> CodecConfig("gzip", 12)
    Traceback (most recent call last):
    ...
    gpuds.errors.ConfigError: gzip levels are 0 to 9, got 12
    """

    name: str = "zstd"
    level: int | None = None
    shuffle: bool | None = True
    data_type: str | None = None

    def __post_init__(self) -> None:
        if self.name not in registry.choices():
            names = ", ".join(registry.choices())
            raise ConfigError(f"Expected a codec in {names}, got {self.name!r}")
        if self.level is not None and (
            isinstance(self.level, bool) or not isinstance(self.level, int)
        ):
            raise ConfigError(f"Expected an integer level, got {self.level!r}")
        if self.shuffle is not None and not isinstance(self.shuffle, bool):
            raise ConfigError(f"Expected shuffle to be true, false or unset, got {self.shuffle!r}")
        if self.data_type is not None:
            gpu = registry.get(self.name).gpu if self.name != registry.AUTO else None
            valid = sorted(gpu.data_types) if gpu is not None else []
            if self.data_type not in valid:
                raise ConfigError(
                    f"codec {self.name} takes "
                    + (f"a data_type in {', '.join(valid)}" if valid else "no data_type")
                    + f", got {self.data_type!r}"
                )
        if self.level is None:
            return
        if self.name == registry.AUTO:
            tried = ", ".join(f"{s.name} {s.default_level}" for s in registry.auto_candidates())
            raise ConfigError(f"codec auto takes no level (it tries {tried}), got {self.level}")
        error = registry.get(self.name).level_error(self.level)
        if error is not None:
            raise ConfigError(error)

    def __repr__(self) -> str:
        data_type = f", data_type={self.data_type!r}" if self.data_type is not None else ""
        return (
            f"CodecConfig(name={self.name!r}, level={self.level!r}, shuffle={self.shuffle!r}"
            f"{data_type})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "level": self.level, "shuffle": self.shuffle}
        return data if self.data_type is None else {**data, "data_type": self.data_type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        keys = ("name", "level", "shuffle", "data_type")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ConfigError(
                f"codec: unknown key(s) {', '.join(unknown)}; valid: {', '.join(keys)}"
            )
        shuffle = data.get("shuffle", True)
        return cls(str(data.get("name", "zstd")), data.get("level"), shuffle, data.get("data_type"))


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
