"""The codecs of ``gpuds compress`` and the readers: one module per ``--codec`` name.

:mod:`gpuds.codecs.registry` lists them (``names()``, ``get(name)``, ``portable()``,
``gpu_only()``, ``auto_candidates()``); each codec module (``zstd``, ``lz4``, ``gzip``, ``none``,
``nvcomp_only``) declares a :class:`~gpuds.codecs.spec.CodecSpec`: its Zarr v3 chain, levels,
CPU and GPU implementation, header size check and decode speed class. docs/compress.md has the
table (:func:`gpuds.codecs.registry.markdown_table`). Every chain gpuds writes is ``bytes
[numcodecs.shuffle] <codec> crc32c``; the byte shuffle is decided per field (``--no-shuffle``
keeps a store readable by *any* Zarr v3 reader, since ``numcodecs.shuffle`` is not a spec codec).

Importing this package or the registry imports neither NumPy nor zarr (``gpuds --help`` lists
the codecs at once); the names below that need them are imported on first use:
:class:`~gpuds.codecs.base.CodecConfig`, and :func:`~gpuds.codecs.field.zarr_compressors` /
:func:`~gpuds.codecs.field.chunk_codec`, what a field needs (its chain's codecs for the array's
metadata, and the implementation that encodes and decodes its chunks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gpuds.codecs import registry

if TYPE_CHECKING:
    from gpuds.codecs.base import ChunkCodec, CodecConfig
    from gpuds.codecs.field import chunk_codec, resolve_data_type, zarr_compressors

__all__ = [
    "CODEC_NAMES",
    "GPU_ONLY",
    "PORTABLE",
    "ChunkCodec",
    "CodecConfig",
    "chunk_codec",
    "registry",
    "resolve_data_type",
    "zarr_compressors",
]

CODEC_NAMES = registry.choices()
"""What ``--codec`` accepts: every registered codec and ``auto``."""
PORTABLE = registry.portable()
"""Codecs a CPU decodes."""
GPU_ONLY = registry.gpu_only()
"""Codecs only nvCOMP encodes and decodes."""

_LAZY = {
    "ChunkCodec": "gpuds.codecs.base",
    "CodecConfig": "gpuds.codecs.base",
    "chunk_codec": "gpuds.codecs.field",
    "resolve_data_type": "gpuds.codecs.field",
    "zarr_compressors": "gpuds.codecs.field",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gpuds.codecs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
