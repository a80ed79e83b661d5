"""``gpuds bench --tune``: a sweep of codec x level x chunk size on a sample of the user's store,
and the ``gpuds compress`` command that ``--codec auto``'s rule (:func:`gpuds.codecs.auto.pick`)
recommends from it: ratios and documented speed classes, never the timings, so the
recommendation is the same on any machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import resolve
from gpuds.bench.data import bench_fields, little_endian, read_head
from gpuds.bench.harness import SCHEMA, BenchError, timed
from gpuds.codecs import CodecConfig
from gpuds.codecs.auto import MIN_RATIO, SLOWER_CLASS_GAIN, pick
from gpuds.codecs.cpu import CpuChunkCodec
from gpuds.environment import environment
from gpuds.progress import NullProgress, Progress
from gpuds.storage import Location, is_url, location
from gpuds.store import chunk_samples, utc_now

__all__ = ["TUNE_CHUNK_MB", "TUNE_CODECS", "tune"]

TUNE_CODECS = (("zstd", 1), ("zstd", 3), ("zstd", 9), ("lz4", 1), ("gzip", 1), ("gzip", 5))
"""(codec, level) candidates of the sweep."""
TUNE_CHUNK_MB = (0.25, 1.0, 4.0)
"""Chunk sizes (MiB) of the sweep."""


def tune(
    store: str,
    *,
    quick: bool = False,
    repeats: int = 2,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Sweep codec x level x chunk size on a sample of ``store`` on this machine's CPU.

    Each candidate encodes up to 32 MiB (8 with ``quick``) of every field (the first split of a
    split store) in chunks of the given size, decodes it (checked for equality) and reports the
    ratio and the decode rate. The recommendation follows ``--codec auto``'s rule
    (:func:`gpuds.codecs.auto.pick`: ratios and documented speed classes, not the timings, so it
    is the same on any machine).

    Returns
    -------
    dict
        ``schema``, ``created``, ``environment``, ``store``, ``split``, ``rows`` (codec, level,
        shuffle, chunk_mb, ratio, decode_gbps), ``recommended`` (one of the rows, or None),
        ``command`` and ``rule``.

    Examples
    --------
    See :mod:`gpuds.bench`.
    """
    progress = progress or NullProgress()
    source: str | Location = location(store, storage_options) if is_url(store) else store
    split, fields = bench_fields(source)
    limit = (8 if quick else 32) * 2**20
    samples = {
        name: little_endian(read_head(source, split, name, arr, limit)) for name, arr in fields
    }
    rows: list[dict[str, Any]] = []
    progress.start("tune", len(TUNE_CODECS) * len(TUNE_CHUNK_MB))
    for codec_name, level in TUNE_CODECS:
        for chunk_mb in TUNE_CHUNK_MB:
            rows.append(_candidate(samples, codec_name, level, chunk_mb, repeats))
            progress.advance(1)
    index = pick(rows, name_key="codec")
    if index is not None:
        best = rows[index]
        command = (
            f"gpuds compress {store} -o OUT.zarr --codec {best['codec']} --level {best['level']} "
            f"--chunk-mb {best['chunk_mb']:g}"
        )
    else:
        best = None
        command = f"gpuds compress {store} -o OUT.zarr --codec none"
    return {
        "schema": SCHEMA + "/tune",
        "created": utc_now(),
        "environment": environment(resolve("cpu")),
        "store": store,
        "split": split,
        "rows": rows,
        "recommended": best,
        "command": command,
        "rule": (
            f"--codec auto's: the best ratio (>= {MIN_RATIO}) of the fastest decode class (lz4, "
            f"zstd); gzip only when {SLOWER_CLASS_GAIN - 1:.0%} better"
        ),
    }


def _candidate(
    samples: dict[str, np.ndarray], codec_name: str, level: int, chunk_mb: float, repeats: int
) -> dict[str, Any]:
    """One row of the sweep: every field in chunks of ``chunk_mb``, encoded, decoded (timed,
    fastest of ``repeats``) and checked."""
    logical = stored = 0
    seconds = 0.0
    for name, values in samples.items():
        n = chunk_samples(max(1, values[:1].nbytes), chunk_mb)
        raw = [values[i : i + n].reshape(-1).view(np.uint8) for i in range(0, len(values), n)]
        codec = CpuChunkCodec(CodecConfig(codec_name, level, values.dtype.itemsize > 1),
                              values.dtype.itemsize)  # fmt: skip
        payloads = codec.encode(raw)
        sizes = [r.nbytes for r in raw]
        keys = [f"{name} chunk {i}" for i in range(len(raw))]
        fastest, decoded = _decode_timed(codec, payloads, sizes, keys, repeats)
        seconds += fastest
        if any(not np.array_equal(d, r) for d, r in zip(decoded, raw, strict=True)):
            raise BenchError(f"{codec_name} level {level} did not round-trip {name!r}")
        logical += sum(sizes)
        stored += sum(len(p) for p in payloads)
    return {
        "codec": codec_name,
        "level": level,
        "shuffle": any(v.dtype.itemsize > 1 for v in samples.values()),
        "chunk_mb": chunk_mb,
        "ratio": round(logical / stored, 4) if stored else None,
        "decode_gbps": round(logical / seconds / 1e9, 4) if seconds else None,
    }


def _decode_timed(
    codec: CpuChunkCodec, payloads: list[bytes], sizes: list[int], keys: list[str], repeats: int
) -> tuple[float, list[np.ndarray]]:
    """The fastest of ``repeats`` timed decodes of ``payloads``, and what they decoded to."""
    decoded: list[np.ndarray] = []

    def run() -> None:
        decoded[:] = codec.decode(payloads, sizes, keys)

    return min(timed(run, repeats)), decoded
