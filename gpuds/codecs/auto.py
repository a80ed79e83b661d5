"""Decisions compress makes from the data itself, deterministically: ``--codec auto`` and the
default byte shuffle.

Both compress a sample of a field's chunks (:data:`SAMPLE_CHUNKS` chunks spread evenly over it)
and compare stored sizes; no timer is read, so the same input and options give the same decision
on any machine, every run.

``--codec auto`` rule: every codec has a documented decode **speed class**
(:data:`SPEED_CLASS`: lz4 and zstd decode at roughly the same rate, gzip several times slower;
see docs/compress.md for the figures and the command that measures them). Among the candidates
that compress (ratio at least :data:`MIN_RATIO`), take the best ratio of the fastest class; a
slower class replaces it only when its best ratio is at least :data:`SLOWER_CLASS_GAIN` times
higher. So the pick never has a lower ratio than another candidate of the same or a faster class.
Ties go to the candidate without byte shuffle (more portable), then to the first in
:func:`candidates` order. If nothing compresses, the field is stored raw (``none``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuds.codecs import registry
from gpuds.codecs.base import CodecConfig
from gpuds.codecs.cpu import CpuChunkCodec
from gpuds.errors import CorruptChunkError

if TYPE_CHECKING:
    from gpuds.chunks import FieldChunks

__all__ = [
    "MIN_RATIO",
    "SAMPLE_CHUNKS",
    "SLOWER_CLASS_GAIN",
    "SPEED_CLASS",
    "candidates",
    "choose",
    "choose_shuffle",
    "pick",
]

MIN_RATIO = 1.05
"""A candidate must store at most 1/1.05 of the raw bytes to count as compressing."""
SLOWER_CLASS_GAIN = 1.10
"""How much better a slower class's ratio must be to be worth its slower decoding."""
SPEED_CLASS = {
    s.name: s.speed_class for s in registry.auto_candidates() if s.speed_class is not None
}
"""Decode speed class per candidate codec, 0 fastest, declared by each codec module
(docs/compress.md has the measured figures)."""
SAMPLE_CHUNKS = 8


def candidates(itemsize: int) -> list[CodecConfig]:
    """The candidates tried for a dtype of ``itemsize`` bytes: the registry's
    (:func:`~gpuds.codecs.registry.auto_candidates`: zstd 3, lz4 1 and gzip 5) at their default
    levels, each with and without byte shuffle (which does nothing to 1-byte values).

    Examples
    --------
    >>> [(c.name, c.level) for c in candidates(1)]
    [('zstd', 3), ('lz4', 1), ('gzip', 5)]
    """
    return [
        CodecConfig(spec.name, spec.default_level, shuffle)
        for shuffle in ((False, True) if itemsize > 1 else (False,))
        for spec in registry.auto_candidates()
    ]


def pick(rows: Sequence[dict[str, Any]], name_key: str = "name") -> int | None:
    """Index of the row the ``--codec auto`` rule picks (module docstring), None when no row
    compresses. Rows need ``ratio``, ``shuffle`` and the codec name under ``name_key``.

    Examples
    --------
    >>> rows = [{"name": "lz4", "shuffle": False, "ratio": 1.5},
    ...         {"name": "zstd", "shuffle": False, "ratio": 1.8},
    ...         {"name": "gzip", "shuffle": False, "ratio": 1.9}]
    >>> pick(rows)   # gzip is slower and only 6% better than zstd
    1
    """
    usable = [i for i, r in enumerate(rows) if (r["ratio"] or 0) >= MIN_RATIO]
    if not usable:
        return None

    def best_of(members: list[int]) -> int:
        # Highest ratio; on a tie, no shuffle, then the earlier candidate.
        return min(members, key=lambda i: (-rows[i]["ratio"], bool(rows[i]["shuffle"]), i))

    classes = sorted({SPEED_CLASS[rows[i][name_key]] for i in usable})
    chosen: int | None = None
    for speed in classes:
        best = best_of([i for i in usable if SPEED_CLASS[rows[i][name_key]] == speed])
        if chosen is None or rows[best]["ratio"] >= SLOWER_CLASS_GAIN * rows[chosen]["ratio"]:
            chosen = best
    return chosen


def _sample(field: FieldChunks, chunk: int) -> list[np.ndarray]:
    n = field.length
    starts = sorted({int(s) for s in np.linspace(0, max(0, n - 1), SAMPLE_CHUNKS) // chunk * chunk})
    dtype = field.dtype.newbyteorder("<") if field.dtype.itemsize > 1 else field.dtype
    return [
        np.ascontiguousarray(field.read_range(s, min(s + chunk, n)), dtype=dtype)
        .reshape(-1)
        .view(np.uint8)
        for s in starts
        if n
    ]


def _ratio(config: CodecConfig, itemsize: int, raw: list[np.ndarray]) -> float | None:
    """Raw bytes over stored bytes of the sample; the round trip is checked."""
    codec = CpuChunkCodec(config, itemsize)
    payloads = codec.encode(raw)
    decoded = codec.decode(payloads, [r.nbytes for r in raw], ["trial"] * len(raw))
    if any(not np.array_equal(d, r) for d, r in zip(decoded, raw, strict=True)):
        raise CorruptChunkError(
            f"codec {config.name} (level {config.level}, shuffle {config.shuffle}) did not "
            "round-trip a sampled chunk in the trial: its decoded bytes differ; nothing written"
        )
    stored = sum(len(p) for p in payloads)
    return round(sum(r.nbytes for r in raw) / stored, 4) if stored else None


def choose(field: FieldChunks, chunk: int) -> tuple[CodecConfig, list[dict[str, Any]]]:
    """``--codec auto`` for one field, trying ``chunk``-sample chunks of it: the pick and the
    trial table (one row per candidate: codec, level, shuffle, ratio, speed class, picked)."""
    raw = _sample(field, chunk)
    itemsize = field.dtype.itemsize
    rows = [
        {
            **config.to_dict(),
            "ratio": _ratio(config, itemsize, raw),
            "speed_class": SPEED_CLASS[config.name],
            "picked": False,
        }
        for config in candidates(itemsize)
    ]
    index = pick(rows)
    if index is None:
        return CodecConfig("none", None, False), rows
    rows[index]["picked"] = True
    row = rows[index]
    return CodecConfig(row["name"], row["level"], row["shuffle"]), rows


def choose_shuffle(field: FieldChunks, chunk: int, config: CodecConfig) -> dict[str, Any]:
    """Whether ``config`` should byte-shuffle this field: the sample is compressed both ways and
    the smaller wins (a tie goes to no shuffle, the more portable chain). Returns the decision
    and its evidence: ``{"shuffle", "ratio_shuffle", "ratio_plain", "sample_chunks"}``."""
    raw = _sample(field, chunk)
    itemsize = field.dtype.itemsize
    with_shuffle = _ratio(CodecConfig(config.name, config.level, True), itemsize, raw)
    plain = _ratio(CodecConfig(config.name, config.level, False), itemsize, raw)
    return {
        "shuffle": (with_shuffle or 0) > (plain or 0),
        "ratio_shuffle": with_shuffle,
        "ratio_plain": plain,
        "sample_chunks": len(raw),
    }
