"""``gpuds.nvcomp``: the Zarr v3 codec that names nvCOMP-only bitstreams in a store's metadata.

Registered with zarr-python through the ``zarr.codecs`` entry point, so zarr-python with gpuds
installed opens the metadata of a store compressed with ``gdeflate``, ``bitcomp``, ``ans`` or
``cascaded`` (:mod:`gpuds.codecs.nvcomp_only`), and reads its chunks on a GPU, one chunk per call
as zarr-python asks (gpuds's own reads batch them: :class:`gpuds.chunks.FieldChunks`). Without a
GPU the error names the codec and how to re-compress the store portably. The configuration holds
everything decoding needs::

    {"name": "gpuds.nvcomp",
     "configuration": {"algorithm": "bitcomp", "level": null, "data_type": "<f4"}}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import BytesBytesCodec
from zarr.core.common import parse_named_configuration

from gpuds.codecs import registry
from gpuds.codecs.base import CodecConfig
from gpuds.codecs.nvcomp_only import ZARR_NAME
from gpuds.errors import ConfigError, DeviceError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer

__all__ = ["ALGORITHMS", "NvcompCodec"]

ALGORITHMS = tuple(n for n in registry.gpu_only() if registry.get(n).zarr_name == ZARR_NAME)
NAME = ZARR_NAME

_IMPLS: dict[tuple[str, int | None, str | None, int], Any] = {}
_IMPLS_LOCK = threading.Lock()


@dataclass(frozen=True)
class NvcompCodec(BytesBytesCodec):
    """A chunk compressed by an nvCOMP-only algorithm (decoded on the GPU only)."""

    is_fixed_size = False

    algorithm: str
    level: int | None
    data_type: str | None

    def __init__(
        self, *, algorithm: str, level: int | None = None, data_type: str | None = None
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(
                f"Expected a gpuds.nvcomp algorithm in {', '.join(ALGORITHMS)}, got {algorithm!r}"
            )
        recognised = registry.get(algorithm).recognize(
            [{"name": NAME, "configuration": {"algorithm": algorithm, "level": level,
                                              "data_type": data_type}}]
        )  # fmt: skip
        if recognised is None:
            raise ConfigError(
                f"gpuds.nvcomp: invalid level {level!r} or data_type {data_type!r} for {algorithm}"
            )
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "data_type", recognised["data_type"])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NvcompCodec:
        _, configuration = parse_named_configuration(data, NAME)
        config: dict[str, Any] = dict(configuration or {})
        return cls(
            algorithm=str(config.get("algorithm")),
            level=config.get("level"),
            data_type=config.get("data_type"),
        )

    def to_dict(self) -> dict[str, Any]:
        configuration: dict[str, Any] = {"algorithm": self.algorithm, "level": self.level}
        if self.data_type is not None:
            configuration["data_type"] = self.data_type
        return {"name": NAME, "configuration": configuration}

    def _impl(self, itemsize: int) -> Any:
        """The GPU implementation for this configuration, made once per process (and probe)."""
        key = (self.algorithm, self.level, self.data_type, itemsize)
        with _IMPLS_LOCK:
            impl = _IMPLS.get(key)
        if impl is not None:
            return impl
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
        config = CodecConfig(self.algorithm, self.level, False, self.data_type)
        impl = NvcompChunkCodec(config, itemsize)
        with _IMPLS_LOCK:
            return _IMPLS.setdefault(key, impl)

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
