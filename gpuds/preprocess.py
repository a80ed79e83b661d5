"""The preprocess stage: a pipeline of ops, fitted in streaming passes, written to a new store.

Plan → fit → write (see :mod:`gpuds.ops.base` for the op contract):

- **Plan.** The ops are built from the config and checked against the input's fields, in order,
  before any data is read.
- **Segments.** Barrier ops (``shuffle``, :attr:`gpuds.ops.Op.barrier`) cut the pipeline into
  segments. Each segment reads a *source*: the input store for the first, what the previous
  barrier left (the shuffled copy) for the next.
- **Fit.** For every op that needs statistics, one streaming pass per fit pass replays the ops
  before it in its segment over the segment's source and feeds the op, block by block. After an
  op that assigns splits (``split``), an op sees only the fit split (``fit_split``, default
  ``train``).
- **Write.** A last pass applies every op of the last segment and writes each block to the output
  (one subgroup per split), chunk by chunk, through :class:`gpuds.store.StoreWriter`.

Memory stays within the config's ``memory_mb`` (plus the constant measured in
docs/preprocess.md): a block holds at most ``block_mb <= memory_mb / 8``, counted at 8 bytes per
value of the widest stage so that ops computing in float64 stay inside it, and a pass holds a few
blocks; the write buffers (one chunk per output field and split) may take ``memory_mb / 4``; a
shuffle bucket 3/4 (:mod:`gpuds.ops.shuffle`). Passes drop each block before reading the next.
``dedupe`` additionally keeps one 16-byte digest per unique sample. Every random choice is seeded
from the config, and block boundaries depend only on the input and the config, so the same config
on the same input writes byte-identical arrays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.backend import Backend, resolve, to_device, to_host
from gpuds.chunks import FieldChunks, field_label
from gpuds.config import PipelineConfig
from gpuds.errors import ConfigError
from gpuds.ops import Block, Op, Spec, make_op
from gpuds.ops.base import BarrierInput, Replay
from gpuds.progress import NullProgress, Progress, check_cancelled
from gpuds.store import (
    FIELD_ATTR,
    FieldWriter,
    StoreInfo,
    StoreWriter,
    chunk_samples,
    chunk_samples_for,
    iter_fields,
    open_store,
    read_info,
)

__all__ = ["plan_pipeline", "preprocess"]

Source = Callable[[], Iterator[Block]]


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


def _run(source: Source, ops: list[Op]) -> Iterator[Block]:
    """Apply ``ops`` (reset first) to every block of ``source``.

    Every loop over blocks in this module drops its block before asking for the next: the loop
    variable would otherwise keep it alive while the next one is read.
    """
    for op in ops:
        op.reset()
    for block in source():
        check_cancelled()
        for op in ops:
            block = op.apply(block)
            if not len(block):
                break
        if len(block):
            yield block
        del block


def preprocess(
    source: str | Path,
    out: str | Path,
    *,
    config: PipelineConfig | Mapping[str, Any],
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
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
    memory = cfg.memory_mb * 2**20
    names = list(split.split_names) if split else []
    parts = len(names) or 1
    buffers = _write_buffers(out_specs, parts, cfg.chunk_mb, n_in)
    if buffers > memory / 4:
        raise ConfigError(
            f"the output's write buffers (one chunk per field and split: {len(out_specs)} fields "
            f"x {parts} split(s)) take {buffers / 2**20:.3g} MiB, more than memory_mb / 4 = "
            f"{cfg.memory_mb / 4:.3g} MiB; raise memory_mb to {4 * buffers / 2**20:.3g} or lower "
            "chunk_mb"
        )
    block = _block_samples(stages, cfg.block_mb)
    fit_index = names.index(cfg.fit_split) if cfg.fit_split in names else 0

    inputs = {
        name: FieldChunks(arr, field_label(str(source), "", name)) for name, arr in arrays.items()
    }

    def read_input() -> Iterator[Block]:
        for start in range(0, n_in, block):
            stop = min(start + block, n_in)
            progress.advance(stop - start)
            # No local keeps the block: the consumer frees it before asking for the next.
            yield Block(
                {
                    name: to_device(chunks.read_range(start, stop), backend)
                    for name, chunks in inputs.items()
                },
                backend.xp.arange(start, stop, dtype=backend.xp.int64),
            )

    with StoreWriter(
        out, overwrite=overwrite, inputs=[source], storage_options=storage_options
    ) as writer:
        src: Source = read_input
        src_len = n_in
        segments = _segments(ops)
        for k, segment in enumerate(segments):
            seg_ops = [ops[i] for i in segment]
            for j, i in enumerate(segment):
                op = ops[i]
                for p in range(op.fit_passes):
                    progress.start(f"fit {op.name} (op {i + 1}, pass {p + 1})", src_len)
                    op.fit_start(p)
                    for b in _run(src, seg_ops[:j]):
                        if b.split is not None and op.fits_on_split:
                            b = b.select(b.split == fit_index)
                        if len(b):
                            op.fit_block(b)
                        del b
                    op.fit_end(p)
            if k < len(segments) - 1:
                barrier = seg_ops[-1]
                has_split = split is not None and ops.index(split) < segment[-1]
                progress.start(f"{barrier.name} (op {segment[-1] + 1})", src_len)
                at = BarrierInput(
                    writer.workdir(f"{barrier.name}-{segment[-1]}"), src_len, memory, has_split
                )
                left = barrier.materialize(_run(src, seg_ops[:-1]), stages[segment[-1]], at)
                src, src_len = _replay_reader(left, block, backend, progress), len(left)
        progress.start("write", src_len)
        last_ops = [ops[i] for i in segments[-1]]
        written = _write(writer, _run(src, last_ops), out_specs, names, n_in, cfg.chunk_mb)
        info = _store_info(info_in, source, cfg, ops, out_specs, names, written, backend, started)
        path = writer.commit(info)
    sizes = dict(written)
    return {
        "output": str(path),
        "device": backend.name,
        "samples_in": n_in,
        "samples_out": sum(sizes.values()),
        "splits": sizes if split else {},
        "ops": [{"op": op.name, **op.counts()} for op in ops],
        "stats": info.stats,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _replay_reader(left: Replay, block: int, backend: Backend, progress: Progress) -> Source:
    """Read what a barrier left, block by block, onto the run's device."""

    def read() -> Iterator[Block]:
        for b in left.blocks(block):
            progress.advance(len(b))
            yield Block(
                {name: to_device(v, backend) for name, v in b.fields.items()},
                to_device(b.index, backend),
                None if b.split is None else to_device(b.split, backend),
            )
            del b

    return read


