"""The ``crc32c`` chunk checksum: the Zarr v3 spec codec, last in every chunk chain gpuds writes.

The stored chunk is the encoded bytes followed by their CRC-32C (Castagnoli) as 4 little-endian
bytes, exactly what zarr-python's ``Crc32cCodec`` writes and checks; the CRC comes from
``google_crc32c``, the implementation zarr-python itself uses (hardware-accelerated).
"""

from __future__ import annotations

import google_crc32c
import numpy as np

from gpuds.errors import CorruptChunkError

__all__ = ["CHECKSUM_NAME", "append_crc32c", "strip_crc32c"]

CHECKSUM_NAME = "crc32c"
"""The codec's name in a Zarr v3 chain."""


def append_crc32c(payload: bytes) -> bytes:
    """``payload`` with its CRC-32C appended (what the ``crc32c`` codec stores).

    Examples
    --------
    >>> append_crc32c(b"123456789")[-4:].hex()  # the CRC-32C check value 0xe3069283
    '839206e3'
    """
    return payload + google_crc32c.value(payload).to_bytes(4, "little")


def strip_crc32c(stored: bytes | memoryview, where: str) -> memoryview:
    """The encoded bytes of a stored chunk after checking its CRC-32C; raises naming ``where``.

    Examples
    --------
    >>> bytes(strip_crc32c(append_crc32c(b"abc"), "c/0"))
    b'abc'
    >>> strip_crc32c(b"abc\\0\\0\\0\\0", "c/0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gpuds.errors.CorruptChunkError: corrupt chunk c/0: crc32c checksum mismatch ...
    """
    view = memoryview(stored)
    if len(view) < 4:
        raise CorruptChunkError(
            f"corrupt chunk {where}: {len(view)} bytes, shorter than its 4-byte crc32c checksum"
        )
    body = view[:-4]
    expected = int.from_bytes(view[-4:], "little")
    actual = google_crc32c.value(np.frombuffer(body, dtype=np.uint8))  # no copy
    if actual != expected:
        raise CorruptChunkError(
            f"corrupt chunk {where}: crc32c checksum mismatch (stored {expected:08x}, computed "
            f"{actual:08x}): the chunk was damaged after it was written"
        )
    return body
