"""The tasks of the preprocess stage: what runs on one block of a pass, wherever it runs.

A pass reads its *source* (the input store, or what a barrier op left) as numbered blocks; the
engine (:mod:`gpuds.preprocess`) hands one task per block to an executor (threads or a Dask
cluster, :mod:`gpuds.execution`) and merges the results on the client in block order. Tasks get
plain, picklable data only: the source (:class:`StoreBlocks`, :class:`ReplayBlocks`), the block's
unit and number, and the ops pickled as the block needs them (:meth:`gpuds.ops.Op.for_block`),
which every task unpickles into copies of its own, so that threads and cluster workers run the
very same code on the very same state.

- :func:`fit_task`: replay the ops before an op and return what the op fitted on the block.
- :func:`scatter_task` / :func:`gather_task`: the two passes of a barrier op (``shuffle``).
- :func:`count_task`: how many samples of each split the block keeps (to place the writes).
- :func:`write_task`: apply every op and write the block's samples into the output arrays; whole
  chunks are written by the task, the pieces of chunks shared with neighbouring blocks go to the
  run's scratch space (:class:`Seams`), and :func:`join_task` writes those chunks once the
  client knows every piece is there. The client never holds the data.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.backend import array_module, resolve, to_device, to_host
from gpuds.chunks import FieldChunks, field_label
from gpuds.digest import DigestParts, range_digest
from gpuds.errors import StoreError
from gpuds.execution import unseen_here
from gpuds.ops import Block, Op
from gpuds.ops.base import Replay
from gpuds.progress import check_cancelled
from gpuds.storage import is_url
from gpuds.store import ArrayHandle, Scratch, open_store, read_info

__all__ = [
    "RangeTarget",
    "ReplayBlocks",
    "Seams",
    "SharedChunk",
    "StoreBlocks",
    "count_task",
    "fit_task",
    "gather_task",
    "join_task",
    "merge_counts",
    "pack_ops",
    "scatter_task",
    "seam_key",
    "write_task",
]


@dataclass(frozen=True)
class StoreBlocks:
    """The root fields of a store, read in blocks of ``block`` samples."""

    url: str
    storage_options: tuple[tuple[str, str], ...]
    identity: tuple[str, str]
    """The store's recorded creation time and fingerprint, as the client saw them: a worker that
    finds another store there (replaced meanwhile, or another copy) refuses to read it."""
    run: str
    """A token of the run: tasks of one run share an opened store, the next run opens it anew."""
    fields: tuple[str, ...]
    length: int
    block: int

    def units(self) -> list[tuple[int, int]]:
        return [
            (start, min(start + self.block, self.length))
            for start in range(0, self.length, self.block)
        ]

    def read(self, unit: tuple[int, int], key: int) -> Block:
        start, stop = unit
        chunks = _input_fields(self.url, self.storage_options, self.identity, self.run, self.fields)
        return Block(
            {name: chunks[name].read_range(start, stop) for name in self.fields},
            np.arange(start, stop, dtype=np.int64),
            None,
            key,
        )


@functools.lru_cache(maxsize=4)
def _input_fields(
    url: str,
    options: tuple[tuple[str, str], ...],
    identity: tuple[str, str],
    run: str,
    fields: tuple[str, ...],
) -> dict[str, FieldChunks]:
    if not is_url(url) and not Path(url).exists():
        raise StoreError(unseen_here(url))
    group = open_store(url, storage_options=dict(options) or None)
    info = read_info(group)
    if (str(info.get("created", "")), str(info.get("fingerprint", ""))) != identity:
        raise StoreError(
            f"{url}: the store found there is not the one the run started with (replaced "
            "meanwhile, or the workers see another copy of it); rerun on an unchanged input"
        )
    found = {}
    for name in fields:
        array = group[name]
        assert isinstance(array, zarr.Array), "the client checked the store's fields"
        found[name] = FieldChunks(array, field_label(url, "", name))
    return found


@dataclass(frozen=True)
class ReplayBlocks:
    """What a barrier op left (:class:`gpuds.ops.base.Replay`), read in blocks."""

    replay: Replay
    block: int

    def units(self) -> list[Any]:
        return self.replay.units(self.block)

    def read(self, unit: Any, key: int) -> Block:
        return self.replay.read(unit, key)


Source = StoreBlocks | ReplayBlocks


def pack_ops(ops: Sequence[Op], key: int) -> bytes:
    """The ops as block ``key`` needs them, pickled: each task unpickles copies of its own."""
    return pickle.dumps([op.for_block(key) for op in ops], protocol=pickle.HIGHEST_PROTOCOL)


def _read(source: Source, unit: Any, key: int, device: str) -> Block:
    block = source.read(unit, key)
    if device == "cpu":
        return block
    backend = resolve(device)
    return Block(
        {name: to_device(v, backend) for name, v in block.fields.items()},
        to_device(block.index, backend),
        None if block.split is None else to_device(block.split, backend),
        key,
    )


def _apply(ops: Sequence[Op], block: Block) -> Block | None:
    """``ops`` (reset first) applied to ``block``; None when they leave nothing."""
    for op in ops:
        op.reset()
    for op in ops:
        block = op.apply(block)
        if not len(block):
            return None
    return block


def fit_task(
    source: Source,
    unit: Any,
    key: int,
    packed: bytes,
    pass_index: int,
    fit_split: int | None,
    device: str,
) -> Any:
    """Fit the last of the ``packed`` ops on block ``key`` after the ops before it; return what
    it fitted (:meth:`gpuds.ops.Op.fit_partial`). ``fit_split``: after a split, an op that fits on
    the fit split sees that split's samples only."""
    ops: list[Op] = pickle.loads(packed)
    op = ops[-1]
    block = _apply(ops[:-1], _read(source, unit, key, device))
    if block is not None and block.split is not None and op.fits_on_split:
        block = block.select(block.split == fit_split)
    if block is not None and len(block):
        op.fit_block(block)
    return op.fit_partial(pass_index)


