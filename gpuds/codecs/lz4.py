"""``--codec lz4``: numcodecs.lz4's framing (a 4-byte little-endian size, then an LZ4 block).

``numcodecs.lz4`` is not a Zarr v3 spec codec: zarr-python reads it, tensorstore does not. The
level is LZ4's acceleration (higher is faster with a lower ratio). CPU: numcodecs.LZ4. GPU:
nvCOMP's LZ4, RAW (a bare block), with the size prefix added and stripped by gpuds. The prefix
is gpuds's and numcodecs' framing, not part of the block, so on the GPU nvCOMP also measures the
block before decoding it (:mod:`gpuds.codecs.nvcomp`).
"""

from __future__ import annotations

import struct
from typing import Any

from gpuds.codecs.spec import CodecSpec, GpuImpl

__all__ = ["CODECS"]

_MIB = 1 << 20


class Lz4(CodecSpec):
    def zarr_codec(self, level: int | None, data_type: str | None) -> Any:
        from zarr.codecs import numcodecs as zn

        return zn.LZ4(acceleration=level or 1)

    def cpu_compressor(self, level: int | None) -> Any:
        from numcodecs import LZ4

        return LZ4(acceleration=level)

    def declared_size(self, head: bytes, tail: bytes, length: int) -> int | None:
        if length < 4:
            raise ValueError(f"{length} bytes, shorter than the 4-byte lz4 size prefix")
        return int(struct.unpack_from("<I", head, 0)[0])


CODECS = (
    Lz4(
        name="lz4",
        summary="LZ4 blocks (numcodecs.lz4): the fastest to decode, a lower ratio",
        zarr_name="numcodecs.lz4",
        portability="zarr-python",
        default_level=1,
        levels=(1, 65537),
        level_word="accelerations",
        speed_class=0,
        cpu="numcodecs",
        gpu=GpuImpl(
            "LZ4",
            16 * _MIB,
            (1 << 32) - 1,
            size_prefix=True,
            note="LZ4, RAW + the 4-byte size prefix (added by gpuds)",
        ),
        size_header="lz4 size prefix",
        head_bytes=4,
        decodes_in_place=True,
        chain_note="4-byte little-endian size + LZ4 block",
    ),
)
