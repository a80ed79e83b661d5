"""A field's content digest, computed in pieces so that any number of workers can share the work.

The digest (format 3, docs/FORMAT.md) is BLAKE2b-128 over the BLAKE2b-128 digests of the field's
consecutive *pieces*: runs of :func:`piece_samples` samples (about 1 MiB; the last piece may be
shorter), each over its raw bytes in C order. The piece length depends only on the size of a
sample, never on chunks, blocks or tasks, so the same content gives the same digest whichever
stage, chunk size or cluster wrote it.

- :class:`ContentDigest` hashes a field written front to back (one process).
- :func:`range_digest` hashes samples ``[start, stop)`` of a field: the digests of the pieces wholly
  inside, and the bytes of the (at most two) pieces cut by the range's ends.
  :class:`FieldDigest` joins such parts from any number of ranges, in any order, into the digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PIECE_BYTES", "ContentDigest", "DigestParts", "FieldDigest", "piece_samples"]

PIECE_BYTES = 2**20
"""Target bytes of one piece."""


def piece_samples(sample_nbytes: int) -> int:
    """Samples per piece: the largest power of two within :data:`PIECE_BYTES` (at least one).

    Examples
    --------
    >>> piece_samples(3 * 32 * 32), piece_samples(8), piece_samples(5 * 2**20)
    (256, 131072, 1)
    """
    per = max(1, PIECE_BYTES // max(1, sample_nbytes))
    return 1 << (per.bit_length() - 1)


def _new() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)


def _rows(values: np.ndarray) -> memoryview:
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8).data


class ContentDigest:
    """The content digest of a field whose samples arrive in order.

    Examples
    --------
    >>> whole, parts = ContentDigest(8), ContentDigest(8)
    >>> whole.update(np.arange(10))
    >>> parts.update(np.arange(3)); parts.update(np.arange(3, 10))
    >>> whole.digest() == parts.digest()
    True
    """

    def __init__(self, sample_nbytes: int) -> None:
        self.piece = piece_samples(sample_nbytes)
        self._outer = _new()
        self._inner = _new()
        self._filled = 0

    def update(self, values: np.ndarray) -> None:
        """Add the samples ``values`` (first axis), after those already added."""
        pos, n = 0, len(values)
        while pos < n:
            take = min(self.piece - self._filled, n - pos)
            self._inner.update(_rows(values[pos : pos + take]))
            self._filled += take
            pos += take
            if self._filled == self.piece:
                self._outer.update(self._inner.digest())
                self._inner, self._filled = _new(), 0

    def digest(self) -> bytes:
        """The digest of the samples added so far."""
        outer = self._outer.copy()
        if self._filled:
            outer.update(self._inner.digest())
        return outer.digest()


@dataclass
class DigestParts:
    """What one range of a field contributes to its digest (:func:`range_digest`)."""

    whole: dict[int, bytes] = field(default_factory=dict)
    """Piece index -> digest, for the pieces wholly inside the range."""
    cut: list[tuple[int, bytes]] = field(default_factory=list)
    """(first sample, raw bytes) of the pieces the range covers only in part."""


def range_digest(values: np.ndarray, start: int, length: int) -> DigestParts:
    """The parts of the digest of a field of ``length`` samples that its samples
    ``values`` (at ``start``) give.

    Examples
    --------
    >>> data = np.arange(300_000)
    >>> joined = FieldDigest(len(data), 8)
    >>> for a, b in [(0, 100_000), (100_000, 250_000), (250_000, 300_000)]:
    ...     joined.add(range_digest(data[a:b], a, len(data)))
    >>> expected = ContentDigest(8)
    >>> expected.update(data)
    >>> joined.digest() == expected.digest()
    True
    """
    values = np.ascontiguousarray(values)
    sample = int(values[:1].nbytes) if len(values) else 0
    piece = piece_samples(sample)
    parts = DigestParts()
    stop = start + len(values)
    first = start // piece
    for p in range(first, (stop + piece - 1) // piece):
        a, b = p * piece, min((p + 1) * piece, length)
        lo, hi = max(a, start), min(b, stop)
        rows = values[lo - start : hi - start]
        if lo == a and hi == b:
            digest = _new()
            digest.update(_rows(rows))
            parts.whole[p] = digest.digest()
        else:
            parts.cut.append((lo, bytes(_rows(rows))))
    return parts


class FieldDigest:
    """Joins :class:`DigestParts` of a field of ``length`` samples of ``sample_nbytes`` bytes,
    added in any order, into its content digest (:meth:`digest`)."""

    def __init__(self, length: int, sample_nbytes: int) -> None:
        self.length = length
        self.sample_nbytes = sample_nbytes
        self.piece = piece_samples(sample_nbytes)
        self._whole: dict[int, bytes] = {}
        self._cut: dict[int, list[tuple[int, bytes]]] = {}

    def add(self, parts: DigestParts) -> None:
        self._whole.update(parts.whole)
        for start, data in parts.cut:
            self._cut.setdefault(start // self.piece, []).append((start, data))

    def digest(self) -> bytes:
        """The field's digest; a piece not covered exactly once is a bug of the caller."""
        outer = _new()
        pieces = (self.length + self.piece - 1) // self.piece
        for p in range(pieces):
            found = self._whole.get(p)
            if found is None:
                a, b = p * self.piece, min((p + 1) * self.piece, self.length)
                inner, at = _new(), a
                for start, data in sorted(self._cut.get(p, [])):
                    if start != at:
                        break
                    inner.update(data)
                    at += len(data) // self.sample_nbytes if self.sample_nbytes else b - a
                if at != b:
                    raise RuntimeError(f"digest piece {p} (samples {a}-{b}) is not covered once")
                found = inner.digest()
            outer.update(found)
        return outer.digest()
