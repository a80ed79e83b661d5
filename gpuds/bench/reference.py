"""The ``reference`` section: what the other figures are read against. A host memory copy (the
codec section's bound), a host-to-device copy on a GPU, a zarr-python read of the same store, and
a memory-mapped read of the uncompressed equivalent (.npy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.backend import Backend
from gpuds.bench.data import sample_nbytes
from gpuds.bench.harness import SKIPPED_NO_GPU, measure, row, timed

__all__ = ["h2d", "memcpy", "reference_reads"]


def memcpy(repeats: int, quick: bool) -> dict[str, Any]:
    """Copying 256 MiB (64 with ``quick``) from host memory to host memory."""
    nbytes = (64 if quick else 256) * 2**20
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    times = timed(lambda: np.copyto(dst, src), repeats)
    return row("reference", "memory copy (host)", "memcpy", "GB/s", nbytes=nbytes, times=times)


def h2d(repeats: int, backend: Backend) -> dict[str, Any]:
    """Copying 256 MiB of pinned host memory to the device (skipped without a GPU)."""
    new = row("reference", "host-to-device copy", "h2d", "GB/s", device="cuda")
    if not backend.is_gpu:
        new["status"] = SKIPPED_NO_GPU
        return new
    cp = backend.xp
    nbytes = 256 * 2**20
    host = np.frombuffer(cp.cuda.alloc_pinned_memory(nbytes), dtype=np.uint8, count=nbytes)
    device = cp.empty(nbytes, dtype=cp.uint8)
    times = timed(lambda: device.set(host), repeats, cp.cuda.get_current_stream().synchronize)
    measure(new, times, nbytes=nbytes)
    return new


def reference_reads(
    fields: list[tuple[str, zarr.Array]], repeats: int, workdir: Path, limit_bytes: int
) -> list[dict[str, Any]]:
    """zarr-python and uncompressed reads of the first ``limit_bytes`` (about) of each field;
    the .npy copies are written to ``workdir``."""
    per_sample = {name: max(1, sample_nbytes(arr)) for name, arr in fields}
    counts = {
        name: min(arr.shape[0], max(1, limit_bytes // per_sample[name])) for name, arr in fields
    }
    logical = sum(counts[name] * per_sample[name] for name, _ in fields)
    zarr_times = timed(lambda: [arr[: counts[name]] for name, arr in fields], repeats)
    rows = [row("reference", "zarr-python read of the same store", "zarr_read", "GB/s",
                nbytes=logical, times=zarr_times, cache="warm")]  # fmt: skip
    paths = []
    for name, arr in fields:
        path = workdir / f"{name}.npy"
        np.save(path, arr[: counts[name]])
        paths.append(path)

    def read_npy() -> None:
        for p in paths:
            np.array(np.load(p, mmap_mode="r"))

    rows.append(row("reference", "uncompressed .npy (memory-mapped) read", "raw_read", "GB/s",
                    nbytes=logical, times=timed(read_npy, repeats), cache="warm"))  # fmt: skip
    return rows
