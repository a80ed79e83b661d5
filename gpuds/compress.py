"""The compress stage: a store in, a sharded Zarr v3 store with standard bitstreams out.

For every field the output array is created with zarr-python (so its metadata is exactly what
zarr-python writes: ``sharding_indexed`` with the codec chain inside and a ``crc32c``-protected
index), and then gpuds writes each shard itself, whole and once, in one task per shard: the task
opens the input, reads the shard's samples, encodes all its inner chunks in one batch (a thread
pool on the CPU, one nvCOMP call on the GPU), assembles the shard (:mod:`gpuds.codecs.shard`) and
writes one object. The tasks run where the executor runs them (:mod:`gpuds.execution`: two at a
time in this process, so that one shard is read while another is encoded, or on a Dask cluster);
this process plans, creates the arrays, joins the fields' digests and commits. The bytes are the
ones zarr-python itself writes for the same settings (tested byte for byte), so any reader of the
codec chain opens the store, and they do not depend on where the tasks ran.

``verify`` (on by default) then reads every shard back with zarr-python, the reference CPU
implementation, and compares it byte for byte with the input (again one task per shard): the
proof, at write time, that the store is lossless and readable without gpuds.
"""

from __future__ import annotations

import functools
import math
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec

from gpuds.backend import resolve
from gpuds.chunks import FieldChunks, field_label
from gpuds.codecs import GPU_ONLY, ChunkCodec, CodecConfig, chunk_codec, zarr_compressors
from gpuds.codecs.auto import choose as choose_codec
from gpuds.codecs.auto import choose_shuffle
from gpuds.codecs.checksum import append_crc32c
from gpuds.codecs.shard import shard_parts
from gpuds.config import read_mapping
from gpuds.digest import DigestParts, FieldDigest, piece_samples, range_digest
from gpuds.errors import ConfigError, CorruptChunkError, StoreError
from gpuds.execution import SchedulerSpec, open_executor, parse_scheduler, unseen_here
from gpuds.progress import NullProgress, Progress
from gpuds.storage import Location, location
from gpuds.store import (
    FIELD_ATTR,
    ArrayHandle,
    StoreInfo,
    StoreWriter,
    chunk_samples_for,
    field_fingerprint,
    iter_fields,
    open_store,
    read_info,
)

__all__ = [
    "DEFAULT_SHARD_MB",
    "FieldSettings",
    "compress",
    "load_compress_config",
    "shard_samples",
]

DEFAULT_SHARD_MB = 128.0
"""Target shard size: one file, one request per shard, in the 64-256 MiB band object stores like."""


@dataclass(frozen=True)
class FieldSettings:
    """How one field is compressed; ``to_dict``/``from_dict`` round-trip.

    Examples
    --------
    >>> FieldSettings.from_dict({"codec": "lz4", "shuffle": False}).codec
    CodecConfig(name='lz4', level=None, shuffle=False)
    """

    codec: CodecConfig = field(default_factory=lambda: CodecConfig(shuffle=None))
    chunk_mb: float = 1.0
    shard_mb: float = DEFAULT_SHARD_MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec.name,
            "level": self.codec.level,
            "shuffle": self.codec.shuffle,
            "chunk_mb": self.chunk_mb,
            "shard_mb": self.shard_mb,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: FieldSettings | None = None) -> FieldSettings:
        base = base or cls()
        valid = ("codec", "level", "shuffle", "chunk_mb", "shard_mb")
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        codec = CodecConfig(
            str(data.get("codec", base.codec.name)),
            data.get("level", base.codec.level if "codec" not in data else None),
            data.get("shuffle", base.codec.shuffle),
        )
        sizes = {}
        for key in ("chunk_mb", "shard_mb"):
            value = data.get(key, getattr(base, key))
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"'{key}' must be a positive number, got {value!r}")
            sizes[key] = float(value)
        return cls(codec, **sizes)


