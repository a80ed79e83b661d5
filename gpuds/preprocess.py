"""The preprocess stage: a pipeline of ops, fitted in streaming passes, written to a new store.

Plan → fit → write (see :mod:`gpuds.ops.base` for the op contract). Every pass is a list of
tasks, one per block of its source, run by an executor (threads here or a Dask cluster,
:mod:`gpuds.execution`; the tasks are in :mod:`gpuds.passes`); the client merges their results in
block order, so the output does not depend on where they ran.

- **Plan.** The ops are built from the config and checked against the input's fields, in order,
  before any data is read.
- **Segments.** Barrier ops (``shuffle``, :attr:`gpuds.ops.Op.barrier`) cut the pipeline into
  segments. Each segment reads a *source*: the input store for the first, what the previous
  barrier left (the shuffled copy) for the next.
- **Fit.** For every op that needs statistics, one pass per fit pass: each task replays the ops
  before it in its segment on its block and returns what the op fitted on it
  (:meth:`gpuds.ops.Op.fit_partial`), merged in block order (:meth:`gpuds.ops.Op.fit_merge`).
  After an op that assigns splits (``split``), an op sees only the fit split (``fit_split``,
  default ``train``).
- **Barrier.** Its two passes as tasks: one per block (scatter), one per unit it made (gather).
- **Write.** When the last segment drops samples or assigns splits, a counting pass learns what
  each block keeps; then each task applies the last segment's ops and writes its block's whole
  chunks into the output (one subgroup per split) through :class:`gpuds.store.StoreWriter`'s
  handles, leaving the pieces of chunks blocks share in scratch space, which join tasks write;
  the client joins the digests and finishes the fields.

Memory stays within the config's ``memory_mb`` (plus the constant measured in
docs/preprocess.md): a block holds at most ``block_mb <= memory_mb / 8``, counted at 8 bytes per
value of the widest stage so that ops computing in float64 stay inside it, and in this process one
task runs at a time; a chunk per field and split may take ``memory_mb / 4``; a shuffle bucket
3/4 (:mod:`gpuds.ops.shuffle`). Every random choice is seeded from the config and the
block's number, and block boundaries depend only on the input and the config, so the same config
on the same input writes byte-identical arrays.
"""

from __future__ import annotations

import math
import pickle
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.backend import Backend, resolve
from gpuds.config import PipelineConfig
from gpuds.digest import DigestParts, FieldDigest
from gpuds.errors import ConfigError
from gpuds.execution import Executor, SchedulerSpec, open_executor, parse_scheduler
from gpuds.ops import Op, Spec, make_op
from gpuds.ops.base import BarrierInput, Replay
from gpuds.passes import (
    RangeTarget,
    ReplayBlocks,
    Seams,
    SharedChunk,
    StoreBlocks,
    count_task,
    fit_task,
    gather_task,
    join_task,
    merge_counts,
    pack_ops,
    scatter_task,
    seam_key,
    write_task,
)
from gpuds.progress import NullProgress, Progress
from gpuds.storage import location
from gpuds.store import (
    FIELD_ATTR,
    StoreInfo,
    StoreWriter,
    chunk_samples,
    chunk_samples_for,
    field_fingerprint,
    iter_fields,
    open_store,
    read_info,
)

__all__ = ["plan_pipeline", "preprocess"]

Source = StoreBlocks | ReplayBlocks
_JOIN_BYTES = 16 * 2**20
"""Bytes of the shared chunks one join task writes."""


def _op_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed for op ``index`` from the config's seed."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def _input_specs(group: zarr.Group) -> tuple[dict[str, Spec], dict[str, zarr.Array], int]:
    arrays = {name: array for split, name, array in iter_fields(group) if not split}
    if not arrays:
        raise ConfigError(f"{group.store_path}: the store holds no fields at its root")
    specs = {}
    for name, arr in arrays.items():
        attrs = arr.attrs.get(FIELD_ATTR)
        attrs = dict(attrs) if isinstance(attrs, dict) else {}
        attrs.pop("fingerprint", None)
        kind = str(attrs.pop("kind", "array"))
        specs[name] = Spec(np.dtype(arr.dtype), tuple(arr.shape[1:]), kind, attrs)
    lengths = {arr.shape[0] for arr in arrays.values()}
    if len(lengths) != 1:
        raise ConfigError(f"{group.store_path}: fields have different lengths {sorted(lengths)}")
    return specs, arrays, lengths.pop()


