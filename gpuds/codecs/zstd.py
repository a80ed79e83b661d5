"""``--codec zstd`` (the default): a standard zstd frame, the Zarr v3 spec codec ``zstd``.

CPU: numcodecs.Zstd (what zarr-python's ``ZstdCodec`` wraps). GPU: nvCOMP's Zstd, RAW bitstream,
which has no level (the level is an encoder hint there; the frame stays standard). A frame's
header declares the decoded size (RFC 8878), checked before anything is allocated.
"""

from __future__ import annotations

import struct
from typing import Any

from gpuds.codecs.spec import CodecSpec, GpuImpl

__all__ = ["CODECS", "zstd_content_size"]

_MAGIC = 0xFD2FB528
_HEADER_MAX = 18  # magic 4 + descriptor 1 + window 1 + dictionary id 4 + content size 8
_MIB = 1 << 20


def zstd_content_size(frame: bytes | memoryview) -> int | None:
    """The decompressed size a zstd frame header declares (None when the frame omits it).

    Follows RFC 8878, section 3.1.1.1: magic, Frame_Header_Descriptor, optional Window_Descriptor
    and Dictionary_ID, then Frame_Content_Size of 0/1/2/4/8 bytes (2-byte values are offset by 256).

    Examples
    --------
    >>> from numcodecs import Zstd
    >>> import numpy as np
    >>> zstd_content_size(Zstd(3).encode(np.zeros(1000, dtype=np.uint8)))
    1000
    """
    view = memoryview(frame)
    if len(view) < 5 or struct.unpack_from("<I", view, 0)[0] != _MAGIC:
        raise ValueError("not a zstd frame (bad magic number)")
    descriptor = view[4]
    fcs_flag, single_segment, did_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[did_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    if len(view) < pos + size:
        raise ValueError("truncated zstd frame header")
    value = int.from_bytes(view[pos : pos + size], "little")
    return value + 256 if size == 2 else value


class Zstd(CodecSpec):
    def zarr_codec(self, level: int | None, data_type: str | None) -> Any:
        from zarr.codecs import ZstdCodec

        return ZstdCodec(level=level or 0, checksum=False)

    def cpu_compressor(self, level: int | None) -> Any:
        from numcodecs import Zstd

        return Zstd(level=level)

    def declared_size(self, head: bytes, tail: bytes, length: int) -> int | None:
        return zstd_content_size(head)


CODECS = (
    Zstd(
        name="zstd",
        summary="standard zstd frames: the Zarr v3 spec codec, good ratio, fast to decode",
        zarr_name="zstd",
        portability="any",
        default_level=3,
        levels=(-131072, 22),  # negative levels are zstd's fast modes
        speed_class=0,
        cpu="numcodecs",
        gpu=GpuImpl(
            "Zstd", 256 * _MIB, (1 << 31) - 1, note="Zstd, RAW bitstream (no level on the GPU)"
        ),
        size_header="zstd frame header",
        header_is_exact=True,
        head_bytes=_HEADER_MAX,
        decodes_in_place=True,
    ),
)
