"""The ``loader`` section: steady-state samples/s (and GB/s) of ``loader(...)``, optionally with a
simulated training step after each batch, and its shuffle quality. Its bound is the store
section's read+decode bound, in samples/s.
"""

from __future__ import annotations

import time
from typing import Any

from gpuds.backend import Backend
from gpuds.bench.data import sample_nbytes
from gpuds.bench.harness import row, set_bound, timed
from gpuds.storage import Location

__all__ = ["loader_row"]


def loader_row(
    store: str | Location,
    split: str,
    repeats: int,
    backend: Backend,
    step_ms: float,
    bound_gbps: float | None,
    limit_bytes: int,
) -> dict[str, Any]:
    """The loader's row: a timed run is an epoch, or its first batches (about ``limit_bytes``,
    at least 8) on a large store, after an untimed warm-up epoch."""
    from gpuds.dataset import open_dataset
    from gpuds.loader import shuffle_quality

    ds = open_dataset(store)
    if split:
        ds = ds[split]
    # Batches of 256, or a quarter of a small dataset, so that every epoch has whole batches.
    batch_size = max(1, min(256, len(ds) // 4))
    loader = ds.loader(batch_size, device=backend.name, seed=0)
    sample_bytes = sum(sample_nbytes(arr) for arr in ds.arrays.values())
    epochs = iter(range(10**6))
    max_batches = max(8, limit_bytes // max(1, batch_size * sample_bytes))

    def epoch() -> int:
        loader.set_epoch(next(epochs))
        count = 0
        for i, batch in enumerate(loader):
            count += len(next(iter(batch.values())))
            if step_ms:
                time.sleep(step_ms / 1000)
            if i + 1 >= max_batches:
                break
        if backend.is_gpu:
            backend.xp.cuda.get_current_stream().synchronize()
        return count

    delivered = epoch()
    times = timed(epoch, repeats)
    new = row("loader", f"loader(batch {batch_size}){f', step {step_ms:g} ms' if step_ms else ''}",
              "samples", "samples/s", samples=delivered, times=times, device=backend.name,
              cache="warm")  # fmt: skip
    new["gbps"] = round((new["value"] or 0) * sample_bytes / 1e9, 4)
    new["shuffle_quality"] = shuffle_quality(loader.plan().stream())
    if bound_gbps is not None:
        set_bound(new, bound_gbps * 1e9 / sample_bytes, "store read+decode bound, in samples/s")
    return new