def _block_samples(stages: list[dict[str, Spec]], block_mb: float) -> int:
    """Samples per block: a power of two whose block stays within ``block_mb`` at every stage of
    the pipeline, each value counted at 8 bytes (at least its own size), since ops compute in
    float64: a uint8 image block of ``block_mb / 8`` makes float64 temporaries of ``block_mb``.

    Examples
    --------
    >>> _block_samples([{"x": Spec(np.dtype("uint8"), (32, 32, 3))}], 64.0)
    2048
    """
    widest = max(
        sum(max(8, s.dtype.itemsize) * math.prod(s.sample_shape) for s in stage.values())
        for stage in stages
    )
    return chunk_samples(max(1, widest), block_mb)


def _write_buffers(specs: dict[str, Spec], parts: int, chunk_mb: float, upper: int) -> int:
    """Bytes the writers may hold: one chunk per output field and split."""
    return parts * sum(
        chunk_samples_for(s.sample_nbytes, chunk_mb, upper) * s.sample_nbytes
        for s in specs.values()
    )


def plan_pipeline(
    config: PipelineConfig, specs: dict[str, Spec]
) -> tuple[list[Op], list[dict[str, Spec]], Op | None]:
    """Build and check the ops; return them, the fields reaching each op (plus the output's),
    and the op that assigns splits, if any."""
    ops: list[Op] = []
    stages = [specs]
    split: Op | None = None
    for i, op_config in enumerate(config.ops):
        where = f"ops[{i}]"
        op = make_op(op_config, where, seed=_op_seed(config.seed, i))
        if op.assigns_split:
            if split is not None:
                raise ConfigError(
                    f"{where}: only one op may assign splits ({split.name!r} already does)"
                )
            split = op
        elif (
            split is not None
            and op.fits_on_split
            and op.fit_passes
            and config.fit_split not in split.split_names
        ):
            raise ConfigError(
                f"{where}: fit_split {config.fit_split!r} is not one of the splits "
                f"{', '.join(split.split_names)}; set 'fit_split' in the config"
            )
        stages.append(op.plan(dict(stages[-1])))
        ops.append(op)
    return ops, stages, split


def _segments(ops: list[Op]) -> list[list[int]]:
    """Op indices grouped into segments, each ending with a barrier (except the last)."""
    segments: list[list[int]] = [[]]
    for i, op in enumerate(ops):
        segments[-1].append(i)
        if op.barrier:
            segments.append([])
    return segments


