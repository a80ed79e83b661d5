"""What the bench measures: the documented sample data (as arrays and as a store), or the fields
of a user's store, sampled so that a store far larger than memory is benchmarked on its head.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.chunks import FieldChunks, field_label
from gpuds.errors import ConfigError
from gpuds.storage import Location
from gpuds.store import chunk_samples, iter_fields, open_store

__all__ = [
    "bench_fields",
    "little_endian",
    "raw_chunks",
    "read_head",
    "sample_data",
    "sample_nbytes",
    "sample_store",
]


def sample_data(quick: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """The documented sample fields used when no store is given (seeded; same sample count).

    ``N`` is 4,096 samples (``quick``, ~18 MB) or 16,384 (~71 MB):

    - ``incompressible``: uniform random bytes, (N, 1024) uint8, the control (ratio ~1);
    - ``smooth_float32``: random walks along the samples axis (sensor-like), (N, 64) float32;
    - ``images``: image-like (N, 32, 32, 3) uint8: a noisy dark background and a flat square;
    - ``counts``: a small-integer int64 column (Poisson, mean 3).

    Examples
    --------
    >>> {name: v.shape for name, v in sample_data(quick=True).items()}["images"]
    (4096, 32, 32, 3)
    """
    rng = np.random.default_rng(seed)
    n = 4096 if quick else 16384
    images = np.clip(rng.normal(30, 10, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    corners = rng.integers(0, 16, size=(n, 2))
    colours = rng.integers(80, 256, size=(n, 3), dtype=np.uint8)
    for i in range(n):
        y, x = corners[i]
        images[i, y : y + 16, x : x + 16] = colours[i]
    return {
        "incompressible": rng.integers(0, 256, size=(n, 1024), dtype=np.uint8),
        "smooth_float32": np.cumsum(rng.normal(0, 0.01, size=(n, 64)), axis=0).astype(np.float32),
        "images": images,
        "counts": rng.poisson(3, size=n).astype(np.int64),
    }


def sample_store(workdir: Path, data: dict[str, np.ndarray]) -> str:
    """Ingest ``data`` (one field per entry) into ``workdir`` and compress it with the defaults
    (zstd, byte shuffle where it pays) on the CPU; return the compressed store's path."""
    from gpuds.compress import compress
    from gpuds.ingest import ingest

    for name, values in data.items():
        np.save(workdir / f"{name}.npy", values)
    raw = workdir / "raw.zarr"
    ingest([workdir / f"{name}.npy" for name in data], raw)
    compress(raw, workdir / "sample.zarr", verify=False, device="cpu")
    shutil.rmtree(raw)
    for name in data:
        (workdir / f"{name}.npy").unlink()
    return str(workdir / "sample.zarr")


def bench_fields(store: str | Location) -> tuple[str, list[tuple[str, zarr.Array]]]:
    """The split the bench measures (``train``, else the first split, else ``""`` for the root)
    and its fields as ``(name, array)``."""
    group = open_store(store)
    fields = list(iter_fields(group))
    splits = [s for s, _, _ in fields if s]
    split = "train" if "train" in splits else (splits[0] if splits else "")
    chosen = [(name, arr) for s, name, arr in fields if s == split]
    if not chosen:
        raise ConfigError(f"{store}: no fields to benchmark")
    return split, chosen


def sample_nbytes(array: Any) -> int:
    """Bytes of one sample of ``array`` (its shape after axis 0 times its item size).

    Examples
    --------
    >>> sample_nbytes(np.zeros((10, 32, 32, 3), dtype=np.uint8))
    3072
    """
    return int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize


def read_head(
    store: str | Location, split: str, name: str, array: zarr.Array, limit_bytes: int
) -> np.ndarray:
    """The first whole samples of a field, about ``limit_bytes`` of them (at least one), read
    through the chunk service (presence, checksums and sizes checked)."""
    reader = FieldChunks(array, field_label(str(store), split, name))
    count = max(1, limit_bytes // max(1, sample_nbytes(array)))
    return reader.read_range(0, min(reader.length, count))


def little_endian(values: np.ndarray) -> np.ndarray:
    """``values`` as a contiguous little-endian array (the byte order gpuds stores).

    Examples
    --------
    >>> little_endian(np.arange(3, dtype=">u2")).dtype.str
    '<u2'
    """
    dtype = values.dtype.newbyteorder("<") if values.dtype.itemsize > 1 else values.dtype
    return np.ascontiguousarray(values, dtype=dtype)


def raw_chunks(values: np.ndarray, limit_bytes: int) -> list[np.ndarray]:
    """``values`` as raw 1 MiB byte chunks of whole samples (the size compress writes by
    default), up to about ``limit_bytes`` of them; at least one chunk.

    Examples
    --------
    >>> chunks = raw_chunks(np.zeros((4096, 1024), dtype=np.uint8), 2 * 2**20)
    >>> [c.nbytes for c in chunks]
    [1048576, 1048576]
    """
    values = little_endian(values)
    per_sample = max(1, values[:1].nbytes)
    n = chunk_samples(per_sample, 1.0)
    take = min(len(values), max(n, limit_bytes // per_sample // n * n))
    return [
        values[i : i + n].reshape(-1).view(np.uint8) for i in range(0, take, n) if i + n <= take
    ] or [values[:take].reshape(-1).view(np.uint8)]
