"""``bench()``: one run of every section, side by side, on the sample data or a user's store,
returned as the report docs/bench.schema.json describes."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuds.backend import resolve
from gpuds.bench.codec import CODECS, codec_rows
from gpuds.bench.data import bench_fields, read_head, sample_data, sample_store
from gpuds.bench.harness import SCHEMA
from gpuds.bench.loader import loader_row
from gpuds.bench.reference import h2d, memcpy, reference_reads
from gpuds.bench.store import store_rows
from gpuds.environment import environment
from gpuds.errors import ConfigError
from gpuds.progress import NullProgress, Progress
from gpuds.storage import Location, is_url, location
from gpuds.store import utc_now

__all__ = ["bench"]


def bench(
    store: str | None = None,
    *,
    device: str = "auto",
    codecs: Sequence[str] = ("zstd", "lz4", "gzip"),
    repeats: int = 3,
    quick: bool = False,
    step_ms: float = 0.0,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Measure codecs, the store, the loader and the references; return the report.

    Parameters
    ----------
    store
        A gpuds store to measure; None generates the documented sample data
        (:func:`~gpuds.bench.data.sample_data`), ingests and compresses it (zstd) in a temporary
        folder.
    device
        ``auto``, ``cpu`` or ``cuda``.
    codecs
        Codecs of the ``codec`` section (those with a CPU implementation: zstd, lz4, gzip, none).
    repeats
        Timed runs per measurement (after one warm-up); the median is reported.
    quick
        Smaller data (about 8 MB a field) and 2 repeats: under a minute on 2 cores.
    step_ms
        A simulated training step after each loader batch.
    progress
        Receives the five phases (prepare, codec, store, loader, reference).
    storage_options
        Object-store settings when ``store`` is a URL (docs/storage.md).

    Returns
    -------
    dict
        ``schema``, ``created``, ``environment``, ``settings``, ``rows``, ``seconds``
        (docs/bench.md).

    Examples
    --------
    See :mod:`gpuds.bench` (a run takes seconds, too long for a docstring example).
    """
    progress = progress or NullProgress()
    for name in codecs:
        if name not in CODECS:
            expected = f"{', '.join(CODECS[:-1])} or {CODECS[-1]}"
            raise ConfigError(f"bench --codecs: expected {expected}, got {name!r}")
    if repeats < 1:
        raise ConfigError(f"Expected repeats >= 1, got {repeats}")
    repeats = min(repeats, 2) if quick else repeats
    backend = resolve(device)
    if backend.notice:
        progress.note(backend.notice)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpuds-bench-"))
    try:
        progress.start("bench", 5)
        data: dict[str, np.ndarray] = {}
        if store is None:
            data = sample_data(quick)
            store_path: str | Location = sample_store(work, data)
        else:
            store_path = location(store, storage_options) if is_url(store) else str(store)
        split, fields = bench_fields(store_path)
        limit = (8 if quick else 32) * 2**20  # bytes sampled per field by the codec section
        if store is not None:
            for name, arr in fields:
                data[name] = read_head(store_path, split, name, arr, limit)
        progress.advance(1)
        copy = memcpy(repeats, quick)
        rows = [copy, h2d(repeats, backend)]
        for name, values in data.items():
            rows += codec_rows(name, values, codecs, repeats, backend, copy["value"], limit)
        progress.advance(1)
        measured, bound = store_rows(store_path, split, fields, repeats, backend, 4 * limit)
        rows += measured
        progress.advance(1)
        rows.append(loader_row(store_path, split, repeats, backend, step_ms, bound, 4 * limit))
        progress.advance(1)
        rows += reference_reads(fields, repeats, work, 4 * limit)
        progress.advance(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "environment": environment(backend),
        "settings": {
            "store": str(store) if store is not None else None,
            "data": "sample data (gpuds.bench.sample_data)"
            if store is None
            else f"split {split!r}"
            if split
            else "root fields",
            "device": backend.name,
            "codecs": list(codecs),
            "repeats": repeats,
            "quick": quick,
            "step_ms": step_ms,
        },
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 2),
    }