def preprocess(
    source: str | Path,
    out: str | Path,
    *,
    config: PipelineConfig | Mapping[str, Any],
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
    scheduler: str | SchedulerSpec | None = None,
) -> dict[str, Any]:
    """Run the pipeline ``config`` over the store ``source`` and write the store ``out``.

    Parameters
    ----------
    source
        A complete, unsplit gpuds store (e.g. from ``gpuds.ingest``): a local path or an
        object-store URL (docs/storage.md).
    out
        The store to create (a local path or a URL).
    config
        A :class:`~gpuds.config.PipelineConfig` or its mapping (as in a YAML config file).
    device
        ``auto`` (GPU when usable, else CPU), ``cpu`` or ``cuda``.
    storage_options
        Object-store settings for ``source`` and ``out`` (endpoint, region, credentials, ...).
    scheduler
        Where the passes' tasks run: ``threads`` (default), ``processes:N``, a Dask scheduler
        address or file, ``cuda`` (:func:`gpuds.execution.parse_scheduler`, docs/cluster.md).
        The output is the same whichever is used.

    Returns
    -------
    dict
        JSON-safe summary: samples in and out, per split, what each op dropped, fitted stats.

    Examples
    --------
    >>> gpuds.preprocess("raw.zarr", "prep.zarr", config={"ops": [
    ...     {"op": "shuffle"}, {"op": "split", "fractions": [0.8, 0.1, 0.1]},
    ...     {"op": "standardize", "fields": ["images"], "per": "channel"}]})   # doctest: +SKIP
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    cfg = config if isinstance(config, PipelineConfig) else PipelineConfig.from_dict(config)
    spec = scheduler if isinstance(scheduler, SchedulerSpec) else parse_scheduler(scheduler)
    group = open_store(source, storage_options=storage_options)
    info_in = read_info(group, parsed=True)
    if info_in.splits:
        raise ConfigError(
            f"{source}: the store is already split ({', '.join(info_in.splits)}); "
            "preprocess the unsplit store it came from"
        )
    specs, arrays, n_in = _input_specs(group)
    ops, stages, split = plan_pipeline(cfg, specs)
    # The device is chosen once the config is known to be valid, still before any data is read.
    backend = resolve(device)
    if backend.notice and device == "auto":
        progress.note(backend.notice)
    out_specs = stages[-1]
    names = list(split.split_names) if split else []
    parts = len(names) or 1
    buffers = _write_buffers(out_specs, parts, cfg.chunk_mb, n_in)
    if buffers > cfg.memory_mb * 2**20 / 4:
        raise ConfigError(
            f"the output's write buffers (one chunk per field and split: {len(out_specs)} fields "
            f"x {parts} split(s)) take {buffers / 2**20:.3g} MiB, more than memory_mb / 4 = "
            f"{cfg.memory_mb / 4:.3g} MiB; raise memory_mb to {4 * buffers / 2**20:.3g} or lower "
            "chunk_mb"
        )
    block = _block_samples(stages, cfg.block_mb)
    where = location(source, storage_options)
    identity = (str(info_in.created or ""), str(info_in.fingerprint or ""))
    input_blocks = StoreBlocks(
        where.url, where.options, identity, secrets.token_hex(8), tuple(arrays), n_in, block
    )
    with (
        open_executor(spec, progress=progress) as executor,
        StoreWriter(
            out, overwrite=overwrite, inputs=[source], storage_options=storage_options
        ) as writer,
    ):
        writer.check_reachable(executor)
        run = _Passes(executor, backend.name, progress, names, cfg.fit_split)
        src: Source = input_blocks
        src_len = n_in
        segments = _segments(ops)
        for k, segment in enumerate(segments):
            seg_ops = [ops[i] for i in segment]
            for j, i in enumerate(segment):
                for p in range(ops[i].fit_passes):
                    progress.start(f"fit {ops[i].name} (op {i + 1}, pass {p + 1})", src_len)
                    run.fit(src, seg_ops[: j + 1], p)
            if k < len(segments) - 1:
                has_split = split is not None and ops.index(split) < segment[-1]
                at = BarrierInput(
                    writer.workdir(f"{seg_ops[-1].name}-{segment[-1]}"),
                    src_len,
                    cfg.memory_mb * 2**20,
                    has_split,
                )
                progress.start(f"{seg_ops[-1].name} (op {segment[-1] + 1})", src_len)
                # A local output's work folder lies in its partial store, which was probed.
                probe = not writer.location.is_local
                replay = run.barrier(src, seg_ops, stages[segment[-1]], at, segment, probe)
                src, src_len = ReplayBlocks(replay, block), len(replay)
        progress.start("write", src_len)
        written = run.write(writer, src, segments[-1], ops, out_specs, cfg.chunk_mb, n_in)
        counts = [run.counts.get(i, op.counts()) for i, op in enumerate(ops)]
        info = _store_info(
            info_in, source, cfg, ops, counts, out_specs, names, written, backend, started
        )
        path = writer.commit(info)
    sizes = dict(written)
    return {
        "output": str(path),
        "device": backend.name,
        "scheduler": executor.description,
        "samples_in": n_in,
        "samples_out": sum(sizes.values()),
        "splits": sizes if split else {},
        "ops": [{"op": op.name, **c} for op, c in zip(ops, counts, strict=True)],
        "stats": info.stats,
        "seconds": round(time.perf_counter() - started, 3),
    }


class _Passes:
    """Runs the passes of one preprocess as tasks on ``executor`` and merges their results in
    block order: fits, the barrier's two passes, the count and the write."""

    def __init__(
        self,
        executor: Executor,
        device: str,
        progress: Progress,
        splits: list[str],
        fit_split: str,
    ) -> None:
        self.executor = executor
        self.device = device
        self.progress = progress
        self.splits = splits
        self.fit_index = splits.index(fit_split) if fit_split in splits else None
        self.counts: dict[int, dict[str, Any]] = {}
        """Counters of each op (by index) over its last apply pass."""

    def _map(
        self,
        fn: Callable[..., Any],
        tasks: list[tuple[Any, ...]],
        name: str,
        weights: list[int],
        consume: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        # In this process a task holds a block of the run's memory budget: one at a time.
        return self.executor.map(
            fn,
            tasks,
            name=name,
            weights=weights,
            progress=self.progress,
            in_flight=1,
            consume=consume,
        )

    def fit(self, source: Source, ops: list[Op], pass_index: int) -> None:
        """One fit pass of the last of ``ops``, after the ones before it."""
        op = ops[-1]
        op.fit_start(pass_index)
        units = source.units()
        tasks = [
            (source, unit, key, pack_ops(ops, key), pass_index, self.fit_index, self.device)
            for key, unit in enumerate(units)
        ]

        def merge(key: int, partial: Any) -> None:
            op.fit_merge(partial, pass_index)

        self._map(fit_task, tasks, f"fit-{op.name}", _weights(units), merge)
        op.fit_end(pass_index)

    def barrier(
        self,
        source: Source,
        ops: list[Op],
        specs: dict[str, Spec],
        at: BarrierInput,
        indices: list[int],
        probe: bool,
    ) -> Replay:
        """The barrier op (last of ``ops``) over the whole source, its two passes as tasks."""
        barrier = ops[-1]
        units = barrier.barrier_begin(specs, at)
        if probe:
            self.executor.check_shared(
                at.workdir,
                f"the {barrier.name} op keeps its temporary copy there: set TMPDIR to a folder "
                "on a shared filesystem that every worker mounts at the same path",
            )
        blocks = source.units()
        tasks = [
            (source, unit, key, pack_ops(ops, key), self.device) for key, unit in enumerate(blocks)
        ]
        scattered: list[Any] = []
        counts: list[dict[str, Any]] = [{} for _ in ops[:-1]]

        def keep(key: int, result: tuple[Any, list[dict[str, Any]]]) -> None:
            scattered.append(result[0])
            for total, more in zip(counts, result[1], strict=True):
                merge_counts(total, more)

        self._map(scatter_task, tasks, f"{barrier.name}-scatter", _weights(blocks), keep)
        for i, total in zip(indices, counts, strict=False):
            self.counts[i] = total
        packed = pickle.dumps(barrier, protocol=pickle.HIGHEST_PROTOCOL)
        gathered = self.executor.map(
            gather_task,
            [(packed, unit, scattered) for unit in range(units)],
            name=f"{barrier.name}-gather",
            in_flight=1,
        )
        return barrier.barrier_end(scattered, gathered)

    def write(
        self,
        writer: StoreWriter,
        source: Source,
        segment: list[int],
        ops: list[Op],
        specs: dict[str, Spec],
        chunk_mb: float,
        upper: int,
    ) -> dict[str, int]:
        """Apply the last segment's ops and write every block; return samples by split."""
        assert writer.group is not None
        seg_ops = [ops[i] for i in segment]
        units = source.units()
        names = self.splits or [""]
        per_block = self._counts(source, units, seg_ops, len(names))
        lengths = per_block.sum(axis=0)
        offsets = np.cumsum(per_block, axis=0) - per_block
        arrays: list[dict[str, zarr.Array]] = []
        for index, name in enumerate(names):
            if name:
                writer.group.create_group(name)
            arrays.append(
                {
                    f: writer.create_field(
                        f"{name}/{f}" if name else f,
                        spec.dtype,
                        spec.sample_shape,
                        length=int(lengths[index]),
                        chunk=chunk_samples_for(spec.sample_nbytes, chunk_mb, upper),
                        kind=spec.kind,
                        attrs=spec.attrs,
                    ).array
                    for f, spec in specs.items()
                }
            )
        joins = {
            (index, f): _Join(a, int(lengths[index]), specs[f].sample_nbytes, index)
            for index, fields in enumerate(arrays)
            for f, a in fields.items()
        }
        handles = [{f: writer.handle(a) for f, a in fields.items()} for fields in arrays]
        scratch = writer.scratch("seams")
        tasks = []
        for key, unit in enumerate(units):
            targets = [
                {
                    f: RangeTarget(
                        handle,
                        int(offsets[key, index]),
                        int(lengths[index]),
                        joins[(index, f)].chunk,
                    )
                    for f, handle in handles[index].items()
                }
                for index in range(len(names))
            ]
            tasks.append((source, unit, key, pack_ops(seg_ops, key), targets, scratch, self.device))
        counts: list[dict[str, Any]] = [{} for _ in seg_ops]

        def keep(key: int, result: tuple[dict[tuple[int, str], Seams], list[Any]]) -> None:
            for where, seams in result[0].items():
                joins[where].add(seams)
            for total, more in zip(counts, result[1], strict=True):
                merge_counts(total, more)

        self._map(write_task, tasks, "write", _weights(units), keep)
        for i, total in zip(segment, counts, strict=True):
            self.counts[i] = total
        # The chunks blocks share, joined from their pieces by tasks too: the client never holds
        # the data. A few MiB of chunks a task.
        jobs: list[tuple[tuple[int, str], list[SharedChunk]]] = []
        for (index, f), join in joins.items():
            shared = join.shared()
            per_task = max(1, _JOIN_BYTES // max(1, join.chunk * specs[f].sample_nbytes))
            for i in range(0, len(shared), per_task):
                jobs.append(((index, f), shared[i : i + per_task]))
        if jobs:
            self.progress.start("write the chunks blocks share", len(jobs))

            def joined(i: int, digest: DigestParts) -> None:
                joins[jobs[i][0]].digest.add(digest)

            self.executor.map(
                join_task,
                [
                    (handles[index][f], chunks, int(lengths[index]), scratch)
                    for (index, f), chunks in jobs
                ],
                name="join",
                progress=self.progress,
                in_flight=1,
                consume=joined,
            )
        scratch.clear()
        for join in joins.values():
            join.finish(writer)
        return {name: int(lengths[index]) for index, name in enumerate(names)}

    def _counts(self, source: Source, units: list[Any], ops: list[Op], parts: int) -> np.ndarray:
        """Samples each block keeps, by split: counted by a pass of the ops up to the last one
        that drops samples or assigns splits (the blocks' sizes when there is nothing to
        count)."""
        last = max((j for j, op in enumerate(ops) if op.drops or op.assigns_split), default=-1)
        if last < 0 and not self.splits:
            return np.array(_weights(units), dtype=np.int64).reshape(-1, 1)
        upto = ops[: last + 1]
        tasks = [
            (source, unit, key, pack_ops(upto, key), parts, self.device)
            for key, unit in enumerate(units)
        ]
        self.progress.start("count", sum(_weights(units)))
        found = self._map(count_task, tasks, "count", _weights(units))
        self.progress.start("write", sum(_weights(units)))
        return np.array(found, dtype=np.int64).reshape(len(units), parts)


class _Join:
    """One output field of one split: joins what the write tasks return (digest parts, the
    pieces of the chunks blocks share) and finishes the field."""

    def __init__(self, array: zarr.Array, length: int, sample_nbytes: int, part: int) -> None:
        self.array = array
        self.length = length
        self.part = part
        self.chunk = int(array.chunks[0])
        self.digest = FieldDigest(length, sample_nbytes)
        self.pieces: dict[int, list[tuple[int, int]]] = {}

    def add(self, seams: Seams) -> None:
        self.digest.add(seams.digest)
        for start, n in seams.pieces:
            self.pieces.setdefault(start // self.chunk, []).append((start, n))

    def shared(self) -> list[SharedChunk]:
        """The chunks blocks share, each with its pieces in order; every chunk must be whole."""
        name = self.array.basename
        found = []
        for c, pieces in sorted(self.pieces.items()):
            a, b = c * self.chunk, min((c + 1) * self.chunk, self.length)
            pieces.sort()
            at = a
            for start, n in pieces:
                if start != at:  # a bug of the engine, not of the data
                    raise RuntimeError(f"{self.array.path}: chunk {c} has a gap at {at}")
                at += n
            if at != b:
                raise RuntimeError(f"{self.array.path}: chunk {c} is not filled")
            keys = tuple(seam_key(self.part, name, start) for start, _ in pieces)
            found.append(SharedChunk(a, b, keys))
        return found

    def finish(self, writer: StoreWriter) -> None:
        writer.finish_field(
            self.array,
            field_fingerprint(self.digest.digest(), self.array.dtype, self.array.shape),
        )


def _weights(units: list[Any]) -> list[int]:
    """Samples of each unit of a source (units end with their ``start, stop``)."""
    return [int(u[-1]) - int(u[-2]) for u in units]


def _store_info(
    info_in: StoreInfo,
    source: str | Path,
    cfg: PipelineConfig,
    ops: list[Op],
    counts: list[dict[str, Any]],
    specs: dict[str, Spec],
    splits: list[str],
    written: dict[str, int],
    backend: Backend,
    started: float,
) -> StoreInfo:
    """The output's metadata: the input's sources and history, and what the pipeline made."""
    stats = [
        {"op": op.name, "index": i, "fields": op.config.get("fields"), "stats": fitted}
        for i, op in enumerate(ops)
        if (fitted := op.stats())
    ]
    settings = cfg.to_dict()
    settings["ops"] = [{**op.to_dict(), "seed": op.seed} for op in ops]
    return info_in.next_stage(
        "preprocess",
        source,
        {**settings, "device": backend.name},
        started,
        counts=[{"op": op.name, **c} for op, c in zip(ops, counts, strict=True)],
        num_samples=sum(written.values()),
        splits=splits,
        split_sizes=written if splits else {},
        fields={f: s.kind for f, s in specs.items()},
        classes={f: list(s.attrs["classes"]) for f, s in specs.items() if "classes" in s.attrs},
        stats={"ops": stats},
    )
