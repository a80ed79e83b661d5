"""``--codec gzip``: a gzip member, the Zarr v3 spec codec ``gzip``.

CPU: numcodecs.GZip to encode (what zarr-python's ``GzipCodec`` writes); decoding inflates with
zlib, bounded to the expected size. GPU: nvCOMP's Gzip, RAW, whose ``algorithm_type`` the zlib
level maps to ("2 beats zlib level 1, 4 beats zlib level 6"). The member's trailer (ISIZE, the
size modulo 2**32) declares the decoded size; chunks are smaller than 4 GiB, so it is exact.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from gpuds.codecs.spec import CodecSpec, GpuImpl

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CODECS"]

_MIB = 1 << 20


class Gzip(CodecSpec):
    def zarr_codec(self, level: int | None, data_type: str | None) -> Any:
        from zarr.codecs import GzipCodec

        return GzipCodec(level=level if level is not None else 5)

    def cpu_compressor(self, level: int | None) -> Any:
        from numcodecs import GZip

        return GZip(level=level)

    def declared_size(self, head: bytes, tail: bytes, length: int) -> int | None:
        if length < 18 or head[:2] != b"\x1f\x8b":
            raise ValueError("not a gzip member")
        return int.from_bytes(tail[-4:], "little")

    def cpu_decode(self, compressor: Any, payload: bytes | memoryview, size: int) -> np.ndarray:
        import numpy as np

        inflater = zlib.decompressobj(wbits=31)
        data = inflater.decompress(payload, size)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError(f"gzip member does not end after the expected {size} bytes")
        return np.frombuffer(data, dtype=np.uint8)


CODECS = (
    Gzip(
        name="gzip",
        summary="gzip members: the Zarr v3 spec codec, the most widely readable, slower to decode",
        zarr_name="gzip",
        portability="any",
        default_level=5,
        levels=(0, 9),
        speed_class=1,
        cpu="numcodecs / zlib",
        gpu=GpuImpl(
            "Gzip",
            256 * _MIB,
            (1 << 32) - 1,
            level_option="algorithm_type",
            level_values=(0, 2, 4, 4, 4, 4, 4, 5, 5, 5),
            note="Gzip, RAW (zlib levels mapped to its algorithm_type)",
        ),
        size_header="gzip trailer",
        header_is_exact=True,
        head_bytes=2,
        tail_bytes=4,
    ),
)
