"""``gpuds.nvcomp``: the Zarr v3 codec that names nvCOMP-only bitstreams in a store's metadata.

Registered with zarr-python through the ``zarr.codecs`` entry point, so zarr-python with gpuds
installed can open the metadata of a store compressed with ``gdeflate``, ``bitcomp``, ``ans`` or
``cascaded``. Reading a chunk needs a GPU with nvCOMP; without one the error names the codec and
how to re-compress the store portably. The metadata looks like::

    {"name": "gpuds.nvcomp", "configuration": {"algorithm": "bitcomp", "level": null}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import BytesBytesCodec
from zarr.core.common import parse_named_configuration

from gpuds.codecs.base import CodecConfig
from gpuds.errors import ConfigError, DeviceError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer

__all__ = ["ALGORITHMS", "NvcompCodec"]

ALGORITHMS = ("gdeflate", "bitcomp", "ans", "cascaded")
NAME = "gpuds.nvcomp"


@dataclass(frozen=True)
class NvcompCodec(BytesBytesCodec):
    """A chunk compressed by an nvCOMP-only algorithm (decoded on the GPU only)."""

    is_fixed_size = False

    algorithm: str
    level: int | None

    def __init__(self, *, algorithm: str, level: int | None = None) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(
                f"Expected a gpuds.nvcomp algorithm in {', '.join(ALGORITHMS)}, got {algorithm!r}"
            )
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "level", level)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NvcompCodec:
        _, configuration = parse_named_configuration(data, NAME)
        config: dict[str, Any] = dict(configuration or {})
        return cls(algorithm=str(config.get("algorithm")), level=config.get("level"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": NAME, "configuration": {"algorithm": self.algorithm, "level": self.level}}

    def _impl(self, itemsize: int) -> Any:
        from gpuds.backend import probe_cuda

        cp, reason, _ = probe_cuda()
        if cp is None:
            raise DeviceError(
                f"this store uses the GPU-only codec gpuds.nvcomp ({self.algorithm}) and {reason}; "
                "decode it on a GPU machine, or re-compress it there portably: "
                "gpuds compress IN.zarr -o OUT.zarr --codec zstd"
            )
        from gpuds.codecs.nvcomp import NvcompChunkCodec

        # The byte shuffle, when used, is its own codec before this one: never shuffle here.
        return NvcompChunkCodec(CodecConfig(self.algorithm, self.level, False), itemsize)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        itemsize = chunk_spec.dtype.to_native_dtype().itemsize
        size = int(np.prod(chunk_spec.shape, dtype=np.int64)) * itemsize
        (raw,) = self._impl(itemsize).decode([chunk_bytes.to_bytes()], [size], ["chunk"])
        return chunk_spec.prototype.buffer.from_bytes(raw.tobytes())

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        itemsize = chunk_spec.dtype.to_native_dtype().itemsize
        raw = np.frombuffer(chunk_bytes.to_bytes(), dtype=np.uint8)
        (payload,) = self._impl(itemsize).encode([raw])
        return chunk_spec.prototype.buffer.from_bytes(payload)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not knowable in advance for a compressor: zarr's contract for variable-size codecs
        (``is_fixed_size = False``, as its own zstd and gzip codecs) is to raise, and zarr never
        asks a variable-size codec for it."""
        raise NotImplementedError("gpuds.nvcomp is a compressor: its output size varies")
