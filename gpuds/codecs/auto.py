"""``--codec auto``: try the candidates on a sample of a field's chunks and pick one.

Objective (stated in ``gpuds compress --help``): among the candidates that compress (ratio at
least :data:`MIN_RATIO`), take the highest ratio whose decode throughput on this device is at
least :data:`SPEED_SHARE` of the fastest such candidate's; if none compresses, store raw
(``none``). Decoding speed matters as much as size for a training loader, hence the floor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuds.codecs.base import CodecConfig
from gpuds.codecs.cpu import CpuChunkCodec

if TYPE_CHECKING:
    from gpuds.chunks import FieldChunks

__all__ = ["MIN_RATIO", "SPEED_SHARE", "candidates", "choose"]

MIN_RATIO = 1.05
SPEED_SHARE = 0.5
SAMPLE_CHUNKS = 8


def candidates(itemsize: int) -> list[CodecConfig]:
    """The portable candidates tried for a dtype of ``itemsize`` bytes."""
    found = [
        CodecConfig("zstd", 3, True),
        CodecConfig("lz4", 1, True),
        CodecConfig("gzip", 5, True),
    ]
    if itemsize > 1:
        found += [CodecConfig("zstd", 3, False), CodecConfig("lz4", 1, False)]
    return found


def _sample(field: FieldChunks, chunk: int) -> list[np.ndarray]:
    n = field.length
    starts = sorted({int(s) for s in np.linspace(0, max(0, n - 1), SAMPLE_CHUNKS) // chunk * chunk})
    dtype = field.dtype.newbyteorder("<") if field.dtype.itemsize > 1 else field.dtype
    return [
        np.ascontiguousarray(field.read_range(s, min(s + chunk, n)), dtype=dtype)
        .reshape(-1)
        .view(np.uint8)
        for s in starts
    ]


def choose(field: FieldChunks, chunk: int) -> tuple[CodecConfig, list[dict[str, Any]]]:
    """Pick a codec for a field, trying ``chunk``-sample chunks of it; return it and the trial
    table (one row per candidate)."""
    raw = _sample(field, chunk)
    logical = sum(r.nbytes for r in raw)
    rows = []
    for config in candidates(field.dtype.itemsize):
        codec = CpuChunkCodec(config, field.dtype.itemsize)
        payloads = codec.encode(raw)
        stored = sum(len(p) for p in payloads)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            decoded = codec.decode(payloads, [r.nbytes for r in raw], ["trial"] * len(raw))
            best = min(best, time.perf_counter() - start)
        if any(not np.array_equal(d, r) for d, r in zip(decoded, raw, strict=True)):
            raise AssertionError(f"codec {config} did not round-trip in the trial")
        rows.append(
            {
                **config.to_dict(),
                "ratio": round(logical / stored, 4) if stored else None,
                "decode_gbps": round(logical / best / 1e9, 3) if best > 0 else None,
            }
        )
    usable = [r for r in rows if (r["ratio"] or 0) >= MIN_RATIO]
    if not usable:
        return CodecConfig("none", None, False), rows
    fastest = max(r["decode_gbps"] or 0 for r in usable)
    fast_enough = [r for r in usable if (r["decode_gbps"] or 0) >= SPEED_SHARE * fastest]
    pick = max(fast_enough, key=lambda r: (r["ratio"], r["decode_gbps"]))
    return CodecConfig(pick["name"], pick["level"], pick["shuffle"]), rows
