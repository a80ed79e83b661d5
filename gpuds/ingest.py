"""The ingest stage: raw sources in, one chunked Zarr v3 store out.

Sources are opened (and their headers validated) before anything is written. A source that reads
any range of samples on its own (NumPy files, image folders, HDF5 files, Zarr stores) is then cut
into blocks of a power of two samples, at least a chunk of its heaviest field, one task per
block: it reads the block, writes its fields' whole chunks and hashes them, wherever the executor
runs tasks (docs/cluster.md); a field whose chunk spans several blocks (labels beside images)
comes back to the client, which appends it. The
other sources (tables, compressed ``.npz`` members, ``--skip-bad``) are read front to back on the
client, block by block in lockstep, and appended to the store. Either way memory stays bounded by
one block per source plus one chunk per field whatever the input size, and the store holds the
same bytes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gpuds.digest import DigestParts, FieldDigest, range_digest
from gpuds.errors import SourceError, StoreError
from gpuds.execution import Executor, SchedulerSpec, open_executor, unseen_here
from gpuds.progress import NullProgress, Progress, check_cancelled
from gpuds.sources import ReadOptions, Source, open_source
from gpuds.storage import Location, is_url, location
from gpuds.store import (
    DEFAULT_CHUNK_MB,
    ArrayHandle,
    FieldWriter,
    StoreInfo,
    StoreWriter,
    chunk_samples,
    chunk_samples_for,
    field_fingerprint,
    stage_entry,
)

__all__ = ["BLOCK_MB", "ingest"]

BLOCK_MB = 64.0
"""Target size of one block read from the sources (all fields together)."""


def _block_samples(sources: Sequence[Source], block_mb: float) -> int:
    per_sample = sum(spec.sample_nbytes for s in sources for spec in s.fields)
    return chunk_samples(max(1, per_sample), block_mb)


def _file_facts(path: Path | Location) -> dict[str, Any]:
    found = path.stat() if isinstance(path, Location) else location(path).stat()
    return {"bytes": found[0], "mtime": int(found[1])} if found is not None else {}


def ingest(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str | None = None,
    options: ReadOptions | Mapping[str, Any] | None = None,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    overwrite: bool = False,
    progress: Progress | None = None,
    block_mb: float = BLOCK_MB,
    storage_options: Mapping[str, str] | None = None,
    scheduler: str | SchedulerSpec | None = None,
) -> dict[str, Any]:
    """Read ``sources`` into a new store at ``out``; return a JSON-safe summary.

    The summary's ``sources`` holds what the store records about each source: for a table, its
    rows, fields by kind and (CSV) the layout read with the reason for each guess; ``scheduler``
    says where the work ran (the store does not record it: it is the same whatever ran it).

    Parameters
    ----------
    sources
        Files or folders; their fields are combined, so they must hold the same number of samples.
        Local paths or object-store URLs (``s3://bucket/photos/``: a prefix is a folder).
    out
        The store to create (a local path or an object-store URL, docs/storage.md).
    fmt
        Reader name for every source (``npy``, ``npz``, ``images``, ``csv``, ``parquet``, ``hdf5``,
        ``zarr``); detected per source when None.
    options
        Reader settings (field selection, CSV header, delimiter and skipped rows, label column,
        image mode and resize, ...): a :class:`~gpuds.sources.ReadOptions` or its mapping, as
        a store's history records it (``ReadOptions.from_dict``).
    chunk_mb
        Target chunk size in MiB (see :func:`gpuds.store.chunk_samples`).
    overwrite
        Replace an existing store at ``out``.
    progress
        Receives the progress of the work and the notes (:class:`gpuds.progress.Progress`).
    block_mb
        Target size in MiB of one block of samples read at once (all fields together): a task's
        share of the work, and what memory holds per source.
    storage_options
        Object-store settings for the URLs (endpoint, region, credentials, ...).
    scheduler
        Where the blocks are read and written: ``threads`` (this process, the default),
        ``processes:N``, a Dask scheduler address or scheduler file, or ``cuda``
        (:func:`gpuds.execution.parse_scheduler`, docs/cluster.md). Sources that are read in one
        stream (tables, ``--skip-bad``) are read here, on the client, whatever it is.

    Examples
    --------
    >>> import gpuds
    >>> gpuds.ingest(["images/", "meta.csv"], "raw.zarr")           # doctest: +SKIP
    {'output': '.../raw.zarr', 'samples': 1000, ...}
    """
    if options is None:
        options = ReadOptions()
    elif not isinstance(options, ReadOptions):
        options = ReadOptions.from_dict(options)
    progress = progress or NullProgress()
    paths = [_source_path(s, storage_options) for s in sources]
    if not paths:
        raise SourceError("no sources given; pass at least one file or folder")
    started = time.perf_counter()
    if len(paths) > 1:
        # One --fields list serves every source: each keeps the names it has.
        options = replace(options, strict_fields=False)
    with ExitStack() as stack:
        opened: list[Source] = [stack.enter_context(open_source(p, options, fmt)) for p in paths]
        _check_selection(opened, options)
        if options.skip_bad and len(opened) > 1:
            raise SourceError(
                "--skip-bad cannot be combined with several sources: a skipped sample would "
                "misalign the others; ingest the folder alone or fix the bad files"
            )
        _check_compatible(opened)
        length = opened[0].length
        writer = StoreWriter(
            out,
            overwrite=overwrite,
            inputs=[p if isinstance(p, Location) else p.absolute() for p in paths],
            storage_options=storage_options,
        )
        stack.enter_context(writer)
        # Opened after the writer, so closed before it discards a failed run's partial store: a
        # local cluster's workers are then stopped, even those still running a cancelled task.
        executor = stack.enter_context(open_executor(scheduler, progress=progress))
        writer.check_reachable(executor)
        fields: dict[str, FieldWriter] = {}
        kinds: dict[str, str] = {}
        for src in opened:
            for spec in src.fields:
                kinds[spec.name] = spec.kind
                fields[spec.name] = writer.create_field(
                    spec.name,
                    spec.dtype,
                    spec.sample_shape,
                    length=length,
                    chunk=chunk_samples_for(spec.sample_nbytes, chunk_mb, length),
                    kind=spec.kind,
                    attrs=spec.attrs,
                )
        count = _write(opened, fields, writer, executor, length, block_mb, progress)
        if count == 0:
            raise SourceError(f"{paths[0]}: no samples to ingest")
        settings = {
            "format": fmt,
            "options": options.to_dict(),
            "chunk_mb": chunk_mb,
            "codec": writer.CODEC.to_dict(),
        }
        info = StoreInfo(
            num_samples=count,
            fields=kinds,
            history=[stage_entry("ingest", settings, started)],
            **_provenance(opened),
        )
        path = writer.commit(info)
        notes = [line for src in opened for line in src.notes()]
    for line in notes:
        progress.note(line)
    return {
        "output": str(path),
        "samples": count,
        "fields": {
            name: {
                "dtype": str(f.array.dtype),
                "shape": list(f.array.shape),
                "chunks": list(f.array.chunks),
                "kind": kinds[name],
            }
            for name, f in fields.items()
        },
        "sources": info.sources,
        "skipped": info.skipped,
        "ignored_files": info.ignored_files,
        "notes": notes,
        "scheduler": executor.description,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _source_path(source: str | Path, storage_options: Mapping[str, str] | None) -> Path | Location:
    """A local source as its path (as given, for the messages and records), a URL as its
    location."""
    if is_url(source):
        loc = location(source, storage_options)
        return loc.path if loc.is_local else loc
    return Path(source).expanduser()


def _check_selection(opened: list[Source], options: ReadOptions) -> None:
    if options.fields is None:
        return
    found = {spec.name for src in opened for spec in src.fields}
    # A --label column is selected by name but stored as the field "labels".
    unknown = [name for name in options.fields if name not in found and name != options.label]
    if unknown:
        available = ", ".join(spec.name for src in opened for spec in src.fields)
        raise SourceError(
            f"--fields names {', '.join(map(repr, unknown))}, which no source provides "
            f"(selected so far: {available or 'nothing'})"
        )
    for src in opened:
        if not src.fields:
            raise SourceError(
                f"{src.path} provides none of the --fields; leave it out of the sources or add "
                "one of its fields"
            )


def _check_compatible(opened: Sequence[Source]) -> None:
    seen: dict[str, Source] = {}
    for src in opened:
        for spec in src.fields:
            if spec.name in seen:
                raise SourceError(
                    f"field {spec.name!r} comes from both {seen[spec.name].path} and {src.path}; "
                    "select distinct fields with --fields or rename one source"
                )
            seen[spec.name] = src
    first = opened[0]
    for src in opened[1:]:
        if src.length != first.length:
            raise SourceError(
                f"sources hold different numbers of samples: {first.path} has {first.length}, "
                f"{src.path} has {src.length}; combined sources must align sample by sample"
            )


def _write(
    opened: Sequence[Source],
    fields: dict[str, FieldWriter],
    writer: StoreWriter,
    executor: Executor,
    length: int,
    block_mb: float,
    progress: Progress,
) -> int:
    """Write every field, finished; return the number of samples written."""
    split = [src for src in opened if src.stream_only() is None]
    streamed = [src for src in opened if src.stream_only() is not None]
    if executor.distributed:
        for src in streamed:
            progress.note(f"{src.path} is read on the client: {src.stream_only()}")
    progress.start(f"ingest → {writer.name}", length)
    if split:
        _write_blocks(split, fields, writer, executor, length, block_mb, progress)
    if not streamed:
        return length
    if split:
        names = ", ".join(str(src.path) for src in streamed)
        progress.start(f"ingest → {writer.name}: {names} on the client", length)
    mine = {spec.name: fields[spec.name] for src in streamed for spec in src.fields}
    count = _copy(streamed, mine, _block_samples(streamed, block_mb), progress)
    if split and count != length:
        raise SourceError(
            f"{streamed[0].path} gave {count} samples where it declared {length}; the sources "
            "must align sample by sample (was it changed while it was being read?)"
        )
    for field in mine.values():
        field.finish()
    return count


def _write_blocks(
    sources: Sequence[Source],
    fields: dict[str, FieldWriter],
    writer: StoreWriter,
    executor: Executor,
    length: int,
    block_mb: float,
    progress: Progress,
) -> None:
    """Write the fields of ``sources`` (which read any range of samples) by blocks, one task
    each, and finish them."""
    names = [spec.name for src in sources for spec in src.fields]
    # At least a chunk of the field of the largest samples, which the workers must write (a
    # --chunk-mb larger than the block would otherwise send it all back here).
    heaviest = max(names, key=lambda name: _sample_nbytes(fields[name].array), default=None)
    block = max(_block_samples(sources, block_mb), fields[heaviest].chunk if heaviest else 1)
    # Chunks and blocks hold powers of two samples, so a block is a multiple of every chunk not
    # longer than it: the tasks write those chunks, no two tasks the same one. A field whose
    # chunk spans blocks (labels beside images) holds less than a chunk a block: the tasks hand
    # its samples back and this process appends them, in order.
    handles = {n: writer.handle(fields[n].array) for n in names if fields[n].chunk <= block}
    bounds = [(start, min(start + block, length)) for start in range(0, length, block)]
    tasks = [
        ([_part(src, start, stop, executor) for src in sources], handles, start, stop, length)
        for start, stop in bounds
    ]
    digests = {name: FieldDigest(length, _sample_nbytes(fields[name].array)) for name in handles}

    def merge(_: int, done: _Written) -> None:
        # In sample order, as the sources' facts and the appended samples must come.
        for src, facts in zip(sources, done.facts, strict=True):
            src.learn(facts)
        for name, parts in done.digests.items():
            digests[name].add(parts)
        for name, values in done.values.items():
            fields[name].append(values)

    executor.map(
        _write_block,
        tasks,
        name="ingest",
        weights=[stop - start for start, stop in bounds],
        progress=progress,
        in_flight=1,  # each task holds a block: one at a time in this process, as a stream does
        consume=merge,
    )
    for name in names:
        if name not in handles:
            fields[name].finish()
            continue
        array = fields[name].array
        digest = digests[name].digest()
        writer.finish_field(array, field_fingerprint(digest, array.dtype, array.shape))


def _sample_nbytes(array: Any) -> int:
    return int(array.dtype.itemsize * math.prod(array.shape[1:]))


def _part(src: Source, start: int, stop: int, executor: Executor) -> Source:
    part = src.part(start, stop)
    if executor.distributed and isinstance(part.path, Path):
        # Workers need not share this process's working folder; messages then name the file by
        # the absolute path, which is what a worker on another machine had to find.
        part.path = part.path.absolute()
    return part


@dataclass
class _Written:
    """What a task that wrote one block hands back."""

    digests: dict[str, DigestParts]
    """The digest parts of the fields it wrote."""
    values: dict[str, np.ndarray]
    """The samples of the fields it did not write (their chunks span blocks)."""
    facts: list[Any]
    """Each source's :attr:`~gpuds.sources.Samples.facts`, in the order of the sources."""


def _write_block(
    parts: Sequence[Source],
    handles: Mapping[str, ArrayHandle],
    start: int,
    stop: int,
    length: int,
) -> _Written:
    """The task of one block: read samples ``[start, stop)`` of every source, write those of the
    fields in ``handles`` to the store (whole chunks) and hash them."""
    values: dict[str, np.ndarray] = {}
    facts = []
    for part in parts:
        if isinstance(part.path, Path) and not part.path.exists():
            raise SourceError(unseen_here(part.path))
        with part:
            samples = part.read(start, stop)
        for name, data in samples.values.items():
            if len(data) != stop - start:
                raise SourceError(
                    f"{part.path}: read {len(data)} samples of {name!r} where {stop - start} "
                    f"were asked ({start}:{stop}); was it changed while it was being read?"
                )
        values.update(samples.values)
        facts.append(samples.facts)
    digests = {}
    for name, handle in handles.items():
        check_cancelled()
        array = handle.open()
        data = np.ascontiguousarray(values.pop(name), dtype=array.dtype)
        if data.shape[1:] != array.shape[1:]:
            raise StoreError(
                f"field {name!r}: expected samples of shape {array.shape[1:]}, got {data.shape[1:]}"
            )
        array[start:stop] = data
        digests[name] = range_digest(data, start, length)
    return _Written(digests, values, facts)


def _copy(
    opened: Sequence[Source], fields: dict[str, FieldWriter], block: int, progress: Progress
) -> int:
    iterators = [src.blocks(block) for src in opened]
    count = 0
    while True:
        check_cancelled()
        parts = [next(it, None) for it in iterators]
        if all(p is None for p in parts):
            return count
        if any(p is None for p in parts):
            raise SourceError("a source ended before the others; they must align sample by sample")
        lengths = {len(a) for p in parts if p is not None for a in p.values()}
        if len(lengths) != 1:
            raise SourceError(f"sources yielded blocks of different lengths {sorted(lengths)}")
        for part in parts:
            assert part is not None
            for name, values in part.items():
                fields[name].append(np.asarray(values))
        n = lengths.pop()
        count += n
        progress.advance(n)


def _provenance(opened: Sequence[Source]) -> dict[str, Any]:
    """What the sources say about themselves, as :class:`StoreInfo` keys: where each came from
    and what was decided reading it, class names, skipped samples and ignored files."""
    sources: list[dict[str, Any]] = []
    classes: dict[str, list[str]] = {}
    skipped: list[Any] = []
    ignored: list[Any] = []
    for src in opened:
        meta = src.metadata()
        skipped += [{"source": str(src.path), **s} for s in meta.get("skipped", [])]
        ignored += [os.path.join(str(src.path), f) for f in meta.get("ignored_files", [])]
        for spec in src.fields:
            names = spec.attrs.get("classes") or (
                meta.get("classes") if spec.kind == "label" else None
            )
            if names is not None:
                classes[spec.name] = list(names)
        sources.append({**src.describe(), **_file_facts(src.path)})
    return {"classes": classes, "sources": sources, "skipped": skipped, "ignored_files": ignored}