def scatter_task(
    source: Source, unit: Any, key: int, packed: bytes, device: str
) -> tuple[Any, list[dict[str, Any]]]:
    """The first pass of the barrier op (the last of ``packed``) on block ``key`` after the ops
    before it; also the counters of those ops on the block."""
    ops: list[Op] = pickle.loads(packed)
    block = _read(source, unit, key, device)
    empty = block.select(array_module(block.index).zeros(len(block), dtype=bool))
    applied = _apply(ops[:-1], block)
    scattered = ops[-1].barrier_scatter(applied if applied is not None else empty)
    return scattered, [op.counts() for op in ops[:-1]]


def gather_task(packed: bytes, unit: int, scattered: Sequence[Any]) -> Any:
    """The second pass of the barrier op (pickled alone) on its unit ``unit``."""
    op: Op = pickle.loads(packed)
    return op.barrier_gather(unit, scattered)


def count_task(
    source: Source, unit: Any, key: int, packed: bytes, parts: int, device: str
) -> np.ndarray:
    """Samples of each of ``parts`` splits (one part: all samples) that block ``key`` keeps
    after the ``packed`` ops."""
    ops: list[Op] = pickle.loads(packed)
    block = _apply(ops, _read(source, unit, key, device))
    if block is None:
        return np.zeros(parts, dtype=np.int64)
    if block.split is None:
        return np.array([len(block)] + [0] * (parts - 1), dtype=np.int64)
    return np.bincount(to_host(block.split).astype(np.int64), minlength=parts)[:parts]


@dataclass(frozen=True)
class RangeTarget:
    """Where a task writes one field of one split: samples from ``start`` of an array of
    ``length`` samples in chunks of ``chunk``."""

    handle: ArrayHandle
    start: int
    length: int
    chunk: int


@dataclass
class Seams:
    """What a task wrote of one field: the content digest parts of the chunks it wrote, and the
    pieces of chunks it shares with other blocks, ``(first sample, samples)``, each within one
    chunk, which it left in the run's scratch space (:func:`seam_key`) for :func:`join_task`."""

    digest: DigestParts
    pieces: list[tuple[int, int]]


