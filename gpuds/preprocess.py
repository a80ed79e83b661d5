"""The preprocess stage: a pipeline of ops, fitted in streaming passes, written to a new store.

Plan → fit → write (see :mod:`gpuds.ops.base` for the op contract):

- **Plan.** The ops are built from the config and checked against the input's fields, in order,
  before any data is read.
- **Segments.** ``shuffle`` ops cut the pipeline into segments. Each segment reads a *source*:
  the input store for the first, the shuffled copy left by the previous ``shuffle`` for the next.
- **Fit.** For every op that needs statistics, one streaming pass per fit pass replays the ops
  before it in its segment over the segment's source and feeds the op, block by block. After a
  ``split`` the op sees only the fit split (``fit_split``, default ``train``).
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
from gpuds.ops.shuffle import Shuffle
from gpuds.ops.split import Split
from gpuds.progress import NullProgress, Progress, check_cancelled
from gpuds.store import (
    FIELD_ATTR,
    FieldWriter,
    StoreWriter,
    chunk_samples,
    chunk_samples_for,
    dataset_fingerprint,
    open_store,
    read_info,
    utc_now,
)

__all__ = ["plan_pipeline", "preprocess"]

Source = Callable[[], Iterator[Block]]


def _op_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed for op ``index`` from the config's seed."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def _input_specs(group: zarr.Group) -> tuple[dict[str, Spec], dict[str, zarr.Array], int]:
    arrays = dict(sorted(group.arrays(), key=lambda kv: kv[0]))
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
) -> tuple[list[Op], list[dict[str, Spec]], Split | None]:
    """Build and check the ops; return them, the fields reaching each op (plus the output's)."""
    ops: list[Op] = []
    stages = [specs]
    split: Split | None = None
    for i, op_config in enumerate(config.ops):
        where = f"ops[{i}]"
        op = make_op(op_config, where)
        if "seed" not in op_config:
            op.seed = _op_seed(config.seed, i)
        if isinstance(op, Split):
            if split is not None:
                raise ConfigError(f"{where}: only one 'split' op is allowed")
            split = op
        elif (
            split is not None
            and op.fits_on_split
            and op.fit_passes
            and config.fit_split not in split.names
        ):
            raise ConfigError(
                f"{where}: fit_split {config.fit_split!r} is not one of the splits "
                f"{', '.join(split.names)}; set 'fit_split' in the config"
            )
        stages.append(op.plan(dict(stages[-1])))
        ops.append(op)
    return ops, stages, split


def _segments(ops: list[Op]) -> list[list[int]]:
    """Op indices grouped into segments, each ending with a shuffle (except the last)."""
    segments: list[list[int]] = [[]]
    for i, op in enumerate(ops):
        segments[-1].append(i)
        if isinstance(op, Shuffle):
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
) -> dict[str, Any]:
    """Run the pipeline ``config`` over the store ``source`` and write the store ``out``.

    Parameters
    ----------
    source
        A complete, unsplit gpuds store (e.g. from ``gpuds.ingest``).
    out
        The store to create.
    config
        A :class:`~gpuds.config.PipelineConfig` or its mapping (as in a YAML config file).
    device
        ``auto`` (GPU when usable, else CPU), ``cpu`` or ``cuda``.

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
    group = open_store(source)
    info_in = read_info(group)
    if info_in.get("splits"):
        raise ConfigError(
            f"{source}: the store is already split ({', '.join(info_in['splits'])}); "
            "preprocess the unsplit store it came from"
        )
    specs, arrays, n_in = _input_specs(group)
    ops, stages, split = plan_pipeline(cfg, specs)
    # The device is chosen once the config is known to be valid, still before any data is read.
    backend = resolve(device)
    if backend.reason and device == "auto":
        progress.note(backend.reason)
    out_specs = stages[-1]
    memory = cfg.memory_mb * 2**20
    parts = len(split.names) if split else 1
    buffers = _write_buffers(out_specs, parts, cfg.chunk_mb, n_in)
    if buffers > memory / 4:
        raise ConfigError(
            f"the output's write buffers (one chunk per field and split: {len(out_specs)} fields "
            f"x {parts} split(s)) take {buffers / 2**20:.3g} MiB, more than memory_mb / 4 = "
            f"{cfg.memory_mb / 4:.3g} MiB; raise memory_mb to {4 * buffers / 2**20:.3g} or lower "
            "chunk_mb"
        )
    block = _block_samples(stages, cfg.block_mb)
    fit_index = split.names.index(cfg.fit_split) if split and cfg.fit_split in split.names else 0

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

    with StoreWriter(out, overwrite=overwrite, inputs=[Path(str(source))]) as writer:
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
                shuffle = seg_ops[-1]
                assert isinstance(shuffle, Shuffle)
                before = stages[segment[-1]]
                has_split = split is not None and ops.index(split) < segment[-1]
                # Every column the shuffle stores (fields, input index, split) and the permutation.
                per_sample = sum(s.sample_nbytes for s in before.values()) + 8 + has_split + 8
                shuffle.plan_buckets(src_len, per_sample, memory)
                progress.start(f"shuffle (op {segment[-1] + 1})", src_len)
                shuffled = shuffle.materialize(
                    _run(src, seg_ops[:-1]),
                    before,
                    writer.workdir(f"shuffle-{segment[-1]}"),
                    has_split=has_split,
                )
                src, src_len = _shuffled_reader(shuffled, block, backend, progress), len(shuffled)
        progress.start("write", src_len)
        last_ops = [ops[i] for i in segments[-1]]
        written = _write(writer, _run(src, last_ops), out_specs, split, n_in, cfg.chunk_mb)
        info = _store_info(info_in, source, cfg, ops, out_specs, split, written, backend, started)
        path = writer.commit(info)
    sizes = {s: n for s, (n, _) in written.items()}
    return {
        "output": str(path),
        "device": backend.name,
        "samples_in": n_in,
        "samples_out": sum(sizes.values()),
        "splits": sizes if split else {},
        "ops": [{"op": op.name, **op.counts()} for op in ops],
        "stats": info["stats"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _shuffled_reader(shuffled: Any, block: int, backend: Backend, progress: Progress) -> Source:
    def read() -> Iterator[Block]:
        for b in shuffled.blocks(block):
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
    split: Split | None,
    upper: int,
    chunk_mb: float,
) -> dict[str, tuple[int, dict[str, str]]]:
    """Write the blocks; return ``{split: (samples, {field: fingerprint})}`` (split ``""``)."""
    assert writer.group is not None
    names = split.names if split is not None else [""]
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
                attrs={"kind": spec.kind, **spec.attrs},
            )
            for f, spec in specs.items()
        }
    appended = dict.fromkeys(names, 0)
    for b in blocks:
        for index, name in enumerate(names):
            part = b if split is None else b.select(b.split == index)
            for f, fw in fields[name].items():
                _append(fw, to_host(part.fields[f]), appended[name] - fw.count)
            appended[name] += len(part)
            del part
        del b
    result = {}
    for name, fws in fields.items():
        prints = {f: fw.finish() for f, fw in fws.items()}
        for f, fw in fws.items():
            spec = specs[f]
            fw.array.attrs.put(
                {FIELD_ATTR: {"kind": spec.kind, **spec.attrs, "fingerprint": prints[f]}}
            )
        count = next(iter(fws.values())).count if fws else 0
        result[name] = (count, prints)
    return result


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
    info_in: dict[str, Any],
    source: str | Path,
    cfg: PipelineConfig,
    ops: list[Op],
    specs: dict[str, Spec],
    split: Split | None,
    written: dict[str, tuple[int, dict[str, str]]],
    backend: Backend,
    started: float,
) -> dict[str, Any]:
    prints = {
        f"{part}/{f}" if part else f: fp
        for part, (_, fps) in written.items()
        for f, fp in fps.items()
    }
    classes = {f: list(s.attrs["classes"]) for f, s in specs.items() if "classes" in s.attrs}
    stats = [
        {"op": op.name, "index": i, "fields": op.config.get("fields"), "stats": fitted}
        for i, op in enumerate(ops)
        if (fitted := op.stats())
    ]
    settings = cfg.to_dict()
    settings["ops"] = [{**op.to_dict(), "seed": op.seed} for op in ops]
    return {
        "num_samples": sum(n for n, _ in written.values()),
        "splits": split.names if split else [],
        "split_sizes": {s: n for s, (n, _) in written.items()} if split else {},
        "fields": {f: s.kind for f, s in specs.items()},
        "classes": classes,
        "stats": {"ops": stats},
        "sources": info_in.get("sources", []),
        "fingerprint": dataset_fingerprint(prints),
        "skipped": info_in.get("skipped", []),
        "ignored_files": info_in.get("ignored_files", []),
        "history": [
            *info_in.get("history", []),
            {
                "stage": "preprocess",
                "time": utc_now(),
                "input": {"path": str(source), "fingerprint": info_in.get("fingerprint")},
                "settings": {**settings, "device": backend.name},
                "counts": [{"op": op.name, **op.counts()} for op in ops],
                "seconds": round(time.perf_counter() - started, 3),
            },
        ],
    }
