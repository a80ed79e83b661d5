"""The codec registry: one entry per ``--codec`` name, with its Zarr v3 chain, CPU and GPU code.

======== =============================================== ============== ========= ========
name     Zarr v3 chain written (after ``bytes``)          GPU (nvCOMP)   CPU       portable
======== =============================================== ============== ========= ========
zstd     [numcodecs.shuffle] zstd                        Zstd, RAW      numcodecs yes
gzip     [numcodecs.shuffle] gzip                        Gzip, RAW      numcodecs yes
lz4      [numcodecs.shuffle] numcodecs.lz4               LZ4, RAW + the yes       yes
                                                         4-byte prefix
none     (nothing)                                       -              -         yes
gdeflate [numcodecs.shuffle] gpuds.nvcomp                GDeflate       none      no
bitcomp  [numcodecs.shuffle] gpuds.nvcomp                Bitcomp        none      no
ans      [numcodecs.shuffle] gpuds.nvcomp                ANS            none      no
cascaded [numcodecs.shuffle] gpuds.nvcomp                Cascaded       none      no
======== =============================================== ============== ========= ========

The byte shuffle is on by default for multi-byte dtypes (``--no-shuffle`` turns it off, which is
what keeps a store readable by *any* Zarr v3 reader, since ``numcodecs.shuffle`` is not a spec
codec).
"""

from __future__ import annotations

import warnings
from typing import Any

from gpuds.codecs.base import CODEC_NAMES, ChunkCodec, CodecConfig
from gpuds.codecs.cpu import DEFAULT_LEVELS, CpuChunkCodec
from gpuds.errors import ConfigError

__all__ = [
    "CODEC_NAMES",
    "GPU_ONLY",
    "PORTABLE",
    "ChunkCodec",
    "CodecConfig",
    "chunk_codec",
    "zarr_compressors",
]

PORTABLE = ("zstd", "gzip", "lz4", "none")
GPU_ONLY = ("gdeflate", "bitcomp", "ans", "cascaded")


def _level(config: CodecConfig) -> int | None:
    return config.level if config.level is not None else DEFAULT_LEVELS.get(config.name)


def zarr_compressors(config: CodecConfig, itemsize: int) -> list[Any]:
    """The zarr-python codec objects to put after ``bytes`` for ``config``, ``crc32c`` last."""
    from zarr.codecs import Crc32cCodec, GzipCodec, ZstdCodec

    chain: list[Any] = []
    with warnings.catch_warnings():
        # zarr warns that numcodecs.* codecs are not in the Zarr v3 spec: that is the
        # "zarr-python" portability level, reported by `gpuds inspect`.
        warnings.simplefilter("ignore")
        from zarr.codecs import numcodecs as zn

        if config.name != "none" and config.shuffle and itemsize > 1:
            chain.append(zn.Shuffle(elementsize=itemsize))
        level = _level(config)
        if config.name == "zstd":
            chain.append(ZstdCodec(level=level or 0, checksum=False))
        elif config.name == "gzip":
            chain.append(GzipCodec(level=level if level is not None else 5))
        elif config.name == "lz4":
            chain.append(zn.LZ4(acceleration=level or 1))
        elif config.name in GPU_ONLY:
            from gpuds.codecs.zarr_nvcomp import NvcompCodec

            chain.append(NvcompCodec(algorithm=config.name, level=config.level))
    chain.append(Crc32cCodec())  # last: every stored chunk carries its checksum
    return chain


def chunk_codec(config: CodecConfig, itemsize: int, device: str = "cpu") -> ChunkCodec:
    """The implementation of ``config`` on ``device`` (``cpu`` or ``cuda``)."""
    if device == "cuda":
        from gpuds.codecs.nvcomp import NvcompChunkCodec

        return NvcompChunkCodec(config, itemsize)
    if config.name in GPU_ONLY:
        raise ConfigError(
            f"codec {config.name!r} needs a GPU (nvCOMP) to encode and decode; "
            "use --codec zstd, lz4 or gzip for a store any machine can read"
        )
    return CpuChunkCodec(config, itemsize)