def seam_key(part: int, name: str, start: int) -> str:
    """The scratch object of the piece of split ``part``'s field ``name`` from ``start``."""
    return f"{part}/{name}/{start:013d}"


def write_task(
    source: Source,
    unit: Any,
    key: int,
    packed: bytes,
    targets: Sequence[Mapping[str, RangeTarget]],
    scratch: Scratch,
    device: str,
) -> tuple[dict[tuple[int, str], Seams], list[dict[str, Any]]]:
    """Apply the ``packed`` ops to block ``key`` and write its samples: split ``i``'s into
    ``targets[i]`` (one target per field; a single part without splits). Returns the seams by
    (part, field) and the ops' counters on the block."""
    ops: list[Op] = pickle.loads(packed)
    block = _apply(ops, _read(source, unit, key, device))
    written: dict[tuple[int, str], Seams] = {}
    if block is not None:
        split = None if block.split is None or len(targets) == 1 else block.split
        for index, fields in enumerate(targets):
            part = block if split is None else block.select(split == index)
            if not len(part):
                continue
            for name, target in fields.items():
                values = to_host(part.fields[name])
                written[(index, name)] = _write_range(target, values, scratch, index, name)
    return written, [op.counts() for op in ops]


def _write_range(
    target: RangeTarget, values: np.ndarray, scratch: Scratch, part: int, name: str
) -> Seams:
    """Write the whole chunks of ``values`` (at ``target.start``), and hash them; leave the
    rest in ``scratch`` as pieces within one chunk each."""
    array = target.handle.open()
    values = np.ascontiguousarray(values, dtype=array.dtype)
    start, stop, chunk = target.start, target.start + len(values), target.chunk
    first = -(-start // chunk) * chunk  # the first chunk boundary at or after start
    last = stop if stop == target.length else stop // chunk * chunk
    rest: list[tuple[int, int]] = [(start, stop)]
    digest = DigestParts()
    if first < last:
        whole = values[first - start : last - start]
        array[first:last] = whole
        digest = range_digest(whole, first, target.length)
        rest = [(start, first), (last, stop)]
    pieces = []
    for a, b in rest:
        # Cut at chunk boundaries: each piece lies within one chunk.
        while a < b:
            end = min(b, (a // chunk + 1) * chunk)
            scratch.put(seam_key(part, name, a), values[a - start : end - start].data)
            pieces.append((a, end - a))
            a = end
    return Seams(digest, pieces)


@dataclass(frozen=True)
class SharedChunk:
    """A chunk that several blocks wrote pieces of: samples ``[start, stop)`` of a field."""

    start: int
    stop: int
    keys: tuple[str, ...]
    """Its pieces' scratch objects, in sample order."""


def join_task(
    handle: ArrayHandle, chunks: Sequence[SharedChunk], length: int, scratch: Scratch
) -> DigestParts:
    """Join the pieces of each of ``chunks`` (of a field of ``length`` samples), write the
    chunk and hash it."""
    array = handle.open()
    digest = DigestParts()
    for chunk in chunks:
        check_cancelled()
        # Read, not deleted: a task run again (its worker died) finds them again.
        data = b"".join(scratch.get(key) for key in chunk.keys)
        values = np.frombuffer(data, dtype=array.dtype).reshape((-1, *array.shape[1:]))
        if len(values) != chunk.stop - chunk.start:  # a bug of the engine, not of the data
            raise RuntimeError(f"{handle.path}: pieces of chunk {chunk.start} do not fill it")
        array[chunk.start : chunk.stop] = values
        parts = range_digest(values, chunk.start, length)
        digest.whole.update(parts.whole)
        digest.cut += parts.cut
    return digest


def merge_counts(total: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Op counters summed key by key (nested counters too).

    Examples
    --------
    >>> merge_counts({"kept": 2, "by": {"x": 1}}, {"kept": 3, "by": {"x": 1, "y": 2}})
    {'kept': 5, 'by': {'x': 2, 'y': 2}}
    """
    for name, value in more.items():
        if isinstance(value, Mapping):
            total[name] = merge_counts(dict(total.get(name, {})), value)
        else:
            total[name] = total.get(name, 0) + value
    return total