def _write(
    writer: StoreWriter,
    blocks: Iterator[Block],
    specs: dict[str, Spec],
    splits: list[str],
    upper: int,
    chunk_mb: float,
) -> dict[str, int]:
    """Write the blocks, into one subgroup per split of ``splits`` (at the root without);
    return the samples written by split (``""`` without)."""
    assert writer.group is not None
    names = splits or [""]
    fields: dict[str, dict[str, FieldWriter]] = {}
    for name in names:
        if name:
            writer.group.create_group(name)
        fields[name] = {
            f: writer.create_field(
                f"{name}/{f}" if name else f,
                spec.dtype,
                spec.sample_shape,
                length=upper,
                chunk=chunk_samples_for(spec.sample_nbytes, chunk_mb, upper),
                kind=spec.kind,
                attrs=spec.attrs,
            )
            for f, spec in specs.items()
        }
    appended = dict.fromkeys(names, 0)
    for b in blocks:
        for index, name in enumerate(names):
            part = b if not splits else b.select(b.split == index)
            for f, fw in fields[name].items():
                _append(fw, to_host(part.fields[f]), appended[name] - fw.count)
            appended[name] += len(part)
            del part
        del b
    for fws in fields.values():
        for fw in fws.values():
            fw.finish()
    return {name: next(iter(fws.values())).count if fws else 0 for name, fws in fields.items()}


def _append(fw: FieldWriter, values: np.ndarray, pending: int) -> None:
    """Append ``values`` to ``fw``, which holds ``pending`` samples short of a whole chunk.

    :class:`FieldWriter` joins what it holds with the next append and keeps the part short of a
    chunk as a view. Handing it a copy of the head that completes its chunk, then whole chunks,
    then a copy of the tail keeps it from copying whole blocks or pinning one through a view: it
    holds less than one chunk between blocks.
    """
    chunk = fw.chunk
    head = min(len(values), (chunk - pending) % chunk)
    body = head + (len(values) - head) // chunk * chunk
    for piece in (values[:head].copy(), values[head:body], values[body:].copy()):
        if len(piece):
            fw.append(piece)


def _store_info(
    info_in: StoreInfo,
    source: str | Path,
    cfg: PipelineConfig,
    ops: list[Op],
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
        counts=[{"op": op.name, **op.counts()} for op in ops],
        num_samples=sum(written.values()),
        splits=splits,
        split_sizes=written if splits else {},
        fields={f: s.kind for f, s in specs.items()},
        classes={f: list(s.attrs["classes"]) for f, s in specs.items() if "classes" in s.attrs},
        stats={"ops": stats},
    )
