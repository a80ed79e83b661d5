"""Zarr v3 ``sharding_indexed`` shards, written and read by gpuds itself.

A shard is the concatenation of its inner chunks' encoded bytes followed by the index: for each
inner chunk (C order) a pair of little-endian uint64 ``(offset, nbytes)``, with
``(2**64 - 1, 2**64 - 1)`` for a chunk that is not stored, then the index's CRC-32C (4 bytes,
little-endian), i.e. index codecs ``[bytes(little), crc32c]`` at ``index_location: end``. That is
exactly what zarr-python (and any Zarr v3 reader) reads.

gpuds writes a shard whole, once (one file, one request), so a reader fetches it with one request
and decodes all its chunks in one batch. Reading checks the index's length and CRC and that every
entry lies inside the shard before any chunk is touched.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import google_crc32c
import numpy as np

from gpuds.errors import CorruptChunkError

__all__ = [
    "EMPTY",
    "encode_shard",
    "index_nbytes",
    "parse_index",
    "read_index",
    "shard_parts",
]

EMPTY = 2**64 - 1


def index_nbytes(chunks: int) -> int:
    """Size of the index (with its CRC) of a shard of ``chunks`` inner chunks."""
    return 16 * chunks + 4


def shard_parts(payloads: Sequence[bytes | None]) -> list[bytes]:
    """The shard of ``payloads`` (encoded chunks, None: not stored) as the parts to write in
    order: the payloads, the index and its CRC (written without joining them in memory)."""
    index = np.full((len(payloads), 2), EMPTY, dtype="<u8")
    parts: list[bytes] = []
    offset = 0
    for i, payload in enumerate(payloads):
        if payload is None:
            continue
        index[i] = (offset, len(payload))
        parts.append(payload)
        offset += len(payload)
    index_bytes = index.tobytes()
    return [*parts, index_bytes, google_crc32c.value(index_bytes).to_bytes(4, "little")]


def encode_shard(payloads: Sequence[bytes | None]) -> bytes:
    """Concatenate encoded chunks (None: not stored) and append the CRC-protected index."""
    return b"".join(shard_parts(payloads))


def read_index(shard: bytes | memoryview, chunks: int, key: str) -> np.ndarray:
    """The ``(chunks, 2)`` index of a whole shard, validated; raises naming ``key`` if damaged."""
    view = memoryview(shard)
    return parse_index(bytes(view[-index_nbytes(chunks) :]), len(view), chunks, key)


def parse_index(tail: bytes, length: int, chunks: int, key: str) -> np.ndarray:
    """Validate the index found in the last bytes ``tail`` of a shard of ``length`` bytes.

    Checks the length, the CRC-32C, and that every stored chunk lies before the index, so a
    reader can trust the offsets without reading the rest of the shard first.
    """
    size = index_nbytes(chunks)
    if length < size or len(tail) != size:
        raise CorruptChunkError(
            f"corrupt shard {key}: {length} bytes, shorter than its {size}-byte index"
        )
    index_bytes, crc = tail[:-4], int.from_bytes(tail[-4:], "little")
    if google_crc32c.value(index_bytes) != crc:
        raise CorruptChunkError(
            f"corrupt shard {key}: index checksum mismatch (truncated or damaged)"
        )
    index = np.frombuffer(index_bytes, dtype="<u8").reshape(chunks, 2)
    data_end = length - size
    ranges = []
    for i, (offset, nbytes) in enumerate(index.tolist()):
        if offset == EMPTY and nbytes == EMPTY:
            continue
        if offset + nbytes > data_end:
            raise CorruptChunkError(
                f"corrupt shard {key}: chunk {i} claims bytes {offset}..{offset + nbytes} of "
                f"{data_end}"
            )
        ranges.append((offset, offset + nbytes, i))
    ranges.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(ranges):
        if start < end:  # two chunks cannot share bytes: one would be read as the other
            raise CorruptChunkError(
                f"corrupt shard {key}: chunks {first} and {second} claim overlapping bytes"
            )
    return index