def load_compress_config(
    path: str | Path, base: FieldSettings | None = None
) -> tuple[FieldSettings, dict[str, FieldSettings]]:
    """Read a compress config: defaults for every field plus a ``fields`` table of overrides.

    ::

        codec: zstd          # every key optional; these override the command line's
        level: 3
        shuffle: true
        chunk_mb: 1
        shard_mb: 128
        fields:
          images: {codec: lz4}
          labels: {codec: zstd, level: 9, shuffle: false}
    """
    data = read_mapping(path)
    where = str(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping (codec, level, ..., fields)")
    overrides = data.get("fields", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: 'fields' must map field names to settings")
    try:
        defaults = FieldSettings.from_dict({k: v for k, v in data.items() if k != "fields"}, base)
        per_field = {
            str(name): FieldSettings.from_dict(dict(value), defaults)
            for name, value in overrides.items()
        }
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: invalid field settings ({e})") from e
    return defaults, per_field


def shard_samples(chunk: int, sample_nbytes: int, shard_mb: float, length: int) -> int:
    """Samples per shard: a power-of-two number of whole chunks within ``shard_mb``, but no more
    chunks than the field has."""
    per_chunk = chunk * max(1, sample_nbytes)
    k = max(1, int(shard_mb * 2**20) // per_chunk)
    k = 1 << (k.bit_length() - 1)
    chunks_needed = max(1, math.ceil(length / chunk))
    k = min(k, 1 << (chunks_needed - 1).bit_length())
    return chunk * k


@dataclass
class _Plan:
    split: str
    name: str
    source: zarr.Array
    settings: FieldSettings
    chunk: int
    shard: int
    input_path: str
    input_version: int

    @property
    def label(self) -> str:
        return f"{self.split}/{self.name}" if self.split else self.name

    @property
    def path(self) -> str:
        return self.label

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.source.shape[1:], dtype=np.int64)) * self.source.dtype.itemsize


def compress(
    source: str | Path,
    out: str | Path,
    *,
    settings: FieldSettings | None = None,
    per_field: Mapping[str, FieldSettings] | None = None,
    fields: Sequence[str] | None = None,
    device: str = "auto",
    verify: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
    scheduler: str | SchedulerSpec | None = None,
) -> dict[str, Any]:
    """Compress the store ``source`` into the sharded store ``out``.

    Parameters
    ----------
    source, out
        Local paths or object-store URLs (``s3://bucket/data.zarr``; docs/storage.md).
    settings
        Codec, level, shuffle, chunk and shard size for every field (default: zstd level 3 with
        byte shuffle, 1 MiB chunks, 128 MiB shards).
    per_field
        Overrides by field name (applies in every split).
    fields
        Keep only these fields (default: all).
    device
        ``auto``, ``cpu`` or ``cuda``: where chunks are encoded.
    verify
        Read everything back with zarr-python and compare with the input before committing.
    storage_options
        Object-store settings for ``source`` and ``out`` (endpoint, region, credentials, ...);
        they go to the cluster's workers too.
    scheduler
        Where the shards are written (a ``--scheduler`` value, :mod:`gpuds.execution`):
        ``threads`` (this process; the default unless ``DASK_SCHEDULER_ADDRESS`` is set),
        ``processes:N``, a Dask scheduler address or scheduler file, ``cuda``. One task per
        shard; the output is byte for byte the same whichever is used (docs/cluster.md).

    Returns
    -------
    dict
        The summary: output, device, per-field sizes and ratios, the decisions taken, where the
        work ran (``scheduler``) and the time taken.

    Examples
    --------
    >>> gpuds.compress("prep.zarr", "data.zarr", settings=FieldSettings(CodecConfig("lz4")))
    ... # doctest: +SKIP
    >>> gpuds.compress("prep.zarr", "data.zarr", scheduler="processes:4")  # doctest: +SKIP
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    spec = scheduler if isinstance(scheduler, SchedulerSpec) else parse_scheduler(scheduler)
    settings = settings or FieldSettings()
    per_field = dict(per_field or {})
    group = open_store(source, storage_options=storage_options)
    info_in = read_info(group, parsed=True)
    all_fields = list(iter_fields(group))
    names = {name for _, name, _ in all_fields}
    for name in [*(fields or []), *per_field]:
        if name not in names:
            raise ConfigError(f"no field {name!r} in {source}; fields: {', '.join(sorted(names))}")
    kept = [(s, n, a) for s, n, a in all_fields if fields is None or n in fields]
    decided, trials, decisions = _decide(str(source), kept, settings, per_field)
    plans = []
    version = info_in.format_version
    for split, name, array in kept:
        chosen = decided[name]
        nbytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
        chunk = chunk_samples_for(nbytes, chosen.chunk_mb, array.shape[0])
        shard = shard_samples(chunk, nbytes, chosen.shard_mb, array.shape[0])
        plans.append(_Plan(split, name, array, chosen, chunk, shard, str(source), version))
    if not plans:
        raise ConfigError(f"{source}: no fields to compress")
    gpu_only = sorted({p.settings.codec.name for p in plans if p.settings.codec.name in GPU_ONLY})
    backend = resolve(device)
    if backend.notice and device == "auto":
        progress.note(backend.notice)
    if gpu_only and not backend.is_gpu:
        raise ConfigError(
            f"codec {', '.join(gpu_only)} is GPU-only (nvCOMP) and needs a GPU to write "
            f"({backend.reason or 'device ' + backend.name}); use --codec zstd, lz4 or gzip, "
            "which any machine can read"
        )
    # The output is checked (exists, overlaps the input) before a cluster is started.
    writer = StoreWriter(out, overwrite=overwrite, inputs=[source], storage_options=storage_options)
    # The writer is left last: on failure the executor stops first (a local cluster's workers
    # with it), so that no task still writes into what the writer then removes.
    with writer, open_executor(spec, progress=progress) as executor:
        writer.check_reachable(executor)
        assert writer.group is not None
        for split in sorted({p.split for p in plans if p.split}):
            writer.group.create_group(split)
        inputs = location(source, storage_options)
        identity = _identity(group)
        run = secrets.token_hex(8)
        arrays = [_create_array(writer, plan) for plan in plans]
        jobs = [
            _job(plan, array, writer.handle(array), inputs, identity, run, backend.name)
            for plan, array in zip(plans, arrays, strict=True)
        ]
        runs = [_runs(plan, array) for plan, array in zip(plans, arrays, strict=True)]
        tasks = [
            (job, first, keys)
            for job, field_runs in zip(jobs, runs, strict=True)
            for first, keys in field_runs
        ]
        weights = [len(keys) for _, _, keys in tasks]
        progress.start(f"compress on {backend.name}", sum(weights))
        written = iter(
            executor.map(
                _write_shards,
                tasks,
                name="compress",
                weights=weights,
                progress=progress,
                in_flight=2,  # in this process: one shard is read while another is encoded
            )
        )
        results = {
            plan.label: _finish_field(writer, plan, array, job, [next(written) for _ in field_runs])
            for plan, array, job, field_runs in zip(plans, arrays, jobs, runs, strict=True)
        }
        if verify:
            progress.start("verify with zarr-python", sum(weights))
            executor.map(
                _verify_shards,
                [(job, first, len(keys)) for job, first, keys in tasks],
                name="verify",
                weights=weights,
                progress=progress,
                in_flight=2,
            )
        info = _store_info(
            info_in, source, plans, results, decisions, backend.name, verify, started
        )
        path = writer.commit(info)
        where = executor.description
    logical = sum(r["logical_bytes"] for r in results.values())
    stored = sum(r["stored_bytes"] for r in results.values())
    return {
        "output": str(path),
        "device": backend.name,
        "scheduler": where,
        "fields": results,
        "logical_bytes": logical,
        "stored_bytes": stored,
        "ratio": round(logical / stored, 4) if stored else None,
        "verified": verify,
        "auto": trials,
        "decisions": decisions,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _decide(
    source: str,
    fields: list[tuple[str, str, zarr.Array]],
    settings: FieldSettings,
    per_field: Mapping[str, FieldSettings],
) -> tuple[dict[str, FieldSettings], dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Resolve ``--codec auto`` and the default byte shuffle, once per field name (the same in
    every split), from a sample of the field in its largest split: the settings by field, the
    auto trial tables, and one sentence per decision saying what was decided and why."""
    largest: dict[str, tuple[str, zarr.Array]] = {}
    for split, name, array in fields:
        if name not in largest or array.shape[0] > largest[name][1].shape[0]:
            largest[name] = (split, array)
    decided: dict[str, FieldSettings] = {}
    trials: dict[str, list[dict[str, Any]]] = {}
    decisions: dict[str, str] = {}
    for name, (split, array) in sorted(largest.items()):
        chosen = per_field.get(name, settings)
        itemsize = array.dtype.itemsize
        nbytes = int(np.prod(array.shape[1:], dtype=np.int64)) * itemsize
        chunk = chunk_samples_for(nbytes, chosen.chunk_mb, array.shape[0])
        sample = FieldChunks(array, field_label(source, split, name))
        codec = chosen.codec
        if codec.name == "auto":
            codec, table = choose_codec(sample, chunk)
            trials[name] = table
            picked = next((r for r in table if r["picked"]), None)
            decisions[name] = (
                f"--codec auto picked {_describe(codec)} ({picked['ratio']:.3f}x on the sample)"
                if picked
                else "--codec auto stores it raw: no candidate compresses it by 5% or more"
            )
        elif codec.shuffle is None:
            if itemsize == 1 or codec.name == "none":
                codec = CodecConfig(codec.name, codec.level, False)
            elif codec.name in GPU_ONLY:  # no CPU implementation to try them with
                codec = CodecConfig(codec.name, codec.level, True)
                decisions[name] = "byte shuffle on (nvCOMP-only codecs are not trialled)"
            else:
                trial = choose_shuffle(sample, chunk, codec)
                codec = CodecConfig(codec.name, codec.level, trial["shuffle"])
                decisions[name] = (
                    f"byte shuffle {'on' if trial['shuffle'] else 'off'}: "
                    f"{trial['ratio_shuffle']:.3f}x with it, {trial['ratio_plain']:.3f}x "
                    f"without, on {trial['sample_chunks']} sampled chunks"
                )
        decided[name] = FieldSettings(codec, chosen.chunk_mb, chosen.shard_mb)
    return decided, trials, decisions


def _describe(codec: CodecConfig) -> str:
    level = f" {codec.level}" if codec.level is not None else ""
    return f"{codec.name}{level}{' + byte shuffle' if codec.shuffle else ''}"


def _create_array(writer: StoreWriter, plan: _Plan) -> zarr.Array:
    assert writer.group is not None
    src = plan.source
    dtype = np.dtype(src.dtype).newbyteorder("<") if src.dtype.itemsize > 1 else np.dtype(src.dtype)
    sample = tuple(src.shape[1:])
    attrs: Any = src.attrs.get(FIELD_ATTR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numcodecs.* codecs are flagged as outside the spec
        return writer.group.create_array(
            plan.path,
            shape=src.shape,
            chunks=(plan.chunk, *sample),
            shards=(plan.shard, *sample),
            dtype=dtype,
            fill_value=False if dtype.kind == "b" else 0,
            serializer=BytesCodec(endian="little") if dtype.itemsize > 1 else "auto",
            compressors=zarr_compressors(plan.settings.codec, dtype.itemsize, dtype),
            attributes={FIELD_ATTR: dict(attrs) if isinstance(attrs, Mapping) else {}},
        )


@dataclass(frozen=True)
class _Job:
    """What the tasks of one field need, as plain picklable data: they run in this process or on
    a Dask worker, and open the input and the output themselves."""

    source: Location
    """The input store (with its storage options)."""
    identity: tuple[str, str]
    """The input's recorded creation time and fingerprint (:func:`_input_group`)."""
    run: str
    """A token of this compress call: tasks of one call share an opened input."""
    path: str
    """The field's path, the same in the input and the output (``x`` or ``train/x``)."""
    where: str
    """How read errors name the input field (:func:`~gpuds.chunks.field_label`)."""
    dtype: str
    """The output's dtype (little-endian)."""
    chunk: int
    shard: int
    codec: CodecConfig
    device: str
    hashed: bool
    """Whether the tasks hash the values for the field's fingerprint."""
    handle: ArrayHandle


@dataclass(frozen=True)
class _Written:
    """What a task that wrote a run of shards returns."""

    stored: int
    digest: DigestParts | None
    seconds: float


def _identity(group: zarr.Group) -> tuple[str, str]:
    info = read_info(group)
    return str(info.get("created", "")), str(info.get("fingerprint", ""))


def _job(
    plan: _Plan,
    array: zarr.Array,
    handle: ArrayHandle,
    source: Location,
    identity: tuple[str, str],
    run: str,
    device: str,
) -> _Job:
    stored: Any = plan.source.attrs.get(FIELD_ATTR)
    attrs = dict(stored) if isinstance(stored, Mapping) else {}
    # Compression does not change the values, so the input's recorded fingerprint stays true
    # (verify proves it byte for byte); a store without one, or from a format before 3 (whose
    # fingerprints hash the data otherwise), is hashed here.
    keep = bool(attrs.get("fingerprint")) and plan.input_version >= 3
    return _Job(
        source=source,
        identity=identity,
        run=run,
        path=plan.path,
        where=field_label(plan.input_path, plan.split, plan.name),
        dtype=np.dtype(array.dtype).str,
        chunk=plan.chunk,
        shard=plan.shard,
        codec=plan.settings.codec,
        device=device,
        hashed=not keep,
        handle=handle,
    )


def _runs(plan: _Plan, array: zarr.Array) -> list[tuple[int, tuple[str, ...]]]:
    """The field's tasks: ``(first shard, keys of the shards)`` each.

    One shard a task, but shards smaller than a digest piece (``--shard-mb`` below 1 MiB) go
    by a piece's worth: shards and pieces are both powers of two samples, so every task then
    hashes whole pieces and returns their 16-byte digests, not raw bytes for this process to
    hold until the field is done.
    """
    count = math.ceil(plan.source.shape[0] / plan.shard)
    per_task = max(1, piece_samples(plan.sample_nbytes) // plan.shard)
    keys = [array.metadata.encode_chunk_key((s,) + (0,) * (array.ndim - 1)) for s in range(count)]
    return [(s, tuple(keys[s : s + per_task])) for s in range(0, count, per_task)]


def _finish_field(
    writer: StoreWriter, plan: _Plan, array: zarr.Array, job: _Job, written: list[_Written]
) -> dict[str, Any]:
    """Finish the field from its tasks' results: its fingerprint and its summary."""
    if job.hashed:
        digest = FieldDigest(int(array.shape[0]), plan.sample_nbytes)
        for part in written:
            assert part.digest is not None
            digest.add(part.digest)
        fingerprint = field_fingerprint(digest.digest(), array.dtype, array.shape)
    else:
        kept: Any = array.attrs.get(FIELD_ATTR)
        fingerprint = str(kept["fingerprint"])
    writer.finish_field(array, fingerprint)
    logical = int(array.nbytes)
    stored = sum(w.stored for w in written)
    return {
        "codec": plan.settings.to_dict(),
        "chunks": [plan.chunk, *array.shape[1:]],
        "shards": [plan.shard, *array.shape[1:]],
        "codecs": [c["name"] for c in _chain(array)],
        "logical_bytes": logical,
        "stored_bytes": stored,
        "ratio": round(logical / stored, 4) if stored else None,
        # Time spent in its tasks, added up: they may have run side by side.
        "seconds": round(sum(w.seconds for w in written), 4),
        "fingerprint": fingerprint,
    }


@functools.lru_cache(maxsize=8)
def _input_group(source: Location, identity: tuple[str, str], run: str) -> zarr.Group:
    """The input store, opened and checked once per process and run (``run``: a token of the
    compress call): a cluster's worker runs many tasks, and the next run opens it anew.
    ``identity`` must match what the client saw."""
    if source.is_local and not source.path.exists():
        raise StoreError(unseen_here(source.path))
    group = open_store(source)
    if _identity(group) != identity:
        raise StoreError(
            f"{source}: the store found there is not the one compress started with (replaced "
            "meanwhile, or the workers see another copy of it); rerun on an unchanged input"
        )
    return group


def _input_chunks(job: _Job) -> FieldChunks:
    array = _input_group(job.source, job.identity, job.run)[job.path]
    assert isinstance(array, zarr.Array)  # the client found an array there, in the same store
    return FieldChunks(array, job.where)


def _raw_chunks(values: np.ndarray, chunk: int) -> list[np.ndarray]:
    """The shard's stored inner chunks as raw bytes; the last is zero-padded."""
    chunks = []
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        if len(part) < chunk:
            padded = np.zeros((chunk, *values.shape[1:]), dtype=values.dtype)
            padded[: len(part)] = part
            part = padded
        chunks.append(part.reshape(-1).view(np.uint8))
    return chunks


@functools.lru_cache(maxsize=8)
def _codec(config: CodecConfig, dtype: str, device: str, run: str) -> ChunkCodec:
    """One encoder per codec, process and run (``run``: a token of the compress call), shared
    by the run's tasks: it holds a thread pool (on the CPU) or device resources (nvCOMP), not
    worth making anew for every shard."""
    found = np.dtype(dtype)
    return chunk_codec(config, found.itemsize, device, found)


def _write_shards(job: _Job, first: int, keys: tuple[str, ...]) -> _Written:
    """A task: read, encode and write the shards ``first, first + 1, ...`` (stored as ``keys``)
    of a field; hash their values when the fingerprint is computed here."""
    started = time.perf_counter()
    source = _input_chunks(job)
    try:
        start = first * job.shard
        stop = min(start + len(keys) * job.shard, source.length)
        values = np.ascontiguousarray(source.read_range(start, stop), dtype=job.dtype)
    finally:
        source.close()
    digest = range_digest(values, start, source.length) if job.hashed else None
    codec = _codec(job.codec, job.dtype, job.device, job.run)
    per_shard = job.shard // job.chunk
    stored = 0
    for i, key in enumerate(keys):
        rows = values[i * job.shard : (i + 1) * job.shard]
        payloads: list[bytes | None] = [
            append_crc32c(p) for p in codec.encode(_raw_chunks(rows, job.chunk))
        ]
        payloads += [None] * (per_shard - len(payloads))
        stored += job.handle.write_object(key, shard_parts(payloads))
    return _Written(stored, digest, time.perf_counter() - started)


def _written_array(handle: ArrayHandle) -> zarr.Array:
    """The field as written, for plain zarr-python to read: a local partial store is opened
    from its folder (its metadata as written); an object store's metadata is held back until the
    commit, so there the written objects are read with the metadata the handle carries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numcodecs.* codecs are flagged as outside the spec
        if handle.root.is_local:
            return zarr.open_array(str(handle.root.path), path=handle.path, mode="r")
        return handle.open()


def _verify_shards(job: _Job, first: int, count: int) -> None:
    """A task: read shards ``first .. first + count - 1`` back with plain zarr-python and
    compare them byte for byte with the input."""
    written = _written_array(job.handle)
    source = _input_chunks(job)
    label = job.path
    try:
        for s in range(first, first + count):
            start, stop = s * job.shard, min((s + 1) * job.shard, source.length)
            expected = source.read_range(start, stop)
            try:
                actual = np.ascontiguousarray(written[start:stop])
            except Exception as e:  # any decode failure means the shard we wrote is unreadable
                raise CorruptChunkError(
                    f"verify: field {label} shard {s} does not decode with zarr-python ({e})"
                ) from e
            if (
                actual.shape != expected.shape
                or actual.view(np.uint8).tobytes()
                != expected.astype(actual.dtype, copy=False).view(np.uint8).tobytes()
            ):
                raise CorruptChunkError(
                    f"verify: field {label} shard {s} decodes to different values than the "
                    "input; nothing was written"
                )
    finally:
        source.close()


def _chain(array: zarr.Array) -> list[dict[str, Any]]:
    from gpuds.inspection import codec_chain

    return codec_chain(array)


def _store_info(
    info_in: StoreInfo,
    source: str | Path,
    plans: list[_Plan],
    results: dict[str, dict[str, Any]],
    decisions: dict[str, str],
    device: str,
    verified: bool,
    started: float,
) -> StoreInfo:
    """The output's metadata: the input's, with only the fields kept and one more stage."""
    kept = {p.name for p in plans}
    settings = {
        "device": device,
        "verify": verified,
        "fields": {p.label: results[p.label]["codec"] for p in plans},
        "decisions": decisions,
    }
    return info_in.next_stage(
        "compress",
        source,
        settings,
        started,
        fields={k: v for k, v in info_in.fields.items() if k in kept},
    )
