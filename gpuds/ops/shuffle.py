"""``shuffle``: a uniform random permutation of the whole dataset, in bounded memory.

The engine treats ``shuffle`` as a barrier: the samples reaching it are written to temporary
*buckets* on disk (inside the output's partial folder), permuted, and the ops after it stream from
that shuffled copy as often as they need to; it is deleted before the output is committed.

Algorithm (a two-pass bucket shuffle, after Rao 1961 and Sandelius 1962): pass 1 sends each
sample to one of ``B`` buckets chosen uniformly and independently at random (a task per block,
seeded by the block's number, writing the block's part of each bucket); pass 2 joins one bucket's
parts in block order, permutes it uniformly (a task per bucket, seeded by its number), and the
buckets are emitted in order. Every permutation of the samples is equally likely: the bucket
sizes and contents are exchangeable, and within a bucket every order is equally likely.

Memory: pass 2 holds one field of one bucket, the bucket's permutation and a gather piece of at
most ``memory / 16``. ``B`` is the smallest number of buckets whose size, six standard deviations
above its mean, fits 3/4 of the run's budget (``memory_mb``, a key of the pipeline config).
Files are read with ``read``/``np.fromfile``, never ``np.memmap``, whose pages would count in the
process's resident memory until the whole map is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gpuds.backend import to_host
from gpuds.errors import ConfigError, StoreError
from gpuds.ops.base import BarrierInput, Block, Op, Spec
from gpuds.progress import check_cancelled

__all__ = ["BUCKET_SHARE", "Shuffle", "ShuffledSource", "bucket_count"]

BUCKET_SHARE = 0.75
"""Share of the memory budget one bucket (plus its permutation) may fill, six standard
deviations above its expected size; the gather pieces use at most 1/16 more."""
_MARGIN_SD = 6.0
_PIECE_MAX = 16 * 2**20
_INDEX = "__index"
_SPLIT = "__split"


def bucket_count(samples: int, sample_nbytes: int, memory_bytes: float) -> int:
    """The fewest buckets for which a bucket of ``samples`` spread uniformly, six standard
    deviations above its expected size, fits ``BUCKET_SHARE * memory_bytes``.

    A bucket's size is Binomial(samples, 1/B): mean ``m = samples / B``, standard deviation under
    ``sqrt(m)``, so ``m + 6 sqrt(m) <= cap`` (a larger bucket has a chance under 1e-9).

    Examples
    --------
    >>> bucket_count(10_000, 49_161, 512 * 2**20)
    2
    >>> bucket_count(10, 1, 2**20)
    1
    """
    cap = BUCKET_SHARE * memory_bytes / max(1, sample_nbytes)
    # Largest mean m with m + 6 sqrt(m) <= cap: sqrt(m) is the positive root of r^2 + 6r - cap.
    root = (-_MARGIN_SD + math.sqrt(_MARGIN_SD**2 + 4 * cap)) / 2
    most = max(1.0, root * root)
    if samples <= most:
        return 1
    return max(1, min(samples, math.ceil(samples / most)))


class Shuffle(Op):
    """Permute all samples uniformly at random (seeded), keeping the fields aligned.

    Config: ``seed`` (optional; default: the config's seed). Its memory comes from the
    pipeline's ``memory_mb``; temporary buckets need disk space for one copy of the samples
    reaching it.
    """

    name = "shuffle"
    keys = ("seed",)
    barrier = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        if "memory_mb" in config:
            raise ConfigError(
                f"op {self.name!r}: 'memory_mb' is a key of the config itself (the memory budget "
                "of the whole run), no longer of the shuffle op; move it to the top level"
            )
        super().__init__(config)
        self.buckets = 1
        self.piece_bytes = _PIECE_MAX
        self._has_split = False
        self._layout: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        self._fields: list[str] = []
        self._folders: list[Path] = []

    def barrier_begin(self, specs: dict[str, Spec], at: BarrierInput) -> int:
        """Choose the buckets for ``at.samples`` within ``at.memory_bytes`` (:func:`bucket_count`,
        counting every column the shuffle stores plus 8 bytes of the permutation per sample) and
        create their folders under ``at.workdir``; return the number of buckets."""
        self._has_split = at.has_split
        layout = {name: (spec.dtype, spec.sample_shape) for name, spec in specs.items()}
        layout[_INDEX] = (np.dtype(np.int64), ())
        if at.has_split:
            layout[_SPLIT] = (np.dtype(np.int8), ())
        self._layout = layout
        self._fields = list(specs)
        per_sample = sum(math.prod(shape) * dtype.itemsize for dtype, shape in layout.values())
        self.buckets = bucket_count(at.samples, per_sample + 8, at.memory_bytes)
        self.piece_bytes = int(max(1, min(_PIECE_MAX, at.memory_bytes / 16)))
        at.workdir.mkdir(parents=True)
        self._folders = [at.workdir / f"bucket-{b:05d}" for b in range(self.buckets)]
        for folder in self._folders:
            folder.mkdir()
        return self.buckets

    def barrier_scatter(self, block: Block) -> np.ndarray:
        """Pass 1 for one block: send each sample to a bucket drawn uniformly at random (seeded
        by the block's number), into files of the block's own; return the samples per bucket."""
        check_cancelled()
        assert block.key is not None, "the engine numbers the blocks"
        rng = np.random.default_rng([self.seed, 0x5F1E, block.key])
        columns = {name: to_host(values) for name, values in block.fields.items()}
        columns[_INDEX] = to_host(block.index)
        if self._has_split:
            columns[_SPLIT] = to_host(block.split)
        target = rng.integers(0, self.buckets, size=len(block))
        order = np.argsort(target, kind="stable")
        bounds = np.searchsorted(target[order], np.arange(self.buckets + 1))
        for b in np.flatnonzero(np.diff(bounds)).tolist():
            rows = order[bounds[b] : bounds[b + 1]]
            for name, values in columns.items():
                with open(self._part(b, block.key, name), "wb") as fh:
                    _write_rows(fh, values, rows, self.piece_bytes)
        return np.diff(bounds)

    def barrier_gather(self, unit: int, scattered: Sequence[Any]) -> int:
        """Pass 2 for bucket ``unit``: join its parts in block order and write each column in
        one uniform random order (seeded by the bucket's number); return its size.

        Run again (a cluster reruns the task of a worker that died), it gives the same files:
        the parts are deleted only once every column is in place, and a bucket found complete
        is left as it is."""
        folder = self._folders[unit]
        keys = [k for k, sizes in enumerate(scattered) if sizes[unit]]
        n = int(sum(scattered[k][unit] for k in keys))
        # Every column renamed into place (renames come before any part is deleted): done.
        if all(_count(folder / f"{name}.bin", *spec) == n for name, spec in self._layout.items()):
            self._drop_parts(unit, keys)
            return n
        perm = np.random.default_rng([self.seed, 0x5F1E, 1, unit]).permutation(n)
        for name, (dtype, shape) in self._layout.items():
            # One column at a time: the bucket's largest column, not all of them, is in memory.
            check_cancelled()
            parts = [
                _read(self._part(unit, k, name), dtype, shape, 0, int(scattered[k][unit]))
                for k in keys
            ]
            values = np.concatenate(parts) if parts else np.empty((0, *shape), dtype=dtype)
            del parts
            with open(folder / f"{name}.bin.new", "wb") as fh:
                _write_rows(fh, values, perm, self.piece_bytes)
            del values
        for name in self._layout:
            (folder / f"{name}.bin.new").replace(folder / f"{name}.bin")
        self._drop_parts(unit, keys)
        return n

    def _drop_parts(self, unit: int, keys: list[int]) -> None:
        for k in keys:
            for name in self._layout:
                self._part(unit, k, name).unlink(missing_ok=True)

    def barrier_end(self, scattered: Sequence[Any], gathered: Sequence[Any]) -> ShuffledSource:
        """The shuffled samples, readable any number of times (later ops may need several
        passes)."""
        sizes = [int(n) for n in gathered]
        return ShuffledSource(self._folders, sizes, self._layout, self._fields, self._has_split)

    def _part(self, bucket: int, key: int, name: str) -> Path:
        return self._folders[bucket] / f"part-{key:09d}-{name}.bin"

    def stats(self) -> dict[str, Any]:
        return {"buckets": self.buckets}


class ShuffledSource:
    """The shuffled samples on disk, read back in order, one bucket at a time."""

    def __init__(
        self,
        folders: list[Path],
        sizes: list[int],
        layout: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
        fields: list[str],
        has_split: bool,
    ) -> None:
        self.folders = folders
        self.sizes = sizes
        self.layout = layout
        self.fields = fields
        self.has_split = has_split

    def __len__(self) -> int:
        return sum(self.sizes)

    def units(self, block_samples: int) -> list[tuple[int, int, int]]:
        """The blocks of :meth:`blocks`, as ``(bucket, start, stop)``, in order."""
        return [
            (b, start, min(start + block_samples, n))
            for b, n in enumerate(self.sizes)
            for start in range(0, n, block_samples)
        ]

    def read(self, unit: tuple[int, int, int], key: int | None = None) -> Block:
        """The samples of one unit of :meth:`units`, as block number ``key``."""
        b, start, stop = unit
        folder = self.folders[b]
        return Block(
            {name: self._rows(folder, name, start, stop) for name in self.fields},
            self._rows(folder, _INDEX, start, stop),
            self._rows(folder, _SPLIT, start, stop) if self.has_split else None,
            key,
        )

    def blocks(self, block_samples: int) -> Iterator[Block]:
        for key, unit in enumerate(self.units(block_samples)):
            yield self.read(unit, key)

    def _rows(self, folder: Path, name: str, start: int, stop: int) -> np.ndarray:
        return _read(folder / f"{name}.bin", *self.layout[name], start, stop)


def _write_rows(fh: BinaryIO, values: np.ndarray, rows: np.ndarray, piece_bytes: int) -> None:
    """Append ``values[rows]`` to ``fh``, gathered in pieces of about ``piece_bytes``."""
    per = max(1, values[:1].nbytes)
    step = max(1, piece_bytes // per)
    for start in range(0, len(rows), step):
        values[rows[start : start + step]].tofile(fh)


def _count(path: Path, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    """Samples in a bucket file (0 when the bucket received none)."""
    per = math.prod(shape) * dtype.itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if per and size % per:
        raise StoreError(f"shuffle bucket {path} is damaged (size not a whole number of samples)")
    return size // per if per else 0


def _read(
    path: Path, dtype: np.dtype[Any], shape: tuple[int, ...], start: int, stop: int
) -> np.ndarray:
    """Samples ``[start, stop)`` of a bucket file, into fresh (anonymous) memory."""
    n = stop - start
    per = math.prod(shape)
    try:
        data = np.fromfile(path, dtype=dtype, count=n * per, offset=start * per * dtype.itemsize)
    except FileNotFoundError:
        data = np.empty(0, dtype=dtype)
    if data.size != n * per:
        raise StoreError(f"shuffle bucket {path} is damaged (expected {n} samples from {start})")
    return data.reshape((n, *shape))
