"""The statistics of a dataset card, read in bounded memory through the chunk service.

Each field of each split is read chunk by chunk (:class:`~gpuds.chunks.FieldChunks`: presence,
checksums and sizes checked), one decoded chunk in memory at a time. A field of at most
``budget_bytes`` (uncompressed) is read whole, so its statistics are exact; a larger one is read
on a seeded sample of its chunks of that size (:func:`choose_chunks`), and its
:class:`Coverage` says how many samples and chunks that was. Numeric fields are read twice (the
first pass finds the range that the histograms of every split share, the second counts them),
so the histograms of the splits of one field can be laid over each other.

What is gathered per field and split (:class:`FieldSummary`): samples with a missing value (NaN,
the category code ``-1``, or a ``True`` in the field's ``<name>.missing`` mask), counts per class
(label) or per code (category), and per channel (last sample axis) the count, mean, standard
deviation, minimum and maximum of the finite values, and a histogram. The values a mask marks
missing (stored as 0) are left out of a field's statistics.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuds.chunks import FieldChunks
from gpuds.ops.stats import RunningMinMax, RunningMoments
from gpuds.progress import Progress, check_cancelled

__all__ = [
    "BINS",
    "MAX_CHANNEL_PANELS",
    "Coverage",
    "FieldSummary",
    "Scan",
    "choose_chunks",
    "histogram_panels",
    "scan_fields",
]

BINS = 40
"""Bins of a histogram (an integer field spanning fewer values gets one bin per integer)."""
MAX_CHANNEL_PANELS = 4
"""An image field with up to this many channels gets a histogram per channel."""


def choose_chunks(
    nchunks: int, chunk_nbytes: int, budget_bytes: int, seed: int, key: str
) -> list[int]:
    """The chunks of a field to read: all of them when they hold at most ``budget_bytes``, else a
    seeded sample of ``budget_bytes // chunk_nbytes`` chunks (at least one), in order. The sample
    depends on ``seed`` and ``key`` (the field's split and name) only.

    Examples
    --------
    >>> choose_chunks(4, 100, 1000, 0, "train/x")
    [0, 1, 2, 3]
    >>> picked = choose_chunks(1000, 100, 1000, 0, "train/x")
    >>> len(picked), picked == choose_chunks(1000, 100, 1000, 0, "train/x")
    (10, True)
    """
    if nchunks * chunk_nbytes <= budget_bytes:
        return list(range(nchunks))
    count = max(1, budget_bytes // max(1, chunk_nbytes))
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return sorted(int(i) for i in rng.choice(nchunks, size=count, replace=False))


@dataclass(frozen=True)
class Coverage:
    """How much of a field the statistics read: ``samples`` of ``length`` in ``chunks`` of
    ``nchunks`` chunks."""

    samples: int
    length: int
    chunks: int
    nchunks: int

    @property
    def exact(self) -> bool:
        """Every chunk was read."""
        return self.chunks == self.nchunks


def histogram_panels(kind: str, sample_shape: Sequence[int]) -> int:
    """Histograms a field gets: one per channel for an image of at most
    :data:`MAX_CHANNEL_PANELS` channels, else one over all its values.

    Examples
    --------
    >>> histogram_panels("image", (28, 28, 3)), histogram_panels("array", (16,))
    (3, 1)
    """
    if kind == "image" and sample_shape and sample_shape[-1] <= MAX_CHANNEL_PANELS:
        return int(sample_shape[-1])
    return 1


@dataclass
class FieldSummary:
    """What the card shows of one field of one split."""

    split: str
    name: str
    kind: str
    dtype: np.dtype[Any]
    sample_shape: tuple[int, ...]
    coverage: Coverage
    missing: int | None = None
    """Samples read with a missing value (None: the field cannot hold one)."""
    counts: np.ndarray | None = None
    """Per class (label) or code (category): samples read holding it."""
    out_of_range: int = 0
    """Label values outside the class list."""
    moments: RunningMoments | None = None
    """Per channel (last sample axis), over the finite values read."""
    ranges: RunningMinMax | None = None
    histograms: list[np.ndarray] = field(default_factory=list)
    """Counts per bin, one array per histogram panel (the edges are :attr:`Scan.edges`)."""

    @property
    def numeric(self) -> bool:
        """Holds numbers the card summarises (not codes, not complex)."""
        return self.kind not in ("label", "category", "mask") and self.dtype.kind in "biuf"


@dataclass
class Scan:
    """Every field's summaries, by ``(split, name)``, and each numeric field's histogram edges
    (shared by its splits), one array per panel."""

    summaries: dict[tuple[str, str], FieldSummary]
    edges: dict[str, list[np.ndarray]]
    chunks_read: int

    def of(self, name: str) -> list[FieldSummary]:
        """The summaries of field ``name``, one per split, in split order."""
        return [s for (_, n), s in self.summaries.items() if n == name]


def scan_fields(
    readers: Mapping[tuple[str, str], FieldChunks],
    kinds: Mapping[str, str],
    attrs: Mapping[str, Mapping[str, Any]],
    budget_bytes: int,
    seed: int,
    progress: Progress,
) -> Scan:
    """Summarise every field: ``readers`` by ``(split, name)`` in display order, ``kinds`` and
    ``attrs`` (the field attributes: classes, vocabulary, ``mask_of``) by name."""
    masks = {
        (split, str(attrs[name]["mask_of"])): reader
        for (split, name), reader in readers.items()
        if kinds[name] == "mask" and attrs.get(name, {}).get("mask_of") in kinds
    }
    chosen = {
        key: choose_chunks(
            r.nchunks,
            r.chunk_nbytes,
            budget_bytes,
            seed,
            f"{key[0]}/{key[1]}" if key[0] else key[1],
        )
        for key, r in readers.items()
    }
    numeric = {
        key
        for key, r in readers.items()
        if kinds[key[1]] not in ("label", "category", "mask") and r.dtype.kind in "biuf"
    }
    progress.start(
        "report: read", sum(len(c) * (2 if k in numeric else 1) for k, c in chosen.items())
    )
    summaries: dict[tuple[str, str], FieldSummary] = {}
    chunks_read = 0
    for key, reader in readers.items():
        split, name = key
        indices = chosen[key]
        samples = sum(_rows(reader, i) for i in indices)
        summary = FieldSummary(
            split,
            name,
            kinds[name],
            reader.dtype,
            tuple(reader.sample_shape),
            Coverage(samples, reader.length, len(indices), reader.nchunks),
        )
        _start(summary, attrs.get(name, {}))
        for index in indices:
            check_cancelled()
            values = _values(reader, index, masks.get(key))
            _first_pass(summary, values, attrs.get(name, {}))
            chunks_read += 1
            progress.advance(1)
        summaries[key] = summary
    edges = _edges(summaries, numeric)
    for key in sorted(numeric, key=list(readers).index):
        reader, summary = readers[key], summaries[key]
        bins = edges[key[1]]
        summary.histograms = [np.zeros(len(e) - 1, dtype=np.int64) for e in bins]
        for index in chosen[key]:
            check_cancelled()
            values = _values(reader, index, masks.get(key))
            _count(summary, values, bins)
            chunks_read += 1
            progress.advance(1)
    return Scan(summaries, edges, chunks_read)


def _rows(reader: FieldChunks, index: int) -> int:
    return min(reader.chunk, reader.length - index * reader.chunk)


def _values(reader: FieldChunks, index: int, mask: FieldChunks | None) -> np.ndarray:
    """The samples of chunk ``index``; with a ``mask`` (the field's ``<name>.missing``), as
    float64 with NaN where it marks a value missing."""
    values = reader.read(index)[: _rows(reader, index)]
    if mask is None:
        return values
    start = index * reader.chunk
    missing = mask.read_range(start, start + len(values)).reshape(len(values), -1).any(axis=1)
    if not missing.any():
        return values
    out = values.astype(np.float64)
    out[missing] = np.nan
    return out


def _start(summary: FieldSummary, attrs: Mapping[str, Any]) -> None:
    kind, dtype = summary.kind, summary.dtype
    if kind == "label":
        summary.counts = np.zeros(len(attrs.get("classes") or []), dtype=np.int64)
    elif kind == "category":
        summary.counts = np.zeros(len(attrs.get("vocabulary") or []), dtype=np.int64)
        summary.missing = 0
    elif kind == "mask":
        summary.missing = 0
    elif summary.numeric:
        summary.moments, summary.ranges = RunningMoments(), RunningMinMax()
        if dtype.kind == "f":
            summary.missing = 0


def _channels(values: np.ndarray) -> np.ndarray:
    """``(values, channels)``: the last sample axis as channels, bool as uint8."""
    if values.dtype.kind == "b":
        values = values.astype(np.uint8)
    channels = values.shape[-1] if values.ndim > 1 else 1
    return values.reshape(-1, channels)


def _first_pass(summary: FieldSummary, values: np.ndarray, attrs: Mapping[str, Any]) -> None:
    rows = len(values)
    if summary.kind == "label":
        assert summary.counts is not None
        n = len(summary.counts)
        inside = (values >= 0) & (values < n)
        summary.counts += np.bincount(values[inside].astype(np.int64), minlength=n)[:n]
        summary.out_of_range += int(rows - inside.sum())
    elif summary.kind == "category":
        assert summary.counts is not None and summary.missing is not None
        code = int(attrs.get("missing_code", -1))
        summary.missing += int((values == code).sum())
        n = len(summary.counts)
        valid = values[(values >= 0) & (values < n)].astype(np.int64)
        summary.counts += np.bincount(valid, minlength=n)[:n]
    elif summary.kind == "mask":
        assert summary.missing is not None
        summary.missing += int(values.reshape(rows, -1).any(axis=1).sum())
    elif summary.numeric:
        assert summary.moments is not None and summary.ranges is not None
        x2 = _channels(values)
        if x2.dtype.kind == "f":
            if summary.missing is not None:  # a float field (an integer one's mask says it)
                summary.missing += int(np.isnan(values.reshape(rows, -1)).any(axis=1).sum())
            # Moments of the finite values: an infinite one would make every one of them inf.
            x2 = np.where(np.isinf(x2), np.nan, x2)
        summary.moments.update(x2, (0,))
        summary.ranges.update(_channels(values))


def _edges(
    summaries: Mapping[tuple[str, str], FieldSummary], numeric: set[tuple[str, str]]
) -> dict[str, list[np.ndarray]]:
    """Per numeric field, each panel's bin edges over the range of all its splits."""
    out: dict[str, list[np.ndarray]] = {}
    for name in dict.fromkeys(n for _, n in summaries):
        parts = [summaries[k] for k in summaries if k[1] == name and k in numeric]
        found = [s.ranges for s in parts if s.ranges is not None and s.ranges.min is not None]
        if not parts:
            continue
        first = parts[0]
        panels = histogram_panels(first.kind, first.sample_shape)
        edges = []
        for panel in range(panels):
            lows, highs = [], []
            for r in found:
                assert r.min is not None and r.max is not None and r.finite is not None
                take = slice(panel, panel + 1) if panels > 1 else slice(None)
                has = r.finite[take] > 0
                lows += [float(v) for v in r.min[take][has]]
                highs += [float(v) for v in r.max[take][has]]
            edges.append(_bin_edges(min(lows, default=0.0), max(highs, default=1.0), first.dtype))
        out[name] = edges
    return out


def _bin_edges(lo: float, hi: float, dtype: np.dtype[Any]) -> np.ndarray:
    """:data:`BINS` equal bins over ``[lo, hi]``, or one per integer when that is fewer.

    Examples
    --------
    >>> _bin_edges(0, 3, np.dtype("int64")).tolist()
    [-0.5, 0.5, 1.5, 2.5, 3.5]
    >>> len(_bin_edges(0.0, 1.0, np.dtype("float32"))) - 1
    40
    """
    if dtype.kind in "biu" and hi - lo + 1 <= BINS:
        return np.arange(lo - 0.5, hi + 1.0, 1.0)
    if hi <= lo:
        return np.array([lo - 0.5, lo + 0.5])
    return np.linspace(lo, hi, BINS + 1)


def _count(summary: FieldSummary, values: np.ndarray, edges: list[np.ndarray]) -> None:
    x2 = _channels(values)
    for panel, bins in enumerate(edges):
        column = x2[:, panel] if len(edges) > 1 else x2.reshape(-1)
        column = column[np.isfinite(column)] if column.dtype.kind == "f" else column
        counts, _ = np.histogram(column, bins=bins)
        summary.histograms[panel] += counts
