"""What one field needs from its codec: the chain written to its metadata and the implementation
that encodes and decodes its chunks, for the field's dtype and the device."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from gpuds.codecs import registry
from gpuds.codecs.base import ChunkCodec, CodecConfig
from gpuds.errors import ConfigError

__all__ = ["chunk_codec", "resolve_data_type", "zarr_compressors"]


def resolve_data_type(config: CodecConfig, dtype: Any) -> CodecConfig:
    """``config`` with nvCOMP's ``data_type`` decided for a field of ``dtype`` (unchanged for
    codecs that take none, or when it is already set): the one value both the chain written to
    the store and the encoder use.

    Examples
    --------
    >>> resolve_data_type(CodecConfig("cascaded", None, False), np.dtype(">i4")).data_type
    '<i4'
    >>> resolve_data_type(CodecConfig("cascaded", None, True), np.dtype("i4")).data_type
    '|u1'
    """
    spec = registry.get(config.name)
    if config.data_type is not None or spec.gpu is None or not spec.gpu.data_types:
        return config
    dtype = np.dtype(dtype) if dtype is not None else None
    shuffled = bool(config.shuffle) and dtype is not None and dtype.itemsize > 1
    return replace(config, data_type=spec.gpu.data_type(dtype, shuffled))


def zarr_compressors(config: CodecConfig, itemsize: int, dtype: Any = None) -> list[Any]:
    """The zarr-python codec objects to put after ``bytes`` for ``config``, ``crc32c`` last.

    ``dtype`` (the field's) decides nvCOMP's ``data_type`` for the codecs that record one
    (:func:`resolve_data_type`); pass the same to :func:`chunk_codec`.
    """
    from zarr.codecs import Crc32cCodec

    spec = registry.get(config.name)
    config = resolve_data_type(config, dtype)
    chain: list[Any] = []
    with warnings.catch_warnings():
        # zarr warns that numcodecs.* codecs are not in the Zarr v3 spec: that is the
        # "zarr-python" portability level, reported by `gpuds inspect`.
        warnings.simplefilter("ignore")
        from zarr.codecs import numcodecs as zn

        if not spec.stores_raw and config.shuffle and itemsize > 1:
            chain.append(zn.Shuffle(elementsize=itemsize))
        codec = spec.zarr_codec(spec.level(config.level), config.data_type)
        if codec is not None:
            chain.append(codec)
    chain.append(Crc32cCodec())  # last: every stored chunk carries its checksum
    return chain


def chunk_codec(
    config: CodecConfig, itemsize: int, device: str = "cpu", dtype: Any = None
) -> ChunkCodec:
    """The implementation of ``config`` on ``device`` (``cpu`` or ``cuda``) for a field of
    ``dtype`` (``itemsize`` bytes an element)."""
    if device == "cuda":
        from gpuds.codecs.nvcomp import NvcompChunkCodec

        return NvcompChunkCodec(resolve_data_type(config, dtype), itemsize, dtype)
    if registry.get(config.name).cpu is None:
        names = [n for n in registry.portable() if not registry.get(n).stores_raw]
        raise ConfigError(
            f"codec {config.name!r} needs a GPU (nvCOMP) to encode and decode; use --codec "
            f"{', '.join(names[:-1])} or {names[-1]} for a store any machine can read"
        )
    from gpuds.codecs.cpu import CpuChunkCodec

    return CpuChunkCodec(config, itemsize)
