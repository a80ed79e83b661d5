"""``shuffle``: a uniform random permutation of the whole dataset, in bounded memory.

The engine treats ``shuffle`` as a barrier: the samples reaching it are written to temporary
*buckets* on disk (inside the output's partial folder), permuted, and the ops after it stream from
that shuffled copy as often as they need to; it is deleted before the output is committed.

Algorithm (a two-pass bucket shuffle, after Rao 1961 and Sandelius 1962): pass 1 sends each
sample to one of ``B`` buckets chosen uniformly and independently at random, appending it to that
bucket's files; pass 2 loads one bucket at a time, permutes it uniformly, and emits the buckets
in order. Every permutation of the samples is equally likely: the bucket sizes and contents are
exchangeable, and within a bucket every order is equally likely. ``B`` is the smallest number of
buckets whose expected size fits the memory budget (``memory_mb``, default 512 MiB), so memory
holds one bucket (its size varies by a few standard deviations around the mean) plus one block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpuds.backend import to_host
from gpuds.errors import StoreError
from gpuds.ops.base import Block, Op, Spec, parse_number
from gpuds.progress import check_cancelled

__all__ = ["DEFAULT_MEMORY_MB", "Shuffle", "ShuffledSource"]

DEFAULT_MEMORY_MB = 512.0
_INDEX = "__index"
_SPLIT = "__split"


class Shuffle(Op):
    """Permute all samples uniformly at random (seeded), keeping the fields aligned.

    Config: ``seed`` (optional; default: the config's seed), ``memory_mb`` (bucket budget,
    default 512). Temporary buckets need disk space for one copy of the samples reaching it.
    """

    name = "shuffle"
    keys = ("seed", "memory_mb")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        where = "op 'shuffle'"
        if "seed" in config:
            self.seed = int(parse_number(config["seed"], f"{where}: seed", minimum=0))
        self.memory_mb = parse_number(
            config.get("memory_mb", DEFAULT_MEMORY_MB), f"{where}: memory_mb", minimum=1e-3
        )
        self.buckets = 1

    def plan_buckets(self, samples: int, sample_nbytes: int) -> int:
        """Choose the number of buckets for ``samples`` of ``sample_nbytes`` each."""
        total = samples * max(1, sample_nbytes)
        self.buckets = max(1, math.ceil(total / (self.memory_mb * 2**20)))
        return self.buckets

    def materialize(
        self,
        blocks: Iterator[Block],
        specs: dict[str, Spec],
        workdir: Path,
        has_split: bool,
    ) -> ShuffledSource:
        """Consume ``blocks`` into buckets under ``workdir`` and permute each bucket in place.

        The result can be read any number of times (later ops may need several passes).
        """
        rng = np.random.default_rng([self.seed, 0x5F1E])
        layout = {name: (spec.dtype, spec.sample_shape) for name, spec in specs.items()}
        layout[_INDEX] = (np.dtype(np.int64), ())
        if has_split:
            layout[_SPLIT] = (np.dtype(np.int8), ())
        workdir.mkdir(parents=True)
        folders = [workdir / f"bucket-{b:05d}" for b in range(self.buckets)]
        for folder in folders:
            folder.mkdir()
        for block in blocks:
            check_cancelled()
            columns = {name: to_host(values) for name, values in block.fields.items()}
            columns[_INDEX] = to_host(block.index)
            if has_split:
                columns[_SPLIT] = to_host(block.split)
            target = rng.integers(0, self.buckets, size=len(block))
            order = np.argsort(target, kind="stable")
            bounds = np.searchsorted(target[order], np.arange(self.buckets + 1))
            for b in np.flatnonzero(np.diff(bounds)).tolist():
                rows = order[bounds[b] : bounds[b + 1]]
                for name, values in columns.items():
                    with open(folders[b] / f"{name}.bin", "ab") as fh:
                        fh.write(np.ascontiguousarray(values[rows]).tobytes())
        sizes = []
        for folder in folders:
            check_cancelled()
            bucket = {name: _read(folder / f"{name}.bin", *layout[name]) for name in layout}
            n = len(bucket[_INDEX])
            perm = rng.permutation(n)
            for name, values in bucket.items():
                (folder / f"{name}.bin").write_bytes(np.ascontiguousarray(values[perm]).tobytes())
            sizes.append(n)
        return ShuffledSource(folders, sizes, layout, list(specs), has_split)

    def stats(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "memory_mb": self.memory_mb}


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

    def blocks(self, block_samples: int) -> Iterator[Block]:
        for folder, n in zip(self.folders, self.sizes, strict=True):
            if n == 0:
                continue
            columns = {
                name: np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r", shape=(n, *shape))
                for name, (dtype, shape) in self.layout.items()
            }
            for start in range(0, n, block_samples):
                stop = min(start + block_samples, n)
                yield Block(
                    {name: np.array(columns[name][start:stop]) for name in self.fields},
                    np.array(columns[_INDEX][start:stop]),
                    np.array(columns[_SPLIT][start:stop]) if self.has_split else None,
                )


def _read(path: Path, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    if not path.exists():
        return np.empty((0, *shape), dtype=dtype)
    data = np.fromfile(path, dtype=dtype)
    per = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if per and data.size % per:
        raise StoreError(f"shuffle bucket {path} is damaged (size not a whole number of samples)")
    return data.reshape((-1, *shape))
