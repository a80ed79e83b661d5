"""The ingest stage: raw sources in, one chunked Zarr v3 store out.

Sources are opened (and their headers validated) before anything is written. Their fields are
then read block by block in lockstep and appended to the store, so memory stays bounded by one
block per source plus one chunk per field, whatever the input size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gpuds.errors import SourceError
from gpuds.progress import NullProgress, Progress, check_cancelled
from gpuds.sources import ReadOptions, Source, open_source
from gpuds.storage import Location, is_url, location
from gpuds.store import (
    DEFAULT_CHUNK_MB,
    FieldWriter,
    StoreInfo,
    StoreWriter,
    chunk_samples,
    chunk_samples_for,
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
) -> dict[str, Any]:
    """Read ``sources`` into a new store at ``out``; return a JSON-safe summary.

    The summary's ``sources`` holds what the store records about each source: for a table, its
    rows, fields by kind and (CSV) the layout read with the reason for each guess.

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
    storage_options
        Object-store settings for the URLs (endpoint, region, credentials, ...).

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
        writer = stack.enter_context(
            StoreWriter(
                out,
                overwrite=overwrite,
                inputs=[p if isinstance(p, Location) else p.absolute() for p in paths],
                storage_options=storage_options,
            )
        )
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
        block = _block_samples(opened, block_mb)
        progress.start(f"ingest → {writer.name}", length)
        count = _copy(opened, fields, block, progress)
        if count == 0:
            raise SourceError(f"{paths[0]}: no samples to ingest")
        for f in fields.values():
            f.finish()
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
